"""The emulator's SOQL subset: what it parses, how it filters and sorts, what it refuses."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connectors.salesforce import soql

TYPES = {
    "Id": "id",
    "Email": "email",
    "LastName": "string",
    "IsDeleted": "boolean",
    "SystemModstamp": "datetime",
    "Birthdate": "date",
}
T1 = datetime(2024, 1, 1, tzinfo=UTC)
T2 = datetime(2024, 1, 2, tzinfo=UTC)
ROWS: list[dict[str, Any]] = [
    {
        "Id": "003A",
        "Email": "A@x.com",
        "LastName": "b",
        "IsDeleted": False,
        "SystemModstamp": T2,
        "Birthdate": "1989-12-31",
    },
    {
        "Id": "003B",
        "Email": None,
        "LastName": "a",
        "IsDeleted": True,
        "SystemModstamp": T1,
        "Birthdate": "1990-01-02",
    },
    {
        "Id": "003C",
        "Email": "c@x.com",
        "LastName": "c",
        "IsDeleted": False,
        "SystemModstamp": T1,
        "Birthdate": None,
    },
]


def run(text: str) -> list[str]:
    return [row["Id"] for row in soql.plan(soql.parse(text), "Contact", TYPES).run(ROWS)]


def test_parses_every_clause() -> None:
    query = soql.parse(
        "select Id, Email FROM Contact where SystemModstamp >= 2024-01-01T00:00:00.000Z "
        "and IsDeleted = false ORDER BY SystemModstamp DESC, Id LIMIT 10"
    )
    assert query.fields == ("Id", "Email")
    assert query.sobject == "Contact"
    assert [(c.field, c.op, c.literal.value) for c in query.where] == [
        ("SystemModstamp", ">=", T1),
        ("IsDeleted", "=", False),
    ]
    assert query.order_by == (("SystemModstamp", True), ("Id", False))
    assert query.limit == 10
    assert soql.parse("SELECT COUNT() FROM Lead").is_count


def test_orders_by_timestamp_then_id() -> None:
    assert run("SELECT Id FROM Contact ORDER BY SystemModstamp, Id") == ["003B", "003C", "003A"]
    assert run("SELECT Id FROM Contact ORDER BY LastName DESC LIMIT 2") == ["003C", "003A"]


def test_nulls_sort_first_ascending() -> None:
    assert run("SELECT Id FROM Contact ORDER BY Email")[0] == "003B"


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("SystemModstamp >= 2024-01-02T00:00:00Z", ["003A"]),
        ("SystemModstamp > 2024-01-01T00:00:00+00:00", ["003A"]),
        ("SystemModstamp = 2024-01-01T01:00:00+01:00", ["003B", "003C"]),
        ("IsDeleted = true", ["003B"]),
        ("Email = 'a@X.com'", ["003A"]),
        ("Email = null", ["003B"]),
        ("Email != null", ["003A", "003C"]),
        ("Email <> 'c@x.com'", ["003A", "003B"]),
        ("Id > '003A' AND IsDeleted = false", ["003C"]),
        ("LastName < 'b'", ["003B"]),
        ("LastName <= 'b'", ["003A", "003B"]),
        ("Email > null", []),
        ("Birthdate > 1990-01-01", ["003B"]),
        ("Birthdate <= 1989-12-31", ["003A"]),
        ("Birthdate = null", ["003C"]),
    ],
)
def test_filters(where: str, expected: list[str]) -> None:
    assert run(f"SELECT Id FROM Contact WHERE {where}") == expected


def test_field_names_are_case_insensitive() -> None:
    plan = soql.plan(soql.parse("SELECT id, EMAIL FROM Contact"), "Contact", TYPES)
    assert plan.fields == ("Id", "Email")


@pytest.mark.parametrize(
    "text",
    [
        "SELECT FROM Contact",
        "SELECT Id Contact",
        "SELECT Id FROM Contact WHERE Email = 'a' OR Email = 'b'",
        "SELECT Id FROM Contact WHERE Email LIKE 'a%'",
        "SELECT Id FROM Contact WHERE Email IN ('a')",
        "SELECT Id FROM Contact LIMIT -1",
        "SELECT Id FROM Contact GROUP BY Email",
        "SELECT Id FROM Contact ORDER BY",
        "SELECT Id, FROM Contact",
        "SELECT Id FROM Contact WHERE",
        "DELETE FROM Contact",
    ],
)
def test_outside_the_subset_is_malformed(text: str) -> None:
    with pytest.raises(soql.SoqlError) as caught:
        soql.plan(soql.parse(text), "Contact", TYPES)
    assert caught.value.code == "MALFORMED_QUERY"


def test_malformed_message_points_at_the_token() -> None:
    with pytest.raises(soql.SoqlError, match=r"unexpected token: 'OR'") as caught:
        soql.parse("SELECT Id FROM Contact WHERE Email = 'a' OR Email = 'b'")
    assert "ERROR at Row:1:Column:42" in caught.value.message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("SELECT Foo FROM Contact", "No such column 'Foo' on entity 'Contact'"),
        ("SELECT Id FROM Contact WHERE Foo = 'x'", "No such column 'Foo'"),
        ("SELECT Id FROM Contact ORDER BY Foo", "No such column 'Foo'"),
    ],
)
def test_unknown_fields_are_invalid_field(text: str, message: str) -> None:
    with pytest.raises(soql.SoqlError, match=message) as caught:
        soql.plan(soql.parse(text), "Contact", TYPES)
    assert caught.value.code == "INVALID_FIELD"


@pytest.mark.parametrize(
    ("where", "message"),
    [
        (
            "SystemModstamp > '2024-01-01T00:00:00Z'",
            "'SystemModstamp' must be of type dateTime and should not be enclosed in quotes",
        ),
        ("SystemModstamp > 2024-01-01", "'SystemModstamp' must be of type dateTime"),
        (
            "Birthdate > '1990-01-01'",
            "'Birthdate' must be of type date and should not be enclosed in quotes",
        ),
        ("Birthdate > 1990-01-01T00:00:00Z", "'Birthdate' must be of type date"),
        ("IsDeleted = 'false'", "must be of type boolean"),
        ("Email = 5", "should be enclosed in quotes"),
        ("LastName = 1990-01-01", "should be enclosed in quotes"),
    ],
)
def test_mistyped_literals_are_invalid_filter_operators(where: str, message: str) -> None:
    with pytest.raises(soql.SoqlError, match=message) as caught:
        soql.plan(soql.parse(f"SELECT Id FROM Contact WHERE {where}"), "Contact", TYPES)
    assert caught.value.code == "INVALID_QUERY_FILTER_OPERATOR"


@pytest.mark.parametrize(
    ("literal", "message"),
    [
        ("2024-02-30T00:00:00Z", "Invalid datetime: 2024-02-30T00:00:00Z"),
        ("2024-01-01T25:00:00Z", "Invalid datetime: 2024-01-01T25:00:00Z"),
        ("2024-13-01", "Invalid date: 2024-13-01"),
    ],
)
def test_a_date_that_is_no_day_of_the_calendar_is_malformed(literal: str, message: str) -> None:
    with pytest.raises(soql.SoqlError, match=message) as caught:
        soql.parse(f"SELECT Id FROM Contact WHERE SystemModstamp >= {literal}")
    assert caught.value.code == "MALFORMED_QUERY"
    assert "ERROR at Row:1:Column:48" in caught.value.message


@pytest.mark.parametrize(
    ("fields", "twice"), [("Id, Email, Email", "Email"), ("Id, Email, email", "email")]
)
def test_a_field_selected_twice_is_invalid_field(fields: str, twice: str) -> None:
    with pytest.raises(soql.SoqlError, match=f"^duplicate field selected: {twice}$") as caught:
        soql.plan(soql.parse(f"SELECT {fields} FROM Contact"), "Contact", TYPES)
    assert caught.value.code == "INVALID_FIELD"


def test_string_escapes() -> None:
    (condition,) = soql.parse(r"SELECT Id FROM Contact WHERE LastName = 'O\'Hara'").where
    assert condition.literal.value == "O'Hara"


# hypothesis bounds are naive by design; the timezones argument makes the values aware.
_BOUNDS = {"min_value": datetime(1970, 1, 1), "max_value": datetime(2200, 1, 1)}  # noqa: DTZ001


@given(
    st.datetimes(**_BOUNDS, timezones=st.sampled_from([UTC])).map(
        lambda d: d.replace(microsecond=0)
    )
)
def test_datetime_literals_round_trip(moment: datetime) -> None:
    text = moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    (condition,) = soql.parse(f"SELECT Id FROM Contact WHERE SystemModstamp = {text}").where
    assert condition.literal.value == moment
    assert soql.parse_datetime(moment.strftime("%Y-%m-%dT%H:%M:%S.000+0000")) == moment


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="time zone"):
        soql.parse_datetime("2024-01-01T00:00:00")
