"""The CRM search endpoint's query language: validation, filters, sorting and its limits.

Limits follow HubSpot's published ones: at most 5 filter groups, 10 filters per group and
25 in all (raised from 3/3/9 in August 2024), one sort, 200 results per page, and no paging
past the 10,000th result of a query.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from connectors.hubspot.emulator_data import CrmObject, ObjectSchema, parse_ms
from connectors.hubspot.emulator_errors import ApiError, validation_error

MAX_FILTER_GROUPS = 5
MAX_FILTERS_PER_GROUP = 10
MAX_FILTERS = 25
MAX_SEARCH_LIMIT = 200
RESULT_CAP = 10_000
OPERATORS = frozenset(
    {"EQ", "NEQ", "LT", "LTE", "GT", "GTE", "BETWEEN", "IN", "NOT_IN", "HAS_PROPERTY"}
    | {"NOT_HAS_PROPERTY"}
)


Comparable = int | str
"""A value as search compares it (`CrmObject.comparable`): instants and numbers as ints."""


@dataclass(frozen=True)
class Filter:
    """One validated filter, its values already in the form they are compared in."""

    property_name: str
    operator: str
    value: Comparable | None
    high_value: Comparable | None
    values: frozenset[Comparable]


@dataclass(frozen=True)
class SearchQuery:
    """A validated search request."""

    groups: tuple[tuple[Filter, ...], ...]
    sort_property: str | None
    descending: bool
    properties: tuple[str, ...]
    limit: int
    after: int


def parse_query(schema: ObjectSchema, body: Any) -> SearchQuery:
    """Validate a search body as HubSpot does, raising its 400 answers."""
    if not isinstance(body, dict):
        raise validation_error("Invalid input JSON: expected an object")
    limit = _int_field(body, "limit", 10)
    if limit > MAX_SEARCH_LIMIT or limit < 0:
        raise validation_error(
            f"Limit must be between 0 and {MAX_SEARCH_LIMIT}, but was {limit}",
        )
    after = _int_field(body, "after", 0)
    if after >= RESULT_CAP:
        raise ApiError(
            400,
            "VALIDATION_ERROR",
            f"The search API is limited to {RESULT_CAP} results per query; page {after} is"
            " beyond it. Narrow the query with filters.",
        )
    raw_groups = body.get("filterGroups") or []
    if not isinstance(raw_groups, list):
        raise validation_error("filterGroups must be a list")
    if len(raw_groups) > MAX_FILTER_GROUPS:
        raise validation_error(
            f"Too many filter groups: {len(raw_groups)}; at most {MAX_FILTER_GROUPS} are allowed"
        )
    groups = tuple(_parse_group(schema, group) for group in raw_groups)
    total = sum(len(group) for group in groups)
    if total > MAX_FILTERS:
        raise validation_error(f"Too many filters: {total}; at most {MAX_FILTERS} are allowed")
    sort_property, descending = _parse_sorts(schema, body.get("sorts") or [])
    properties = body.get("properties") or []
    if not isinstance(properties, list) or not all(isinstance(p, str) for p in properties):
        raise validation_error("properties must be a list of property names")
    return SearchQuery(groups, sort_property, descending, tuple(properties), limit, after)


def _int_field(body: Mapping[str, Any], name: str, default: int) -> int:
    value = body.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise validation_error(f"{name} must be an integer, but was {value!r}") from None


def _parse_group(schema: ObjectSchema, group: Any) -> tuple[Filter, ...]:
    filters = group.get("filters") if isinstance(group, dict) else None
    if not isinstance(filters, list) or not filters:
        raise validation_error("Each filter group needs a non-empty list of filters")
    if len(filters) > MAX_FILTERS_PER_GROUP:
        raise validation_error(
            f"Too many filters in a group: {len(filters)};"
            f" at most {MAX_FILTERS_PER_GROUP} are allowed"
        )
    return tuple(_parse_filter(schema, raw) for raw in filters)


def _parse_filter(schema: ObjectSchema, raw: Any) -> Filter:
    if not isinstance(raw, dict):
        raise validation_error("A filter must be an object")
    name = raw.get("propertyName")
    operator = raw.get("operator")
    if not isinstance(name, str) or name not in schema.known:
        raise validation_error(f"There was a problem with the request: unknown property {name!r}")
    if operator not in OPERATORS:
        raise validation_error(f"Unknown filter operator {operator!r}")
    values = raw.get("values") or []
    if not isinstance(values, list):
        raise validation_error(f"values of operator {operator} must be a list")
    value = raw.get("value")
    if operator in {"IN", "NOT_IN"} and not values:
        raise validation_error(f"Operator {operator} needs a list of values")
    if operator not in {"IN", "NOT_IN", "HAS_PROPERTY", "NOT_HAS_PROPERTY"} and value is None:
        raise validation_error(f"Operator {operator} needs a value")
    high = raw.get("highValue")
    if operator == "BETWEEN" and high is None:
        raise validation_error("Operator BETWEEN needs a highValue")
    return Filter(
        name,
        str(operator),
        None if value is None else _filter_value(schema, name, str(value)),
        None if high is None else _filter_value(schema, name, str(high)),
        frozenset(_filter_value(schema, name, str(v)) for v in values),
    )


def _parse_sorts(schema: ObjectSchema, sorts: Any) -> tuple[str | None, bool]:
    if not isinstance(sorts, list):
        raise validation_error("sorts must be a list")
    if len(sorts) > 1:
        raise validation_error("Only one sort is allowed per search request")
    if not sorts:
        return None, False
    sort = sorts[0]
    if isinstance(sort, str):
        name, descending = sort.lstrip("-"), sort.startswith("-")
    elif isinstance(sort, dict):
        name = str(sort.get("propertyName"))
        descending = sort.get("direction", "ASCENDING") == "DESCENDING"
    else:
        raise validation_error("A sort is a property name or {propertyName, direction}")
    if name not in schema.known:
        raise validation_error(f"Cannot sort by unknown property {name!r}")
    return name, descending


def _sort_key(schema: ObjectSchema, name: str) -> Callable[[CrmObject], tuple[Any, ...]]:
    def key(obj: CrmObject) -> tuple[Any, ...]:
        value = obj.comparable(schema, name)
        # Missing values sort last; ties break by id so that pages are stable.
        return (value is None, value if value is not None else 0, int(obj.id))

    return key


def _filter_value(schema: ObjectSchema, name: str, raw: str) -> Comparable:
    """A filter's value in the form `CrmObject.comparable` gives: dates take ms or ISO."""
    if name in {"createdate", schema.modified_property}:
        try:
            return parse_ms(raw)
        except ValueError:
            raise validation_error(
                f"{raw!r} is not a valid value for {name}: a datetime property takes epoch"
                " milliseconds or an ISO 8601 date and time"
            ) from None
    if raw.lstrip("-").isdigit():
        return int(raw)
    return raw.lower()


