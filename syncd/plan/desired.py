"""Desired states: what one profile should look like at one destination target."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from syncd.mapping.destinations import CompiledDestination


def state_hash(match_value: str, fields: Mapping[str, Any]) -> str:
    """A change detector over the match value and fields (sorted-key JSON)."""
    text = json.dumps(
        {"match": match_value, "fields": fields},
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()


@dataclass(frozen=True, slots=True)
class DesiredState:
    """One profile's desired state at one target, and its hash."""

    profile_id: str
    match_value: str
    fields: Mapping[str, Any]
    hash: str


def desired_state(
    mapping: CompiledDestination,
    profile_id: str,
    traits: Mapping[str, Any],
    identifier: str | None,
) -> DesiredState | None:
    """The desired state, or None when the profile has no match value.

    `identifier` is the profile's value of the mapping's identifier kind, when it matches by
    one. Raises FieldError when a field's expression fails on these traits.
    """
    raw = traits.get(mapping.match_trait) if mapping.match_trait else identifier
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    match_value = raw.strip() if isinstance(raw, str) else str(raw)
    fields = mapping.fields(traits)
    return DesiredState(profile_id, match_value, fields, state_hash(match_value, fields))
