from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from syncd.mapping.compiler import compile_expression, compile_transform
from syncd.mapping.transforms import TransformError, format_timestamp, normalize_email


def run(expression: str, payload: dict[str, object]) -> object:
    return compile_expression(expression)(payload)


@pytest.mark.parametrize(
    ("expression", "value", "expected"),
    [
        ("v | trim", "  a b  ", "a b"),
        ("v | trim", "   ", None),
        ("v | lower", "ÀB", "àb"),
        ("v | upper", "usd", "USD"),
        ("v | title", " ada lovelace ", "Ada Lovelace"),
        ("v | email", "  Jane@Example.COM ", "jane@example.com"),
        ("v | e164", "(415) 555-0134", "+14155550134"),
        ("v | e164('GB')", "020 7946 0958", "+442079460958"),
        ("v | datetime", "2024-01-02T03:04:05Z", "2024-01-02T03:04:05.000Z"),
        ("v | datetime", "2024-01-02T03:04:05.123+0200", "2024-01-02T01:04:05.123Z"),
        ("v | datetime", "1704164645000", "2024-01-02T03:04:05.000Z"),
        (
            "v | datetime('Europe/Paris', '%d/%m/%Y %H:%M')",
            "02/01/2024 10:00",
            "2024-01-02T09:00:00.000Z",
        ),
        ("v | date", "2024-01-02T10:00:00", "2024-01-02"),
        ("v | to_int", " 42 ", 42),
        ("v | to_int", "42.0", 42),
        ("v | to_int", "9007199254740993", 9007199254740993),
        ("v | to_int", "-12345678901234567890", -12345678901234567890),
        ("v | to_int", "1,234", 1234),
        ("v | to_float", "1,234.5", 1234.5),
        ("v | to_bool", "Yes", True),
        ("v | to_bool", "off", False),
        ("v | default('none')", None, "none"),
        ("v | default(0)", "", 0),
        ("v | split(';')", "a; b;;c", ["a", "b", "c"]),
        ("v | hash", "x", "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"),
        ("v | map({'G': 'gold'})", "G", "gold"),
        ("v | map({'G': 'gold'})", "Z", "Z"),
        ("v | digits", "+1 (415) 555", "1415555"),
    ],
)
def test_transform(expression: str, value: object, expected: object) -> None:
    assert run(expression, {"v": value}) == expected


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("v | email", "jane.at.example"),
        ("v | e164", "12"),
        ("v | datetime", "yesterday"),
        ("v | to_int", "4.5"),
        ("v | to_float", "abc"),
        ("v | to_float", "nan"),
        ("v | to_float", "-Infinity"),
        ("v | to_bool", "maybe"),
        # Values whose first error was not a TransformError, which stopped the whole run.
        ("v | datetime", "9999-12-31T23:59:59-05:00"),
        ("v | datetime('America/New_York')", "9999-12-31 23:59:59"),
        ("v | datetime('Europe/Paris')", "0001-01-01T00:00:00"),
        ("v | datetime", "99999999999999999999"),
        ("v | datetime", "²"),
        ("v | hash", "\ud800"),
    ],
)
def test_bad_values_raise_transform_error_without_the_value(expression: str, value: str) -> None:
    with pytest.raises(TransformError) as caught:
        run(expression, {"v": value})
    assert value not in str(caught.value)


def test_none_passes_through_every_transform() -> None:
    for name in (
        "trim",
        "lower",
        "email",
        "e164",
        "datetime",
        "to_int",
        "to_bool",
        "hash",
        "split",
    ):
        assert run(f"v | {name}", {}) is None


def test_paths_constants_and_list_indexes() -> None:
    payload = {"a": {"b": [{"c": "deep"}]}, "n": 1}
    assert run("a.b.0.c", payload) == "deep"
    assert run("a.b.5.c", payload) is None
    assert run("a.x.y", payload) is None
    assert run("'Order Completed'", payload) == "Order Completed"
    assert run("a.b.0.c | upper | default('x')", payload) == "DEEP"


def test_pipe_inside_quotes_is_not_a_step() -> None:
    assert run("v | split('|')", {"v": "a|b"}) == ["a", "b"]


@pytest.mark.parametrize(
    ("step", "message"),
    [
        ("nope", "unknown transform 'nope'"),
        ("trim(1)", "trim takes 0 argument"),
        ("default", "default takes 1 argument"),
        ("e164('XX')", "unknown region"),
        ("hash('crc')", "unknown hash"),
        ("datetime('Mars/Base')", "unknown time zone"),
        ("split(x)", "must be literals"),
    ],
)
def test_bad_steps_fail_at_compile_time(step: str, message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message.replace("(", r"\(")):
        compile_transform(step)


def test_email_normalization_is_trim_and_lowercase() -> None:
    assert normalize_email(" A.B@X.Org ") == "a.b@x.org"


def test_coalesce_reads_other_paths_where_the_value_is_missing() -> None:
    payload = {"work": " ", "home": "Home@X.com", "other": "o@x.com"}
    assert run("email | coalesce('work', 'home') | email", payload) == "home@x.com"
    assert run("work | coalesce('other')", payload) == "o@x.com"
    assert run("home | coalesce('other') | lower", payload) == "home@x.com"
    with pytest.raises(ValueError, match="coalesce takes one or more paths"):
        compile_expression("a | coalesce()")


def _strftime_format(moment: datetime) -> str:
    """How timestamps were written before: every stored trait has this text."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@given(st.datetimes(timezones=st.timezones()))
def test_timestamps_are_written_as_they_always_were(moment: datetime) -> None:
    try:
        moment.astimezone(UTC)
    except OverflowError:  # a time before year 1 once moved to UTC
        assume(False)
    assert format_timestamp(moment) == _strftime_format(moment)


def test_an_integer_too_large_for_a_float_is_a_value_error() -> None:
    with pytest.raises(TransformError, match="not a finite number"):
        run("v | to_float", {"v": 10**400})


def test_an_epoch_time_that_is_not_a_number_is_a_transform_error() -> None:
    with pytest.raises(TransformError, match="not an epoch time"):
        run("v | datetime", {"v": float("nan")})
