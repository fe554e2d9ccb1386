"""The registry of named transforms that mapping files chain with `|`.

Each entry is a factory: given the arguments written in the mapping file it checks them and
returns a plain one-argument function, so the hot path never parses anything. A transform
passes None through untouched (except `default`), and raises TransformError on a value it
cannot handle; the record is then quarantined with that reason (or the field nulled, if the
mapping says `on_error = "null"`).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers

from syncd.mapping.phones import PhoneError, to_e164

Transform = Callable[[Any], Any]
Factory = Callable[[list[Any]], Transform]


class TransformError(ValueError):
    """A value a transform cannot handle; the message names the value's problem, not the value."""


REGISTRY: dict[str, Factory] = {}
TRUE_WORDS = frozenset({"true", "t", "yes", "y", "1", "on"})
FALSE_WORDS = frozenset({"false", "f", "no", "n", "0", "off", ""})


def transform(name: str, arity: tuple[int, int] = (0, 0)) -> Callable[[Factory], Factory]:
    """Register a factory under `name`, checking the argument count at compile time."""

    def register(factory: Factory) -> Factory:
        def checked(args: list[Any]) -> Transform:
            low, high = arity
            if not low <= len(args) <= high:
                expected = str(low) if low == high else f"{low} to {high}"
                raise ValueError(f"{name} takes {expected} argument(s), got {len(args)}")
            return factory(args)

        REGISTRY[name] = checked
        return factory

    return register


def _plain(fn: Transform) -> Factory:
    return lambda _args: fn


def _none_safe(fn: Transform) -> Transform:
    return lambda value: None if value is None else fn(value)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


def trim_value(value: Any) -> Any:
    """Strip surrounding white space; a blank string becomes None (blank means absent)."""
    if not isinstance(value, str):
        return value
    stripped = value.strip()
    return stripped or None


transform("trim")(_plain(trim_value))
transform("lower")(_plain(_none_safe(lambda v: _text(v).lower())))
transform("upper")(_plain(_none_safe(lambda v: _text(v).upper())))
transform("title")(_plain(_none_safe(lambda v: _text(v).strip().title())))
transform("digits")(_plain(_none_safe(lambda v: re.sub(r"\D", "", _text(v)) or None)))


EMAIL_PATTERN = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def normalize_email(value: Any) -> str | None:
    """Trim and lowercase; raises TransformError when it does not look like an address."""
    text = trim_value(_text(value)) if value is not None else None
    if text is None:
        return None
    text = text.lower()
    if not EMAIL_PATTERN.match(text):
        raise TransformError("not an email address")
    return str(text)


transform("email")(_plain(normalize_email))


def normalize_phone(raw: str, region: str) -> str:
    """E.164 text as phonenumbers gives it; raises TransformError for what is not a valid number."""
    try:
        return to_e164(raw, region)
    except PhoneError as error:
        raise TransformError(str(error)) from None


@transform("e164", (0, 1))
def _e164(args: list[Any]) -> Transform:
    region = str(args[0]).upper() if args else "US"
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(f"unknown region {region!r}")

    def e164(value: Any) -> Any:
        text = trim_value(_text(value)) if value is not None else None
        return None if text is None else normalize_phone(text, region)

    return e164


def format_timestamp(moment: datetime) -> str:
    """The one timestamp format of the store: UTC, milliseconds, fixed width, so text sorts."""
    moment = moment.astimezone(UTC)
    if moment.year < 1000:
        # strftime writes such a year without leading zeros; stored traits were written so.
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    return moment.isoformat(timespec="milliseconds")[:-6] + "Z"


def parse_timestamp(value: Any, zone: Any = UTC, fmt: str | None = None) -> datetime:
    """A datetime from ISO-8601 text, epoch seconds or milliseconds, or a strptime format."""
    if isinstance(value, datetime):
        moment = value
    elif fmt is None and (
        isinstance(value, int | float) or (isinstance(value, str) and value.isdigit())
    ):
        # isdigit() also holds for digits float() refuses (superscripts), and an epoch time
        # can be NaN or beyond the years a datetime holds.
        try:
            number = float(value)
            moment = datetime.fromtimestamp(number / 1000 if number > 1e11 else number, UTC)
        except (ValueError, OverflowError, OSError):
            raise TransformError("not an epoch time this mapping can read") from None
    else:
        text = _text(value).strip()
        try:
            # A format without %z gives a naive time: the zone is applied just below.
            moment = datetime.strptime(text, fmt) if fmt else datetime.fromisoformat(text)  # noqa: DTZ007
        except ValueError:
            raise TransformError("not a date-time this mapping can read") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=zone)


