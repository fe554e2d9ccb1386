"""Salesforce objects as streams, read incrementally on SystemModstamp.

The cursor is the last SystemModstamp committed plus the ids already seen at exactly that
timestamp. Each read asks for `SystemModstamp >= cursor` ordered by (SystemModstamp, Id) and
drops the ids already seen, so records sharing one timestamp across a page boundary, or across
two runs, are neither lost (as with `>`) nor processed twice (as with a bare `>=`). queryAll
returns deleted records too: they come back in `Page.deleted_ids`. A full read of more records
than `bulk_query_threshold` runs as one Bulk 2.0 query job instead of REST pages. If Salesforce
loses a REST query's place between pages, the query runs again from the cursor.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog

from connectors.salesforce.client import QueryLocatorLost, SalesforceClient
from connectors.salesforce.soql import parse_datetime
from syncd.connector import JsonValue, Page, RawRecord
from syncd.errors import FatalConnectorError

CURSOR_FIELD = "SystemModstamp"
_REQUIRED = ("Id", "IsDeleted", CURSOR_FIELD)
log = structlog.get_logger(__name__)


def soql_datetime(value: datetime) -> str:
    """A dateTime literal as SOQL wants it: UTC, unquoted, with milliseconds."""
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


@dataclass
class Cursor:
    """Where a stream stands: the last SystemModstamp read and the ids read at exactly it."""

    modstamp: datetime | None = None
    ids: set[str] = field(default_factory=set)

    @classmethod
    def from_json(cls, value: JsonValue | None) -> Cursor:
        """The cursor the engine stored (None: the beginning)."""
        if value is None:
            return cls()
        try:
            return cls(parse_datetime(value["modstamp"]), set(value["ids"]))
        except (KeyError, TypeError, ValueError) as error:
            raise FatalConnectorError(f"not a Salesforce cursor: {value!r}") from error

    def to_json(self) -> JsonValue:
        """The cursor as the engine stores it; None before anything was read."""
        if self.modstamp is None:
            return None
        return {"modstamp": soql_datetime(self.modstamp), "ids": sorted(self.ids)}

    def seen(self, record_id: str, modstamp: datetime) -> bool:
        """Whether this record was already read (same id, same timestamp as the cursor)."""
        return modstamp == self.modstamp and record_id in self.ids

    def advance(self, record_id: str, modstamp: datetime) -> None:
        """Move past this record (read in SystemModstamp, Id order)."""
        if modstamp != self.modstamp:
            self.modstamp, self.ids = modstamp, set()
        self.ids.add(record_id)


def _soql(sobject: str, fields: list[str], state: Cursor) -> str:
    """The query reading `sobject` from the cursor on, in cursor order."""
    where = f" WHERE {CURSOR_FIELD} >= {soql_datetime(state.modstamp)}" if state.modstamp else ""
    return f"SELECT {', '.join(fields)} FROM {sobject}{where} ORDER BY {CURSOR_FIELD}, Id"


def _rest_datetime(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}+0000"


def _from_csv(value: str, field_type: str) -> Any:
    """A Bulk 2.0 CSV cell as the REST API would have given it."""
    if value == "":
        return None
    if field_type == "boolean":
        return value == "true"
    if field_type == "datetime":
        return _rest_datetime(parse_datetime(value))
    if field_type == "int":
        return int(value)
    if field_type in ("double", "currency", "percent"):
        return float(value)
    return value


def page_after(
    cursor: Cursor, rows: list[dict[str, Any]], location: Callable[[str], str]
) -> Page | None:
    """The page of `rows` the cursor does not cover yet (None if none); moves the cursor.

    `rows` come ordered by (SystemModstamp, Id), starting at or after the cursor's time.
    `location` gives a record's URL when the row has no `attributes` (Bulk 2.0 rows).
    """
    records: list[RawRecord] = []
    deleted: list[str] = []
    for row in rows:
        attributes = row.pop("attributes", None) or {}
        record_id = str(row["Id"])
        modstamp = parse_datetime(str(row[CURSOR_FIELD]))
        if cursor.seen(record_id, modstamp):
            continue
        cursor.advance(record_id, modstamp)
        if row["IsDeleted"]:
            deleted.append(record_id)
        else:
            records.append(
                RawRecord(payload=row, location=attributes.get("url") or location(record_id))
            )
    if not records and not deleted:
        return None
    return Page(records=records, cursor=cursor.to_json(), deleted_ids=deleted)


class SalesforceSource:
    """Reads each configured object as a stream of the same name."""

    def __init__(self, client: SalesforceClient) -> None:
        self.client = client
        self.options = client.options

    def streams(self) -> list[str]:
        """The configured objects."""
        return list(self.options.objects)

    def _fields(self, sobject: str) -> tuple[list[str], dict[str, str]]:
        types = self.client.describe_fields(sobject)
        wanted = list(self.options.fields.get(sobject, ())) or list(types)
        unknown = [name for name in wanted if name not in types]
        if unknown:
            raise FatalConnectorError(f"{sobject} has no field(s) {', '.join(unknown)}")
        return [*_REQUIRED, *(f for f in wanted if f not in _REQUIRED)], types

    def read(self, stream: str, cursor: JsonValue | None) -> Iterator[Page]:
        """Pages of `stream` after `cursor` (None: everything), deleted records included."""
        if stream not in self.options.objects:
            raise FatalConnectorError(f"{stream} is not one of the configured objects")
        state = Cursor.from_json(cursor)
        fields, types = self._fields(stream)
        if state.modstamp is None and self._count(stream) > self.options.bulk_query_threshold:
            pages: Iterable[list[dict[str, Any]]] = self._bulk_pages(
                _soql(stream, fields, state), types
            )
        else:
            pages = self._rest_pages(stream, fields, state)
        for rows in pages:
            page = page_after(state, rows, self._location(stream))
            if page is not None:
                yield page

    def _count(self, sobject: str) -> int:
        return int(self.client.query(f"SELECT COUNT() FROM {sobject}", False)["totalSize"])

    def _rest_pages(
        self, stream: str, fields: list[str], state: Cursor
    ) -> Iterator[list[dict[str, Any]]]:
        """The query's pages; `state` must have moved past each page before the next is asked.

        Salesforce forgets a query locator once it served the last page (so a retry of a page
        whose answer was lost finds it gone), after some idle minutes, and when the user opens
        too many: then the query runs again from `state`, which starts it exactly after the
        rows already taken. A second loss before any progress is fatal: it would loop.
        """
        result = self.client.query(_soql(stream, fields, state), include_deleted=True)
        restarted_at: tuple[datetime | None, int] | None = None
        while True:
            yield [dict(record) for record in result["records"]]
            if result["done"]:
                return
            try:
                result = self.client.query_more(result["nextRecordsUrl"])
            except QueryLocatorLost:
                here = (state.modstamp, len(state.ids))
                if here == restarted_at:
                    raise
                restarted_at = here
                log.info(
                    "salesforce.query_restarted", sobject=stream, cause="INVALID_QUERY_LOCATOR"
                )
                result = self.client.query(_soql(stream, fields, state), include_deleted=True)

    def _bulk_pages(self, soql: str, types: Mapping[str, str]) -> Iterator[list[dict[str, Any]]]:
        for text in self.client.bulk_query(soql, include_deleted=True):
            yield [
                {name: _from_csv(value, types.get(name, "string")) for name, value in row.items()}
                for row in csv.DictReader(io.StringIO(text))
            ]

    def _location(self, sobject: str) -> Callable[[str], str]:
        prefix = f"/services/data/v{self.options.api_version}/sobjects/{sobject}/"
        return lambda record_id: prefix + record_id

    def close(self) -> None:
        """Release the HTTP connections."""
        self.client.close()
