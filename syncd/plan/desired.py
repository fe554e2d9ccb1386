"""Desired states: what one profile should look like at one destination target."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from syncd.connector import MEMBER
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


def _state(profile_id: str, match_value: str, fields: Mapping[str, Any]) -> DesiredState:
    return DesiredState(profile_id, match_value, fields, state_hash(match_value, fields))


def match_value(
    mapping: CompiledDestination, traits: Mapping[str, Any], identifier: str | None
) -> str | None:
    """The profile's match value, or None when it has none.

    `identifier` is the profile's value of the mapping's identifier kind, when it matches by
    one.
    """
    raw = traits.get(mapping.match_trait) if mapping.match_trait else identifier
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    return raw.strip() if isinstance(raw, str) else str(raw)


def desired_state(
    mapping: CompiledDestination,
    profile_id: str,
    traits: Mapping[str, Any],
    identifier: str | None,
) -> DesiredState | None:
    """The desired state, or None when the profile has no match value (see `match_value`).

    Raises FieldError when a field's expression fails on these traits.
    """
    match = match_value(mapping, traits, identifier)
    if match is None:
        return None
    return _state(profile_id, match, mapping.fields(traits))


def removal(profile_id: str, match: str) -> DesiredState:
    """The state of a profile taken out of a list target: its record there is no member."""
    return _state(profile_id, match, {MEMBER: False})
