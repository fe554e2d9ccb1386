"""Identifier normalization by kind, and the guard against values that would over-merge."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from syncd.config import IdentityConfig
from syncd.jsontext import unstorable
from syncd.mapping.transforms import TransformError, normalize_email, normalize_phone, trim_value
from syncd.pii import mask


def _normalizers(region: str) -> dict[str, Callable[[str], str]]:
    def phone(text: str) -> str:
        return normalize_phone(text, region)

    def email(text: str) -> str:
        value = normalize_email(text)
        assert value is not None  # text is never blank here
        return value

    return {
        "email": email,
        "phone": phone,
        "id": lambda text: text,
        "lower": str.lower,
        "none": lambda text: text,
    }


UNSTORABLE = "holds a NUL character or text that is not Unicode (a lone surrogate)"


class IdentifierNormalizer:
    """Turns raw identifier values into (kind, normalized value), refusing blocked values."""

    def __init__(self, identity: IdentityConfig) -> None:
        table = _normalizers(identity.default_region)
        self._by_kind = {kind: table[spec.normalize] for kind, spec in identity.kinds.items()}
        self._blocked = {value.strip().lower() for value in identity.blocked_values}

    def normalize(self, kind: str, raw: Any) -> str | None:
        """The normalized value, None when absent; raises TransformError when unusable."""
        text = trim_value(raw if isinstance(raw, str) else (None if raw is None else str(raw)))
        if text is None:
            return None
        if unstorable(text):
            raise TransformError(UNSTORABLE)
        value = self._by_kind[kind](text)
        if value.lower() in self._blocked or text.lower() in self._blocked:
            raise TransformError("blocked value")
        return value

    def add(
        self,
        kind: str,
        label: str,
        raw: Any,
        found: list[tuple[str, str]],
        notes: list[str],
    ) -> None:
        """Append the normalized identifier to `found`, or a masked note of why it was refused."""
        try:
            value = self.normalize(kind, raw)
        except TransformError as error:
            notes.append(f"identifier {label}: {error} ({mask(kind, str(raw).strip())})")
            return
        if value is not None and (kind, value) not in found:
            found.append((kind, value))
