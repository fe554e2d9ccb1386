"""normalize_phone answers exactly what phonenumbers answers, whichever path it takes."""

from __future__ import annotations

import phonenumbers
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from syncd.mapping import phones
from syncd.mapping.transforms import TransformError, normalize_phone

REGIONS = ["US", "GB", "FR", "DE", "IT", "AU", "CA", "BR", "IN"]
COUNTRY_CODES = ["1", "44", "33", "49", "61", "81", "91", "39", "7", "52", "55"]
SEPARATORS = ["", "", "", " ", ".", "-", "(", ")", "/"]
NUMBER_KINDS = [
    phonenumbers.PhoneNumberType.FIXED_LINE,
    phonenumbers.PhoneNumberType.MOBILE,
    phonenumbers.PhoneNumberType.TOLL_FREE,
    phonenumbers.PhoneNumberType.PREMIUM_RATE,
    phonenumbers.PhoneNumberType.VOIP,
    phonenumbers.PhoneNumberType.UAN,
]
NUMBER_STYLES = [
    phonenumbers.PhoneNumberFormat.NATIONAL,
    phonenumbers.PhoneNumberFormat.INTERNATIONAL,
    phonenumbers.PhoneNumberFormat.E164,
]
EXAMPLES = 300


def reference(raw: str, region: str) -> str:
    """phonenumbers itself, with the error messages normalize_phone uses."""
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        return "error: not a phone number"
    if not phonenumbers.is_valid_number(number):
        return "error: not a valid phone number"
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def outcome(raw: str, region: str) -> str:
    try:
        return normalize_phone(raw, region)
    except TransformError as error:
        return f"error: {error}"


digit_strings = st.text(alphabet="0123456789", max_size=16)


@st.composite
def punctuated(draw: st.DrawFn, text: str) -> str:
    """`text` with random separators before, between and after its characters."""
    pieces = [draw(st.sampled_from(SEPARATORS))]
    for char in text:
        pieces += [char, draw(st.sampled_from(SEPARATORS))]
    return "".join(pieces)


@st.composite
def any_digits(draw: st.DrawFn) -> str:
    plus = draw(st.sampled_from(["", "+"]))
    return draw(punctuated(plus + draw(digit_strings)))


@st.composite
def us_shaped(draw: st.DrawFn) -> str:
    area = draw(st.integers(0, 999))
    exchange = draw(st.integers(0, 999))
    line = draw(st.integers(0, 9999))
    form = draw(
        st.sampled_from(
            [
                "({a}) {e}-{n}",
                "{a}.{e}.{n}",
                "+1 {a} {e} {n}",
                "{a}{e}{n}",
                "1-{a}-{e}-{n}",
                "1 ({a}) {e} {n}",
                "011 1 {a} {e} {n}",
            ]
        )
    )
    return form.format(a=f"{area:03}", e=f"{exchange:03}", n=f"{line:04}")


@st.composite
def with_country_code(draw: st.DrawFn) -> str:
    code = draw(st.sampled_from(COUNTRY_CODES))
    lead = draw(st.sampled_from(["+", "+", "00", "011", "0011", "810", "", "+0"]))
    trunk = draw(st.sampled_from(["", "", "0", "1", "8", "(0)"]))
    national = draw(st.text(alphabet="0123456789", min_size=0, max_size=13))
    return draw(punctuated(lead + code + trunk + national))


@st.composite
def from_examples(draw: st.DrawFn) -> str:
    """phonenumbers' own example numbers, written as people do, sometimes with a digit changed."""
    home = draw(st.sampled_from([*REGIONS, "RU", "KZ", "JP", "MX", "AG", "JM", "GG"]))
    kind = draw(st.sampled_from(NUMBER_KINDS))
    number = phonenumbers.example_number_for_type(home, kind)
    assume(number is not None)
    style = draw(st.sampled_from(NUMBER_STYLES))
    text = str(phonenumbers.format_number(number, style))
    position = draw(st.integers(0, len(text)))
    if draw(st.booleans()) and text[position : position + 1].isdigit():
        text = text[:position] + draw(st.sampled_from("0123456789")) + text[position + 1 :]
    return text


