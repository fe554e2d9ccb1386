"""The canonical JSON text of a value: what the store keeps and what content hashes are taken of.

The text is exactly `json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)`,
because hashes already stored were taken of it: a different text for the same value would
make every record look changed once. orjson writes that same text more than ten times faster
for what nearly every payload is (ASCII text, whole numbers, ordinary floats), so it goes
first, and any output where the two could differ is written by `json` instead.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import orjson

_OPTIONS = (
    orjson.OPT_SORT_KEYS
    # These go to `json` (through the error below), which writes them with str().
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_SUBCLASS
)


def canonical_json(value: Any) -> str:
    """Sorted keys, no spaces, ASCII only; non-finite floats are written as null.

    For what payloads and traits are made of (dicts, lists, text, numbers, booleans, null:
    what JSON decoders, CSV readers and transforms give) and the types `json` writes by str().
    An `Enum` member that is not also text or a number would be written by its value, where
    `json` writes its str(): no source or transform gives one.
    """
    try:
        data = orjson.dumps(value, option=_OPTIONS)
    except TypeError:  # a type orjson leaves alone, a key that is not text, a 65-bit integer
        return _slow(value)
    # orjson writes non-ASCII characters and DEL as they are where `json` escapes them, and
    # small floats as 1e-7 or 0.00001 where `json` writes 1e-07 and 1e-05.
    if not data.isascii() or b"\x7f" in data or b"e-" in data or b"0.0000" in data:
        return _slow(value)
    return data.decode()


def _slow(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    if "NaN" in text or "Infinity" in text:
        # `json` writes NaN, which is not JSON and which PostgreSQL refuses; orjson writes null.
        text = json.dumps(_finite(value), sort_keys=True, separators=(",", ":"), default=str)
    return text


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_REPLACEMENT = "\ufffd"


def unstorable(text: str) -> bool:
    """Whether `text` holds what a store cannot keep as text: a NUL (PostgreSQL refuses it) or
    a lone surrogate, which is not Unicode (JSON's "\\ud800", from an emoji cut in two, decodes
    to one) and which no UTF-8 encoder takes."""
    if text.isascii():  # O(1): CPython keeps the flag
        return "\x00" in text
    return _UNSTORABLE.search(text) is not None


def first_unstorable(text: str) -> str | None:
    """The first character of `text` that makes it `unstorable`, None when there is none."""
    found = _UNSTORABLE.search(text)
    return None if found is None else found.group()


def storable(value: Any) -> Any:
    """`value` with NUL characters dropped and lone surrogates replaced by U+FFFD, as a
    browser's UTF-8 encoder does, in its text, keys and nested values."""
    if isinstance(value, str):
        return _UNSTORABLE.sub(lambda found: "" if found[0] == "\x00" else _REPLACEMENT, value)
    if isinstance(value, dict):
        return {storable(key): storable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [storable(item) for item in value]
    return value
