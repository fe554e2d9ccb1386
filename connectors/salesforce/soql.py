"""The subset of SOQL the emulator understands, with Salesforce's error codes for the rest.

    SELECT field {, field} | COUNT()  FROM object
    [WHERE field op literal {AND field op literal}]
    [ORDER BY field [ASC|DESC] {, field [ASC|DESC]}]
    [LIMIT n]

op is one of = != <> < <= > >=; a literal is a 'quoted string', an unquoted dateTime
(2024-01-01T00:00:00Z) or date (2024-01-01), a number, true, false or null. A query outside the
subset, or a dateTime or date that is no instant or day of the calendar, is refused with
MALFORMED_QUERY; an unknown field or one selected twice with INVALID_FIELD; a literal of the
wrong type for its field (a quoted date) with INVALID_QUERY_FILTER_OPERATOR; an unknown object
with INVALID_TYPE, as the real API does, so a connector that works here does not rely on
leniency.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<string>'(?:[^'\\]|\\.)*')
  | (?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,3})?(?:Z|[+-]\d{2}:?\d{2}))
  | (?P<date>\d{4}-\d{2}-\d{2})
  | (?P<number>-?\d+(?:\.\d+)?)
  | (?P<op>!=|<>|<=|>=|=|<|>)
  | (?P<punct>[(),])
  | (?P<word>[A-Za-z_][A-Za-z0-9_.]*)
  | (?P<other>.)
    """,
    re.VERBOSE,
)
_KEYWORDS = {"select", "from", "where", "and", "order", "by", "asc", "desc", "limit", "count"}
_COMPARATORS: dict[str, Callable[[Any, Any], bool]] = {
    "=": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


class SoqlError(Exception):
    """A query Salesforce would refuse; `code` is its errorCode."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Token:
    """One lexical token and the column it starts at (for error messages)."""

    kind: str
    text: str
    column: int


@dataclass(frozen=True)
class Literal:
    """A value written in the query; `kind` is string, datetime, date, number, boolean or null."""

    kind: str
    value: Any


@dataclass(frozen=True)
class Condition:
    """One `field op literal` of the WHERE clause."""

    field: str
    op: str
    literal: Literal


@dataclass(frozen=True)
class Query:
    """A parsed query; `fields` is empty for SELECT COUNT()."""

    fields: tuple[str, ...]
    sobject: str
    where: tuple[Condition, ...]
    order_by: tuple[tuple[str, bool], ...]
    limit: int | None
    text: str

    @property
    def is_count(self) -> bool:
        """Whether this is SELECT COUNT()."""
        return not self.fields


def parse_datetime(text: str) -> datetime:
    """A SOQL or API dateTime (Z, +00:00 or +0000 offsets) as an aware datetime."""
    value = text.strip()
    if value.endswith("Z"):
        value = value[:-1] + "+00:00"
    elif re.search(r"[+-]\d{4}$", value):
        value = f"{value[:-2]}:{value[-2:]}"
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError(f"dateTime without a time zone: {text}")
    return parsed


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = [
            Token(m.lastgroup or "other", m.group(), m.start())
            for m in _TOKEN.finditer(text)
            if m.lastgroup != "space"
        ]
        self.at = 0

    def _error(self, token: Token | None, problem: str | None = None) -> SoqlError:
        """MALFORMED_QUERY at `token`: unexpected, unless `problem` says what is wrong."""
        if token is None:
            return SoqlError("MALFORMED_QUERY", "unexpected token: <EOF>")
        return SoqlError(
            "MALFORMED_QUERY",
            f"\n{self.text}\n{' ' * token.column}^\nERROR at Row:1:Column:{token.column + 1}\n"
            + (problem or f"unexpected token: '{token.text}'"),
        )

    def _peek(self) -> Token | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def _next(self) -> Token:
        token = self._peek()
        if token is None:
            raise self._error(None)
        self.at += 1
        return token

    def _keyword(self, word: str) -> bool:
        token = self._peek()
        if token is not None and token.kind == "word" and token.text.lower() == word:
            self.at += 1
            return True
        return False

    def _comma(self) -> bool:
        token = self._peek()
        if token is not None and token.text == ",":
            self.at += 1
            return True
        return False

    def _expect_keyword(self, word: str) -> None:
        if not self._keyword(word):
            raise self._error(self._peek())

    def _expect(self, text: str) -> None:
        token = self._next()
        if token.text != text:
            raise self._error(token)

    def _identifier(self) -> str:
        token = self._next()
        if token.kind != "word" or token.text.lower() in _KEYWORDS:
            raise self._error(token)
        return token.text

    def _literal(self) -> Literal:
        token = self._next()
        if token.kind == "string":
            body = token.text[1:-1]
            return Literal("string", re.sub(r"\\(.)", r"\1", body))
        try:
            if token.kind == "datetime":
                return Literal("datetime", parse_datetime(token.text))
            if token.kind == "date":
                return Literal("date", date.fromisoformat(token.text))
        except ValueError:
            # Shaped like one, but no instant of the calendar (2024-02-30, hour 25).
            raise self._error(token, f"Invalid {token.kind}: {token.text}") from None
        if token.kind == "number":
            number = float(token.text)
            return Literal("number", int(number) if number.is_integer() else number)
        if token.kind == "word" and token.text.lower() in ("true", "false"):
            return Literal("boolean", token.text.lower() == "true")
        if token.kind == "word" and token.text.lower() == "null":
            return Literal("null", None)
        raise self._error(token)

    def parse(self) -> Query:
        """The whole query, or SoqlError at the first token outside the subset."""
        self._expect_keyword("select")
        fields: list[str] = []
        if self._keyword("count"):
            self._expect("(")
            self._expect(")")
        else:
            fields.append(self._identifier())
            while self._comma():
                fields.append(self._identifier())
        self._expect_keyword("from")
        sobject = self._identifier()
        where: list[Condition] = []
        if self._keyword("where"):
            where.append(self._condition())
            while self._keyword("and"):
                where.append(self._condition())
        order_by: list[tuple[str, bool]] = []
        if self._keyword("order"):
            self._expect_keyword("by")
            order_by.append(self._order_item())
            while self._comma():
                order_by.append(self._order_item())
        limit = None
        if self._keyword("limit"):
            token = self._next()
            if token.kind != "number" or not token.text.isdigit():
                raise self._error(token)
            limit = int(token.text)
        if self._peek() is not None:
            raise self._error(self._peek())
        return Query(tuple(fields), sobject, tuple(where), tuple(order_by), limit, self.text)

    def _condition(self) -> Condition:
        field = self._identifier()
        token = self._next()
        if token.kind != "op":
            raise self._error(token)
        op = "!=" if token.text == "<>" else token.text
        return Condition(field, op, self._literal())

    def _order_item(self) -> tuple[str, bool]:
        field = self._identifier()
        descending = self._keyword("desc")
        if not descending:
            self._keyword("asc")
        return field, descending


def parse(text: str) -> Query:
    """Parse `text`, raising SoqlError(MALFORMED_QUERY) outside the supported subset."""
    return _Parser(text).parse()


FieldTypes = Mapping[str, str]
"""Canonical field name -> Salesforce field type (id, string, email, datetime, boolean...)."""


def _canonical(types: FieldTypes, sobject: str, name: str) -> str:
    for field in types:
        if field.lower() == name.lower():
            return field
    raise SoqlError(
        "INVALID_FIELD",
        f"No such column '{name}' on entity '{sobject}'. If you are attempting to use a custom "
        "field, be sure to append the '__c' after the custom field name. Please reference your "
        "WSDL or the describe call for the appropriate names.",
    )


_UNQUOTED = {"datetime": "dateTime", "date": "date", "boolean": "boolean"}
"""Field types whose literals are written bare, with the type name Salesforce's errors use."""


def _comparable(field_type: str, field: str, literal: Literal) -> Any:
    """The literal as a value comparable with the field, or the error Salesforce gives."""
    if literal.kind == "null":
        return None
    bare = _UNQUOTED.get(field_type)
    if bare is not None and literal.kind != field_type:
        raise SoqlError(
            "INVALID_QUERY_FILTER_OPERATOR",
            f"value of filter criterion for field '{field}' must be of type {bare} and "
            "should not be enclosed in quotes",
        )
    if bare is None and literal.kind != "string":
        raise SoqlError(
            "INVALID_QUERY_FILTER_OPERATOR",
            f"value of filter criterion for field '{field}' must be of type {field_type} "
            "and should be enclosed in quotes",
        )
    # A date compares as its text, YYYY-MM-DD, as rows hold it: that text sorts as the days do.
    return _value(field_type, literal.value)


def _value(field_type: str, value: Any) -> Any:
    if value is None or field_type in ("id", "reference", "datetime", "boolean"):
        return value
    return str(value).lower()


def _matches(row_value: Any, op: str, wanted: Any) -> bool:
    if wanted is None or row_value is None:
        if op == "=":
            return row_value is wanted
        if op == "!=":
            return row_value is not wanted
        return False
    return _COMPARATORS[op](row_value, wanted)


def _sort_key(field_type: str, field: str) -> Callable[[Mapping[str, Any]], tuple[bool, Any]]:
    def key(row: Mapping[str, Any]) -> tuple[bool, Any]:
        value = row.get(field)
        # Salesforce sorts nulls first in ascending order.
        return (value is not None, _value(field_type, value) if value is not None else 0)

    return key


@dataclass(frozen=True)
class Plan:
    """A query checked against one object's fields, ready to run over its rows."""

    query: Query
    fields: tuple[str, ...]
    predicates: tuple[tuple[str, str, Any], ...]
    order_by: tuple[tuple[str, bool], ...]
    types: FieldTypes

    def run(self, rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        """The matching rows, ordered and limited (whole rows; project with `fields`)."""
        matched = [
            row
            for row in rows
            if all(
                _matches(_value(self.types[f], row.get(f)), op, wanted)
                for f, op, wanted in self.predicates
            )
        ]
        for field, descending in reversed(self.order_by):
            matched.sort(key=_sort_key(self.types[field], field), reverse=descending)
        if self.query.limit is not None:
            matched = matched[: self.query.limit]
        return matched


def plan(query: Query, sobject: str, types: FieldTypes) -> Plan:
    """Check every field and literal of `query` against `types` (the object's fields)."""
    fields = tuple(_canonical(types, sobject, name) for name in query.fields)
    for position, name in enumerate(query.fields):
        if fields[position] in fields[:position]:
            raise SoqlError("INVALID_FIELD", f"duplicate field selected: {name}")
    predicates = []
    for condition in query.where:
        field = _canonical(types, sobject, condition.field)
        wanted = _comparable(types[field], field, condition.literal)
        predicates.append((field, condition.op, wanted))
    order_by = tuple(
        (_canonical(types, sobject, name), descending) for name, descending in query.order_by
    )
    return Plan(query, fields, tuple(predicates), order_by, types)