def _matches(schema: ObjectSchema, obj: CrmObject, flt: Filter) -> bool:
    have = obj.comparable(schema, flt.property_name)
    if flt.operator == "HAS_PROPERTY":
        return have is not None
    if flt.operator == "NOT_HAS_PROPERTY":
        return have is None
    if have is None:
        return flt.operator in {"NEQ", "NOT_IN"}
    if flt.operator in {"IN", "NOT_IN"}:
        found = have in flt.values
        return found if flt.operator == "IN" else not found
    # Every other operator was refused without a value (and BETWEEN without a highValue).
    want: Any = flt.value
    high: Any = flt.high_value
    try:
        if flt.operator == "BETWEEN":
            return bool(want <= have <= high)
        return bool(
            {
                "EQ": have == want,
                "NEQ": have != want,
                "LT": have < want,
                "LTE": have <= want,
                "GT": have > want,
                "GTE": have >= want,
            }[flt.operator]
        )
    except TypeError:
        # A number compared with text: HubSpot finds nothing rather than failing.
        return False


def run_query(
    schema: ObjectSchema, records: Sequence[CrmObject], query: SearchQuery
) -> tuple[int, list[CrmObject]]:
    """Total matches and the requested page of them."""
    matched = [
        obj
        for obj in records
        if not query.groups
        or any(all(_matches(schema, obj, flt) for flt in group) for group in query.groups)
    ]
    if query.sort_property is not None:
        matched.sort(key=_sort_key(schema, query.sort_property), reverse=query.descending)
    else:
        matched.sort(key=lambda obj: int(obj.id))
    end = min(query.after + query.limit, RESULT_CAP)
    return len(matched), matched[query.after : end]