@settings(max_examples=EXAMPLES)
@given(any_digits(), st.sampled_from(REGIONS))
def test_random_digits_match_phonenumbers(raw: str, region: str) -> None:
    assert outcome(raw, region) == reference(raw, region)


@settings(max_examples=EXAMPLES)
@given(us_shaped(), st.sampled_from(REGIONS))
def test_us_shaped_numbers_match_phonenumbers(raw: str, region: str) -> None:
    assert outcome(raw, region) == reference(raw, region)


@settings(max_examples=EXAMPLES)
@given(with_country_code(), st.sampled_from(REGIONS))
def test_numbers_with_a_country_code_match_phonenumbers(raw: str, region: str) -> None:
    assert outcome(raw, region) == reference(raw, region)


@settings(max_examples=EXAMPLES)
@given(st.text(alphabet="0123456789+ -.()/\tx#,;:a", max_size=20), st.sampled_from(REGIONS))
def test_any_text_matches_phonenumbers(raw: str, region: str) -> None:
    assert outcome(raw, region) == reference(raw, region)


@settings(max_examples=EXAMPLES)
@given(from_examples(), st.sampled_from(REGIONS))
def test_example_numbers_match_phonenumbers(raw: str, region: str) -> None:
    assert outcome(raw, region) == reference(raw, region)


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        # Two digits are a number only when nothing separates them.
        ("12", "US", "error: not a valid phone number"),
        ("1-2", "US", "error: not a phone number"),
        # A tab is not punctuation to phonenumbers.
        ("415\t555\t0134", "US", "error: not a phone number"),
        ("1 (415) 555-0134 /", "US", "+14155550134"),
        # The home country code typed without `+`; Canada then reads the rest with US rules.
        ("1 415 555 0134", "CA", "+14155550134"),
        ("1 415 555 0134", "GB", "error: not a valid phone number"),
        ("+1 1 415 555 0134", "US", "+14155550134"),
        ("33 1 42 68 53 00", "FR", "+33142685300"),
        # International call prefixes, and a 0 after one, which no country code starts with.
        ("011 44 20 7946 0958", "US", "+442079460958"),
        ("011 0 44 20 7946 0958", "US", "error: not a valid phone number"),
        ("0011 61 2 1234 5678", "AU", "+61212345678"),
        ("01144", "US", "error: not a phone number"),
        # After `+` an unknown country code gets a second reading without the `+`.
        ("+0044 20 7946 0958", "GB", "+442079460958"),
        ("+28 1234 5678", "US", "error: not a phone number"),
        # National prefixes: stripped, rewritten (Antigua's local numbers), or with a carrier.
        ("+44 (0) 20 7946 0958", "US", "+442079460958"),
        ("0142685300", "FR", "+33142685300"),
        ("460-1234", "AG", "+12684601234"),
        ("0 15 11 91234 5678", "BR", "+5511912345678"),
        ("8 912 345 6789", "RU", "+79123456789"),
        # Italian numbers keep their leading zero.
        ("06 6982 1234", "IT", "+390669821234"),
        ("+39 06 6982 1234", "US", "+390669821234"),
        # Country codes shared by several regions: leading digits or patterns pick one.
        ("+7 717 212 3456", "US", "+77172123456"),
        ("+1 268 460 1234", "US", "+12684601234"),
        ("+1 555 555 0134", "US", "error: not a valid phone number"),
        ("+800 1234 5678", "US", "+80012345678"),
        ("4155550134555550134", "US", "error: not a phone number"),
        ("+123", "US", "error: not a valid phone number"),
    ],
)
def test_tricky_cases(raw: str, region: str, expected: str) -> None:
    assert reference(raw, region) == expected
    assert outcome(raw, region) == expected


def test_common_forms_do_not_reach_phonenumbers_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(raw: str, region: str) -> str:
        raise AssertionError(f"{raw!r} took the slow path")

    monkeypatch.setattr(phones, "_reference_cached", refuse)
    for raw in [
        "(415) 555-0199",
        "415.555.0199",
        "+1 415 555 0199",
        "4155550199",
        "1-415-555-0199",
    ]:
        assert normalize_phone(raw, "US") == "+14155550199"
    assert normalize_phone("+44 20 7946 0000", "US") == "+442079460000"
