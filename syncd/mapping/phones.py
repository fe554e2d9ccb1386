"""Phone numbers to E.164 text, with exactly the answers of phonenumbers, several times faster.

`phonenumbers.parse` followed by `is_valid_number` costs some 20 µs a number in pure Python:
digits normalized one character at a time, then a dozen metadata patterns looked up and tried
one by one (for an invalid number with country code 1, those of every NANP region in turn).
Nearly all real inputs are digits and common punctuation; for those the same rules are applied
here to the same metadata, compiled once per country code. Any other input (letters,
extensions, other separators, fewer than three digits) goes to phonenumbers itself, so what it
answers stays the definition of correct.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Literal

import phonenumbers
from phonenumbers.phonemetadata import PhoneMetadata, PhoneNumberDesc

NOT_A_NUMBER = "not a phone number"
NOT_VALID = "not a valid phone number"

# Only these separators are safe to drop up front: phonenumbers reads each of them as
# punctuation anywhere between digits, never as the start of an extension or a second number.
_SEPARATORS = str.maketrans("", "", " .-()/")
# With three digits or more the separators cannot decide viability; with two, phonenumbers
# accepts them only unseparated, so those go the slow way.
_DIGITS_ONLY = re.compile(r"\+?[0-9]{3,}")
_MAX_INPUT_LENGTH = 250
_MIN_NSN_LENGTH = 2
_MAX_NSN_LENGTH = 17
_MAX_COUNTRY_CODE_LENGTH = 3
_NEVER = "(?!)"

# The number kinds phonenumbers' type lookup tries (a number is valid when it is of one); the
# mobile pattern is only consulted when it differs from the fixed-line one.
_KINDS = (
    "premium_rate",
    "toll_free",
    "shared_cost",
    "voip",
    "personal_number",
    "pager",
    "uan",
    "voicemail",
    "fixed_line",
)


_Verdict = Literal["possible", "too short", "too long", "local only", "invalid length"]


class PhoneError(ValueError):
    """Not a valid phone number; the message is phonenumbers' verdict in the words of syncd."""


@dataclass(frozen=True, slots=True)
class _Territory:
    """The parts of one region's metadata that parsing and validation read, compiled."""

    region: str
    country_code: int
    idd: re.Pattern[str] | None
    national_prefix: re.Pattern[str] | None
    transform_rule: str | None
    general: re.Pattern[str]
    lengths: tuple[int, ...]
    local_lengths: tuple[int, ...]
    leading_digits: re.Pattern[str] | None
    # National significant number length -> (general pattern, union of the kind patterns that
    # allow that length); a length absent here has no known kind.
    kinds_by_length: dict[int, tuple[re.Pattern[str], re.Pattern[str]]]


def to_e164(raw: str, region: str) -> str:
    """The E.164 text phonenumbers gives for `raw` read in `region`; raises PhoneError if none."""
    compact = raw.translate(_SEPARATORS)
    if (
        len(raw) <= _MAX_INPUT_LENGTH
        and region in phonenumbers.SUPPORTED_REGIONS
        and _DIGITS_ONLY.fullmatch(compact)
    ):
        return _digits_to_e164(compact, region)
    return _reference_cached(raw, region)


def reference_e164(raw: str, region: str) -> str:
    """phonenumbers itself: what the fast path must answer, and the way for what it does not
    take."""
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        raise PhoneError(NOT_A_NUMBER) from None
    if not phonenumbers.is_valid_number(number):
        raise PhoneError(NOT_VALID)
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


_reference_cached = lru_cache(maxsize=262_144)(reference_e164)


# Mappings read a phone twice per record (as a field and as an identifier), so this pays off
# even when every person is distinct.
@lru_cache(maxsize=262_144)
def _digits_to_e164(compact: str, region: str) -> str:
    """`compact` is ASCII digits, at least three, after an optional `+`."""
    country_code, national = _split(compact, _home(region))
    if not _is_valid(country_code, national):
        raise PhoneError(NOT_VALID)
    # Leading zeros survive phonenumbers' round trip through an integer (italian_leading_zero
    # and number_of_leading_zeros), so the digits are already the national significant number.
    return f"+{country_code}{national}"


def _split(compact: str, home: _Territory) -> tuple[int, str]:
    """(country code, national significant number) as phonenumbers.parse derives them."""
    plus = compact[0] == "+"
    digits = compact[1:] if plus else compact
    country_code, national = _country_code(digits, plus, home)
    if country_code:
        territory = _territories(country_code)[0]
    else:
        country_code, national, territory = home.country_code, digits, home
    if len(national) < _MIN_NSN_LENGTH:
        raise PhoneError(NOT_A_NUMBER)
    stripped = _strip_national_prefix(national, territory)
    # The prefix stays when what would remain is too short or of a length the region only
    # dials locally or never uses: the number may be a short one that starts like a prefix.
    if stripped != national and _length_verdict(stripped, territory) in {"possible", "too long"}:
        national = stripped
    if len(national) > _MAX_NSN_LENGTH:
        raise PhoneError(NOT_A_NUMBER)
    return country_code, national


def _country_code(digits: str, plus: bool, home: _Territory) -> tuple[int, str]:
    """The country code written in the number and the digits after it, or (0, "") if none."""
    if plus:
        country_code, rest = _leading_country_code(digits)
        if country_code:
            return country_code, rest
        # phonenumbers then reads the digits again as if typed without the `+`; as no country
        # code starts them, only an international prefix can still yield one.
    after_idd = _after_international_prefix(digits, home)
    if after_idd is not None:
        country_code, rest = _leading_country_code(after_idd)
        if country_code:
            return country_code, rest
        raise PhoneError(NOT_A_NUMBER)
    if plus:
        raise PhoneError(NOT_A_NUMBER)
    return _home_country_code(digits, home)