def _zone(args: list[Any], index: int) -> Any:
    if len(args) <= index:
        return UTC
    try:
        return ZoneInfo(str(args[index]))
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {args[index]!r}") from None


@transform("datetime", (0, 2))
def _datetime(args: list[Any]) -> Transform:
    """datetime, datetime('Europe/Paris'), datetime('Europe/Paris', '%d/%m/%Y %H:%M')."""
    zone = _zone(args, 0)
    fmt = str(args[1]) if len(args) > 1 else None

    def to_timestamp(value: Any) -> str:
        try:
            return format_timestamp(parse_timestamp(value, zone, fmt))
        except OverflowError:
            # 9999-12-31 in a zone west of UTC, or 0001-01-01 east of it, has no UTC time.
            raise TransformError("a date-time whose UTC time is out of range") from None

    return _none_safe(to_timestamp)


@transform("date", (0, 1))
def _date(args: list[Any]) -> Transform:
    fmt = str(args[0]) if args else None

    def to_date(value: Any) -> Any:
        if isinstance(value, date):
            return value.isoformat()
        text = _text(value).strip()
        try:
            parsed = datetime.strptime(text, fmt) if fmt else None  # noqa: DTZ007 - a day has no zone
            day = parsed.date() if parsed else date.fromisoformat(text[:10])
        except ValueError:
            raise TransformError("not a date this mapping can read") from None
        return day.isoformat()

    return _none_safe(to_date)


THOUSANDS = re.compile(r"^[+-]?\d{1,3}(,\d{3})+(\.\d+)?$")


def _number_text(value: Any) -> str:
    """`1,234.5` → `1234.5`; a comma anywhere else (a decimal comma) is not guessed at."""
    text = _text(value).strip()
    return text.replace(",", "") if THOUSANDS.match(text) else text


def to_int(value: Any) -> int:
    """Whole numbers, also from text such as ' 42 ' or '42.0'."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    text = _number_text(value)
    try:
        return int(text)  # exact, where a float would round beyond 2**53
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        raise TransformError("not a whole number") from None
    if not number.is_integer():
        raise TransformError("not a whole number")
    return int(number)


def to_float(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:  # an integer of more than 308 digits
            raise TransformError("not a finite number") from None
    else:
        try:
            number = float(_number_text(value))
        except ValueError:
            raise TransformError("not a number") from None
    # "nan" and "inf" parse as floats, but JSON (and so the store) has no place for them.
    if not math.isfinite(number):
        raise TransformError("not a finite number")
    return number


def to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    word = _text(value).strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise TransformError("not a yes/no value")


transform("to_int")(_plain(_none_safe(to_int)))
transform("to_float")(_plain(_none_safe(to_float)))
transform("to_bool")(_plain(_none_safe(to_bool)))
transform("to_str")(_plain(_none_safe(_text)))


@transform("default", (1, 1))
def _default(args: list[Any]) -> Transform:
    fallback = args[0]
    return lambda v: fallback if v is None or v == "" else v


@transform("split", (0, 1))
def _split(args: list[Any]) -> Transform:
    separator = str(args[0]) if args else ","

    def split(value: Any) -> Any:
        if isinstance(value, list):
            return value
        parts = [part.strip() for part in _text(value).split(separator)]
        return [part for part in parts if part] or None

    return _none_safe(split)


@transform("hash", (0, 1))
def _hash(args: list[Any]) -> Transform:
    algorithm = str(args[0]) if args else "sha256"
    if algorithm not in {"sha256", "sha1", "md5"}:
        raise ValueError(f"unknown hash {algorithm!r}; use sha256, sha1 or md5")

    def digest(value: Any) -> str:
        try:
            data = _text(value).encode()
        except UnicodeEncodeError:  # a lone surrogate, as a JSON "\ud800" decodes to
            raise TransformError("text that is not valid Unicode") from None
        return hashlib.new(algorithm, data).hexdigest()

    return _none_safe(digest)


def value_map(table: Mapping[str, Any], keep_unmapped: bool = True) -> Transform:
    """Map values through `table` (keys compared as text); unmapped values pass or become None."""
    lookup = {str(key): mapped for key, mapped in table.items()}

    def mapped(value: Any) -> Any:
        key = _text(value)
        if key in lookup:
            return lookup[key]
        return value if keep_unmapped else None

    return _none_safe(mapped)


@transform("map", (1, 1))
def _map(args: list[Any]) -> Transform:
    if not isinstance(args[0], dict):
        raise TypeError('map takes one table argument, e.g. map({"a": "b"})')
    return value_map(args[0])
