"""The canonical JSON text is byte for byte what `json` writes, whichever encoder wrote it."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from syncd.jsontext import canonical_json, storable, unstorable


def reference(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
    | st.text(alphabet=st.characters(max_codepoint=127))
)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=5)
    ),
    max_leaves=20,
)


@settings(max_examples=400)
@given(values)
def test_the_text_is_what_json_writes(value: Any) -> None:
    assert canonical_json(value) == reference(value)


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_every_float_is_written_as_python_writes_it(number: float) -> None:
    assert canonical_json({"x": number}) == reference({"x": number})


@dataclass
class Visit:
    page: str


def test_what_orjson_would_write_its_own_way_is_written_by_str() -> None:
    moment = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    value = {"at": moment, "visit": Visit("/home"), "name": "Zoë", "tiny": 1e-7}
    assert canonical_json(value) == reference(value)
    assert canonical_json({3: "three", 1: "one"}) == reference({3: "three", 1: "one"})
    assert '"at":"2024-01-02 03:04:05+00:00"' in canonical_json(value)


def test_non_finite_floats_are_null_on_both_paths() -> None:
    # PostgreSQL refuses NaN in JSON; the fast path and the fallback (non-ASCII) agree.
    assert canonical_json({"x": math.nan}) == '{"x":null}'
    assert canonical_json({"x": math.inf, "name": "Zoë"}) == '{"name":"Zo\\u00eb","x":null}'


@given(
    st.text(
        alphabet=st.characters(exclude_categories=()) | st.sampled_from("\x00\ud800\udc00\udfff")
    )
)
def test_storable_text_is_utf8_without_nul_and_unchanged_when_it_was_already(text: str) -> None:
    kept = storable(text)
    kept.encode("utf-8")
    assert "\x00" not in kept
    assert unstorable(text) == (kept != text)
    assert not unstorable(kept)