def _leading_country_code(digits: str) -> tuple[int, str]:
    if len(digits) <= _MIN_NSN_LENGTH:
        raise PhoneError(NOT_A_NUMBER)
    if digits[0] == "0":
        return 0, digits
    for size in range(1, min(len(digits), _MAX_COUNTRY_CODE_LENGTH) + 1):
        country_code = int(digits[:size])
        if country_code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
            return country_code, digits[size:]
    return 0, digits


def _after_international_prefix(digits: str, home: _Territory) -> str | None:
    """The digits after the home region's international call prefix, None if it is absent."""
    match = home.idd.match(digits) if home.idd is not None else None
    if match is None:
        return None
    rest = digits[match.end() :]
    # Country codes never start with 0, so the prefix is then taken as part of the number.
    return None if rest.startswith("0") else rest


def _home_country_code(digits: str, home: _Territory) -> tuple[int, str]:
    """A number typed with the home country code but no `+` (`1 415 ...` in the US)."""
    code = str(home.country_code)
    if not digits.startswith(code):
        return 0, ""
    candidate = _strip_national_prefix(digits[len(code) :], home)
    if (
        not home.general.fullmatch(digits) and home.general.fullmatch(candidate)
    ) or _length_verdict(digits, home) == "too long":
        return home.country_code, candidate
    return 0, ""


def _strip_national_prefix(number: str, territory: _Territory) -> str:
    """The number without its national prefix or carrier code, when phonenumbers removes it."""
    prefix = territory.national_prefix
    if prefix is None or not number:
        return number
    match = prefix.match(number)
    if match is None:
        return number
    groups = match.groups()
    if territory.transform_rule and groups[-1] is not None:
        result = prefix.sub(territory.transform_rule, number, count=1)
    else:
        result = number[match.end() :]
    # Kept as typed when only the prefixed form fits the region's numbering plan.
    if territory.general.fullmatch(number) and not territory.general.fullmatch(result):
        return number
    return result


def _length_verdict(number: str, territory: _Territory) -> _Verdict:
    length = len(number)
    lengths = territory.lengths
    if length in territory.local_lengths:
        return "local only"
    if lengths[0] == length:
        return "possible"
    if lengths[0] > length:
        return "too short"
    if lengths[-1] < length:
        return "too long"
    return "possible" if length in lengths[1:] else "invalid length"


def _is_valid(country_code: int, national: str) -> bool:
    """is_valid_number: the region region_code_for_number picks must know the number's kind."""
    territories = _territories(country_code)
    if len(territories) == 1:
        return _has_kind(national, territories[0])
    for territory in territories:
        if territory.leading_digits is not None:
            if territory.leading_digits.match(national):
                return _has_kind(national, territory)
        elif _has_kind(national, territory):
            return True
    return False


def _has_kind(national: str, territory: _Territory) -> bool:
    patterns = territory.kinds_by_length.get(len(national))
    return (
        patterns is not None
        and patterns[0].fullmatch(national) is not None
        and patterns[1].fullmatch(national) is not None
    )


@cache
def _home(region: str) -> _Territory:
    territories = _territories(phonenumbers.country_code_for_region(region))
    return next(territory for territory in territories if territory.region == region)


@cache
def _territories(country_code: int) -> tuple[_Territory, ...]:
    """The regions of a country code in phonenumbers' order, the main one first."""
    return tuple(
        _compile(region, PhoneMetadata.metadata_for_region_or_calling_code(country_code, region))
        for region in phonenumbers.COUNTRY_CODE_TO_REGION_CODE[country_code]
    )


def _compile(region: str, metadata: PhoneMetadata | None) -> _Territory:
    general = metadata.general_desc if metadata is not None else None
    if metadata is None or metadata.country_code is None or general is None:
        raise LookupError(f"phonenumbers has no numbering plan for region {region}")
    # phonenumbers treats a missing pattern as one that matches nothing.
    general_pattern = re.compile(general.national_number_pattern or _NEVER)
    return _Territory(
        region=region,
        country_code=metadata.country_code,
        idd=_pattern(metadata.international_prefix),
        national_prefix=_pattern(metadata.national_prefix_for_parsing or None),
        transform_rule=metadata.national_prefix_transform_rule,
        general=general_pattern,
        lengths=tuple(general.possible_length),
        local_lengths=tuple(general.possible_length_local_only),
        leading_digits=_pattern(metadata.leading_digits),
        kinds_by_length=_kinds_by_length(metadata, general, general_pattern),
    )


def _pattern(source: str | None) -> re.Pattern[str] | None:
    return None if source is None else re.compile(source)


def _kinds_by_length(
    metadata: PhoneMetadata, general: PhoneNumberDesc, general_pattern: re.Pattern[str]
) -> dict[int, tuple[re.Pattern[str], re.Pattern[str]]]:
    kinds: list[PhoneNumberDesc | None] = [getattr(metadata, name) for name in _KINDS]
    if not metadata.same_mobile_and_fixed_line_pattern:
        kinds.append(metadata.mobile)
    table = {}
    for length in range(_MIN_NSN_LENGTH, _MAX_NSN_LENGTH + 1):
        if general.possible_length and length not in general.possible_length:
            continue
        sources = [source for desc in kinds if (source := _kind_pattern(desc, length))]
        if sources:
            union = re.compile("|".join(f"(?:{source})" for source in sources))
            table[length] = (general_pattern, union)
    return table


def _kind_pattern(desc: PhoneNumberDesc | None, length: int) -> str | None:
    """The pattern of a number kind for numbers of `length` digits, None if it has none."""
    if desc is None or (desc.possible_length and length not in desc.possible_length):
        return None
    return desc.national_number_pattern or None
