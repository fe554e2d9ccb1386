"""Profile traits: survivorship across a profile's records, and computed traits.

Survivorship rules (mappings/profile.toml, `[traits.NAME] rule = ...`; `latest` when unset):
- latest: the non-null value of the record with the newest source timestamp
- first_non_null: the non-null value of the record with the oldest source timestamp
- source_priority: the first source in `sources` that has a value (newest within a source)
- max / min: the largest / smallest value
- union: every distinct value, as a sorted list
Ties are broken by record id, never by arrival order, so traits are reproducible.
Each trait remembers which record it came from (see `syncd explain`).
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from syncd.mapping.model import ComputedTrait, ProfileMapping, TraitRule
from syncd.mapping.transforms import format_timestamp
from syncd.store.db import Bulk
from syncd.timeutil import utcnow

DEFAULT_RULE = TraitRule()
EVENT_PROFILES = (
    "JOIN record_identifier ri ON ri.identifier_id = ei.identifier_id "
    "JOIN source_record sr ON sr.id = ri.record_id "
)
"""From `event_identifier ei` to `source_record sr`: an event belongs to the profiles of the
records that carry one of its identifiers, so events never need rewriting when people merge."""
PROFILE_CHUNK = 400


@dataclass(frozen=True, slots=True)
class RecordView:
    """What survivorship needs of one record."""

    id: int
    source: str
    stream: str
    updated_at: str | None
    traits: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class EventView:
    """What computed traits need of one event."""

    name: str
    stream: str
    occurred_at: str
    properties: Mapping[str, Any]


def _sortable(value: Any) -> tuple[int, Any]:
    """Order numbers with numbers and text with text, so max/min never compare across types."""
    if isinstance(value, bool):
        return (0, int(value))
    if isinstance(value, int | float):
        return (1, value)
    return (2, str(value))


def survive(rule: TraitRule, candidates: Sequence[tuple[RecordView, Any]]) -> tuple[Any, int]:
    """The surviving value of one trait, and the id of the record it came from.

    `candidates` are (record, non-null value) pairs, oldest first.
    """
    if rule.rule == "latest":
        record, value = candidates[-1]
    elif rule.rule == "first_non_null":
        record, value = candidates[0]
    elif rule.rule == "source_priority":
        rank = {source: index for index, source in enumerate(rule.sources)}
        record, value = min(reversed(candidates), key=lambda c: rank.get(c[0].source, len(rank)))
    elif rule.rule in {"max", "min"}:
        pick = max if rule.rule == "max" else min
        record, value = pick(candidates, key=lambda c: (_sortable(c[1]), c[0].id))
    else:
        values: set[Any] = set()
        for _, item in candidates:
            values.update(item if isinstance(item, list) else [item])
        return sorted(values, key=_sortable), candidates[-1][0].id
    return value, record.id


def merge_traits(
    rules: ProfileMapping, records: Iterable[RecordView]
) -> tuple[dict[str, Any], dict[str, int]]:
    """Profile traits from its records, and for each trait the record it came from."""
    ordered = sorted(records, key=lambda r: (r.updated_at or "", r.id))
    candidates: dict[str, list[tuple[RecordView, Any]]] = defaultdict(list)
    for record in ordered:
        for name, value in record.traits.items():
            if value is not None:
                candidates[name].append((record, value))
    traits: dict[str, Any] = {}
    origin: dict[str, int] = {}
    for name in sorted(candidates):
        traits[name], origin[name] = survive(rules.traits.get(name, DEFAULT_RULE), candidates[name])
    return traits, origin


def _aggregate(spec: ComputedTrait, values: list[Any]) -> Any:
    if spec.op == "count":
        return len(values)
    present = [v for v in values if v is not None]
    if spec.op == "sum":
        return sum(v for v in present if isinstance(v, int | float) and not isinstance(v, bool))
    if spec.op in {"min", "first_seen"}:
        return min(present, key=_sortable) if present else None
    if spec.op in {"max", "last_seen"}:
        return max(present, key=_sortable) if present else None
    flat: set[Any] = set()
    for value in present:
        flat.update(value if isinstance(value, list) else [value])
    return sorted(flat, key=_sortable)


def compute(
    spec: ComputedTrait, records: Sequence[RecordView], events: Sequence[EventView], now: str
) -> Any:
    """One computed trait of a profile."""
    if spec.over == "records":
        chosen = [r for r in records if spec.stream in (None, r.stream)]
        if spec.op == "sources":
            return sorted({r.source for r in chosen})
        if spec.op in {"first_seen", "last_seen"}:
            return _aggregate(spec, [r.updated_at for r in chosen])
        if spec.op == "count":
            return len(chosen)
        return _aggregate(spec, [r.traits.get(spec.property or "") for r in chosen])
    since = None
    if spec.within_days:
        since = format_timestamp(datetime.fromisoformat(now) - timedelta(days=spec.within_days))
    picked = [
        e
        for e in events
        if spec.event in (None, e.name)
        and spec.stream in (None, e.stream)
        and (since is None or e.occurred_at >= since)
    ]
    if spec.op in {"first_seen", "last_seen"}:
        return _aggregate(spec, [e.occurred_at for e in picked])
    if spec.op == "count":
        return len(picked)
    if spec.op == "sources":
        return sorted({e.stream for e in picked})
    return _aggregate(spec, [e.properties.get(spec.property or "") for e in picked])


def traits_hash(traits: Mapping[str, Any]) -> str:
    return hashlib.sha1(  # a change detector, not a security boundary
        json.dumps(traits, sort_keys=True, separators=(",", ":"), default=str).encode(),
        usedforsecurity=False,
    ).hexdigest()


def _load_records(bulk: Bulk, profiles: Sequence[str]) -> dict[str, list[RecordView]]:
    grouped: dict[str, list[RecordView]] = defaultdict(list)
    rows = bulk.select_in(
        "SELECT profile_id, id, source, stream, updated_at, traits FROM source_record "
        f"WHERE profile_id IN ({{in}}) AND deleted = {bulk.false} AND node_kind = 'record'",
        profiles,
    )
    for profile, key, source, stream, updated_at, traits in rows:
        loaded = json.loads(traits) if isinstance(traits, str) else traits
        grouped[profile].append(RecordView(int(key), source, stream, updated_at, loaded))
    return grouped


def _load_events(bulk: Bulk, profiles: Sequence[str]) -> dict[str, list[EventView]]:
    grouped: dict[str, dict[int, EventView]] = defaultdict(dict)
    rows = bulk.select_in(
        "SELECT DISTINCT sr.profile_id, e.id, e.name, e.stream, e.occurred_at, e.properties "
        "FROM source_record sr "
        "JOIN record_identifier ri ON ri.record_id = sr.id "
        "JOIN event_identifier ei ON ei.identifier_id = ri.identifier_id "
        "JOIN event e ON e.id = ei.event_id "
        "WHERE sr.profile_id IN ({in})",
        profiles,
    )
    for profile, key, name, stream, occurred_at, properties in rows:
        loaded = json.loads(properties) if isinstance(properties, str) else properties
        grouped[profile][int(key)] = EventView(name, stream, occurred_at, loaded)
    return {profile: list(events.values()) for profile, events in grouped.items()}


def pending_events(bulk: Bulk) -> tuple[set[str], list[int]]:
    """Events committed since the last refresh, and the profiles they belong to.

    This is the hook for real-time work: each committed batch of events marks exactly the
    profiles it touched, without a scan of the store.
    """
    events = [
        int(row[0])
        for row in bulk.connection.exec_driver_sql(
            f"SELECT id FROM event WHERE needs_profile = {bulk.true}"
        )
    ]
    profiles = {
        row[0]
        for row in bulk.select_in(
            "SELECT DISTINCT sr.profile_id FROM event_identifier ei "
            + EVENT_PROFILES
            + "WHERE ei.event_id IN ({in}) AND sr.profile_id IS NOT NULL",
            events,
        )
    }
    return profiles, events


def leaving_windows(bulk: Bulk, rules: ProfileMapping, since: str | None) -> set[str]:
    """Profiles with an event that left a `within_days` window since `since` (the last run).

    A count over the last 7 days changes when an event enters the window (a new event: its
    profile is pending anyway) or leaves it as time passes: those are found here, so idle
    profiles do not keep stale counts.
    """
    days = {spec.within_days for spec in rules.computed.values() if spec.within_days}
    if not days or since is None:
        return set()
    now = utcnow()
    then = datetime.fromisoformat(since)
    profiles: set[str] = set()
    for window in days:
        rows = bulk.connection.exec_driver_sql(
            bulk.sql(
                "SELECT DISTINCT sr.profile_id FROM event e "
                "JOIN event_identifier ei ON ei.event_id = e.id "
                + EVENT_PROFILES
                + "WHERE e.occurred_at >= ? AND e.occurred_at < ? AND sr.profile_id IS NOT NULL"
            ),
            (
                format_timestamp(then - timedelta(days=window)),
                format_timestamp(now - timedelta(days=window)),
            ),
        )
        profiles.update(row[0] for row in rows)
    return profiles


def clear_pending_events(bulk: Bulk, events: list[int]) -> None:
    bulk.execute_in(f"UPDATE event SET needs_profile = {bulk.false} WHERE id IN ({{in}})", events)


def refresh_profiles(
    bulk: Bulk, rules: ProfileMapping, touched: set[str], removed: set[str], run_id: str
) -> tuple[int, int]:
    """Recompute the touched profiles, drop removed ones; returns (written, deleted)."""
    now = format_timestamp(utcnow())
    bulk.execute_in("DELETE FROM profile WHERE id IN ({in})", sorted(removed - touched))
    written = 0
    ordered = sorted(touched)
    needs_events = bool(rules.computed) and any(c.over == "events" for c in rules.computed.values())
    for start in range(0, len(ordered), PROFILE_CHUNK):
        chunk = ordered[start : start + PROFILE_CHUNK]
        records = _load_records(bulk, chunk)
        events = _load_events(bulk, chunk) if needs_events else {}
        stored = {
            row[0]: (row[1], int(row[2]))
            for row in bulk.select_in(
                "SELECT id, traits_hash, record_count FROM profile WHERE id IN ({in})", chunk
            )
        }
        rows = []
        for profile in chunk:
            members = records.get(profile, [])
            traits, _ = merge_traits(rules, members)
            for name, spec in rules.computed.items():
                traits[name] = compute(spec, members, events.get(profile, []), now)
            digest = traits_hash(traits)
            if stored.get(profile) == (digest, len(members)):
                continue
            rows.append((profile, Bulk.encode(traits), digest, len(members), now, run_id))
        bulk.upsert(
            "profile",
            ("id", "traits", "traits_hash", "record_count", "updated_at", "run_id"),
            rows,
            ("id",),
        )
        written += len(rows)
    return written, len(removed - touched)
