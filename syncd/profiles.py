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
import math
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence, Set
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from itertools import groupby, islice
from operator import attrgetter, itemgetter
from typing import Any, NamedTuple, Protocol, TypeVar

from syncd.jsontext import canonical_json
from syncd.mapping.model import ComputedTrait, ProfileMapping, TraitRule
from syncd.mapping.transforms import format_timestamp
from syncd.store.db import Bulk, to_json
from syncd.store.graph import identifiers_of_profiles
from syncd.store.marks import mark_profiles_as_of, profiles_as_of
from syncd.store.tables import decode_ids
from syncd.timeutil import utcnow

T = TypeVar("T")

EVENT_PROFILES = (
    "JOIN record_identifier ri ON ri.identifier_id = ei.identifier_id "
    "JOIN record_profile rp ON rp.record_id = ri.record_id "
)
"""From `event_identifier ei` to `record_profile rp`: an event belongs to the profiles of the
records that carry one of its identifiers, so events never need rewriting when people merge."""
PROFILE_CHUNK = 100
"""Profiles computed and upserted together. Few, so that the
garbage collector finds their objects already gone instead of promoting and rescanning them:
refreshing 1M records took 15 s in chunks of 500, 11-12 s in chunks of 100."""
DECODE_ROWS = 500
"""Rows whose traits one parse decodes."""
ONE_PASS_SHARE = {"sqlite": 0.75, "postgresql": 0.125}
"""The share of the stored profiles a refresh must touch for one ordered pass over every
record to cost less than looking the touched ones up (as measured on 100k records). Lookups
cost PostgreSQL a round trip and a long IN list to parse per few hundred profiles; SQLite,
in process, about what the pass spends on the records it skips."""
LIVE_TRAITS = (
    "CASE WHEN sr.deleted = {false} AND sr.node_kind = 'record' THEN CAST(sr.traits AS TEXT) END"
)
"""A node's traits, for live records only (links and deleted records just show the profile
is still held), and as text on every backend, so that one parse decodes a whole batch
(`_parsed`)."""
NODES = (
    "SELECT rp.profile_id, sr.id, sr.source, sr.stream, sr.updated_at, "
    + LIVE_TRAITS
    + ", p.traits_hash, p.record_count "
    "FROM record_profile rp JOIN source_record sr ON sr.id = rp.record_id "
    "LEFT JOIN profile p ON p.id = rp.profile_id {which} ORDER BY rp.profile_id"
)
"""The nodes of profiles, each profile's rows together, with the stored profile row."""


class RecordView(NamedTuple):
    """What survivorship needs of one record (a tuple: one is built per record loaded)."""

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
        return _distinct(item for _, item in candidates), candidates[-1][0].id
    return value, record.id


def _distinct(values: Iterable[Any]) -> list[Any]:
    """Every distinct value, a list's items one by one, in a fixed order. Values are told
    apart by their JSON text: an object or a list is a value too (a set refused them), and
    true, 1 and 1.0 stay three values (a set kept whichever came first)."""
    kept: dict[str, Any] = {}
    for value in values:
        for item in value if isinstance(value, list) else (value,):
            kept.setdefault(canonical_json(item), item)
    return [kept[text] for text in sorted(kept, key=lambda text: (*_sortable(kept[text]), text))]


def merge_traits(
    rules: ProfileMapping, records: Sequence[RecordView]
) -> tuple[dict[str, Any], dict[str, int]]:
    """Profile traits from its records, and for each trait the record it came from."""
    if len(records) == 1 and all(rule.rule != "union" for rule in rules.traits.values()):
        # Most profiles are one record: every rule but union keeps its values as they are.
        (record,) = records
        kept = {name: value for name, value in sorted(record.traits.items()) if value is not None}
        return kept, dict.fromkeys(kept, record.id)
    return _survivors(rules, records)


def _survivors(
    rules: ProfileMapping, records: Sequence[RecordView]
) -> tuple[dict[str, Any], dict[str, int]]:
    ordered = sorted(records, key=lambda r: (r.updated_at or "", r.id))
    found: dict[str, Any] = {}
    origin: dict[str, int] = {}
    # Oldest first, so `found` ends with each trait's newest value: what `latest`, the rule of
    # most traits, keeps, and for a lone record what every rule but union keeps.
    for record in ordered:
        for name, value in record.traits.items():
            if value is not None:
                found[name] = value
                origin[name] = record.id
    several = len(ordered) > 1
    for name, rule in rules.traits.items():
        if name in found and (rule.rule == "union" or (several and rule.rule != "latest")):
            candidates = [(r, v) for r in ordered if (v := r.traits.get(name)) is not None]
            found[name], origin[name] = survive(rule, candidates)
    names = sorted(found)
    return {name: found[name] for name in names}, {name: origin[name] for name in names}


def _aggregate(spec: ComputedTrait, values: list[Any]) -> Any:
    if spec.op == "count":
        return len(values)
    present = [v for v in values if v is not None]
    if spec.op == "sum":
        return _sum([v for v in present if isinstance(v, int | float) and not isinstance(v, bool)])
    if spec.op in {"min", "first_seen"}:
        return min(present, key=_sortable) if present else None
    if spec.op in {"max", "last_seen"}:
        return max(present, key=_sortable) if present else None
    return _distinct(present)


def _sum(numbers: list[int | float]) -> int | float | None:
    """Whole numbers add exactly. With a float among them, each adds as the decimal it is
    written as (prices 0.1 + 0.2 give 0.3, not 0.30000000000000004); None when no float
    holds the sum."""
    if all(isinstance(number, int) for number in numbers):
        return sum(numbers)
    total = float(sum(Decimal(repr(n)) if isinstance(n, float) else Decimal(n) for n in numbers))
    return total if math.isfinite(total) else None


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
        # In record id order: a float sum (and which of 1 and 1.0 a max keeps) depends on the
        # order it goes in, and the store gives a profile's records in arrival order.
        chosen.sort(key=attrgetter("id"))
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


def encode_traits(traits: Mapping[str, Any]) -> tuple[str, str]:
    """The JSON text a profile's traits are stored as, and their hash, from one serialization.

    The texts differ only when to_json drops NUL characters; the hash keeps them, as the
    hashes already stored were taken with them.
    """
    text = canonical_json(traits)
    digest = hashlib.sha1(  # a change detector, not a security boundary
        text.encode(), usedforsecurity=False
    ).hexdigest()
    return (to_json(traits) if "\\u0000" in text else text), digest


class _Profile(NamedTuple):
    """A touched profile, its live records, and (traits_hash, record_count) of its stored row."""

    id: str
    records: list[RecordView]
    stored: tuple[str, int] | None


def _batches(items: Iterable[T], size: int) -> Iterator[list[T]]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


def _one_pass_pays(bulk: Bulk, touched: Set[str]) -> bool:
    if not touched:
        return False
    # The count stops past the threshold: it never costs more than the lookups it may avoid.
    limit = int(len(touched) / ONE_PASS_SHARE[bulk.dialect]) + 1
    return bulk.count_up_to("profile", limit) < limit


def _node_rows(bulk: Bulk, touched: Set[str]) -> Iterator[list[Sequence[Any]]]:
    """NODES rows of (at least) the touched profiles, in batches."""
    rows: Iterable[Sequence[Any]]
    if _one_pass_pays(bulk, touched):
        rows = bulk.stream(NODES.format(which="", false=bulk.false))
    else:
        sql = NODES.format(which="WHERE rp.profile_id IN ({in})", false=bulk.false)
        rows = bulk.select_in(sql, sorted(touched))
    return _batches(rows, DECODE_ROWS)


def _parsed(texts: Iterable[str]) -> Iterator[Any]:
    """The values of JSON texts, in order: one parse of a JSON array costs a third of a
    json.loads per text."""
    return iter(json.loads("[" + ",".join(texts) + "]"))


def _nodes(
    batch: Sequence[Sequence[Any]], touched: Set[str]
) -> Iterator[tuple[str, RecordView | None, tuple[str, int] | None]]:
    """(profile, live record or None, stored row) of each node of a touched profile."""
    rows = [row for row in batch if row[0] in touched]
    decoded = _parsed(row[5] for row in rows if row[5] is not None)
    for profile, key, source, stream, updated_at, traits, digest, count in rows:
        record = None
        if traits is not None:
            record = RecordView(int(key), source, stream, updated_at, next(decoded))
        yield profile, record, None if digest is None else (digest, int(count))


def _touched_profiles(bulk: Bulk, touched: Set[str]) -> Iterator[_Profile]:
    """Each touched profile some node still carries, with its live records."""
    nodes = (node for batch in _node_rows(bulk, touched) for node in _nodes(batch, touched))
    for profile, group in groupby(nodes, key=itemgetter(0)):
        items = list(group)
        records = [record for _, record, _ in items if record is not None]
        yield _Profile(profile, records, items[0][2])


def _nodeless_profiles(bulk: Bulk, touched: Set[str]) -> Iterator[_Profile]:
    """Each touched profile no node carries any more."""
    for ids in _batches(sorted(touched), PROFILE_CHUNK):
        held = {
            row[0]
            for row in bulk.select_in(
                "SELECT DISTINCT profile_id FROM record_profile WHERE profile_id IN ({in})", ids
            )
        }
        missing = [profile for profile in ids if profile not in held]
        stored = {
            row[0]: (row[1], int(row[2]))
            for row in bulk.select_in(
                "SELECT id, traits_hash, record_count FROM profile WHERE id IN ({in})", missing
            )
        }
        for profile in missing:
            yield _Profile(profile, [], stored.get(profile))


def _load_events(bulk: Bulk, carried: Mapping[str, Iterable[int]]) -> dict[str, list[EventView]]:
    """The events of each profile, found through the identifier ids its nodes carry."""
    owners: dict[int, list[str]] = defaultdict(list)
    for profile, identifiers in carried.items():
        for identifier in identifiers:
            owners[identifier].append(profile)
    grouped: dict[str, dict[int, EventView]] = defaultdict(dict)
    views: dict[int, EventView] = {}
    rows = bulk.select_in(
        "SELECT ei.identifier_id, e.id, e.name, e.stream, e.occurred_at, e.properties "
        "FROM event_identifier ei JOIN event e ON e.id = ei.event_id "
        "WHERE ei.identifier_id IN ({in})",
        sorted(owners),
    )
    for identifier, key, name, stream, occurred_at, properties in rows:
        event = int(key)
        if event not in views:
            views[event] = EventView(name, stream, occurred_at, Bulk.decode(properties))
        for profile in owners[int(identifier)]:
            grouped[profile][event] = views[event]
    # In event id order: a sum of floats depends on the order it adds in, and the order rows
    # come back in depends on the query plan, so only a fixed order keeps traits reproducible.
    return {profile: [events[key] for key in sorted(events)] for profile, events in grouped.items()}


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
            "SELECT DISTINCT rp.profile_id FROM event_identifier ei "
            + EVENT_PROFILES
            + "WHERE ei.event_id IN ({in})",
            events,
        )
    }
    return profiles, events


def leaving_windows(bulk: Bulk, rules: ProfileMapping, now: str) -> set[str]:
    """Profiles with an event that left a `within_days` window since the last refresh, which
    this one, computing its profiles at `now`, becomes (in the caller's transaction, which
    refreshes them). The same `now` as the profiles': an event leaving between the two times
    would be counted by its profile and never looked for again.

    A count over the last 7 days changes when an event enters the window (a new event: its
    profile is pending anyway) or leaves it as time passes: those are found here, so idle
    profiles do not keep stale counts.
    """
    since = profiles_as_of(bulk)
    mark_profiles_as_of(bulk, now)
    days = {spec.within_days for spec in rules.computed.values() if spec.within_days}
    if not days or since is None:
        return set()
    then, until = datetime.fromisoformat(since), datetime.fromisoformat(now)
    profiles: set[str] = set()
    for window in days:
        rows = bulk.connection.exec_driver_sql(
            bulk.sql(
                "SELECT DISTINCT rp.profile_id FROM event e "
                "JOIN event_identifier ei ON ei.event_id = e.id "
                + EVENT_PROFILES
                + "WHERE e.occurred_at >= ? AND e.occurred_at < ?"
            ),
            (
                format_timestamp(then - timedelta(days=window)),
                format_timestamp(until - timedelta(days=window)),
            ),
        )
        profiles.update(row[0] for row in rows)
    return profiles


def clear_pending_events(bulk: Bulk, events: list[int]) -> None:
    bulk.execute_in(f"UPDATE event SET needs_profile = {bulk.false} WHERE id IN ({{in}})", events)


def _reads_events(rules: ProfileMapping) -> bool:
    return any(spec.over == "events" for spec in rules.computed.values())


ProfileRow = tuple[str, str, str, int, str, str]
"""A profile row to upsert: id, traits text, traits hash, record count, updated_at, run id."""
PROFILE_COLUMNS = ("id", "traits", "traits_hash", "record_count", "updated_at", "run_id")


def _changed_rows(
    rules: ProfileMapping,
    profiles: Sequence[_Profile],
    events: Mapping[str, list[EventView]],
    now: str,
    run_id: str,
) -> list[ProfileRow]:
    """The rows of the profiles whose traits or record count changed."""
    rows = []
    for profile, members, stored in profiles:
        traits, _ = merge_traits(rules, members)
        for name, spec in rules.computed.items():
            traits[name] = compute(spec, members, events.get(profile, []), now)
        text, digest = encode_traits(traits)
        if stored != (digest, len(members)):
            rows.append((profile, text, digest, len(members), now, run_id))
    return rows


def _write_profiles(
    bulk: Bulk, rules: ProfileMapping, profiles: Sequence[_Profile], now: str, run_id: str
) -> int:
    """Upsert the profiles whose traits or record count changed; returns how many."""
    events = {}
    if _reads_events(rules):
        events = _load_events(bulk, identifiers_of_profiles(bulk, [p.id for p in profiles]))
    rows = _changed_rows(rules, profiles, events, now, run_id)
    bulk.upsert("profile", PROFILE_COLUMNS, rows, ("id",))
    return len(rows)


def rows_of_members(
    bulk: Bulk,
    rules: ProfileMapping,
    members: Sequence[tuple[str, Sequence[int]]],
    now: str,
    run_id: str,
) -> list[ProfileRow]:
    """The changed rows of profiles given with their nodes, `(profile, node ids)` sorted by
    profile, read by node id: a reader beside the transaction that has just resolved them,
    which sees their records (resolution changes no trait) but not their new profile ids."""
    rows: list[ProfileRow] = []
    for chunk in _batches(members, PROFILE_CHUNK):
        nodes = {
            int(row[0]): row
            for row in bulk.select_in(
                "SELECT sr.id, sr.source, sr.stream, sr.updated_at, "
                + LIVE_TRAITS.format(false=bulk.false)
                + ", sr.identifier_ids FROM source_record sr WHERE sr.id IN ({in})",
                sorted(node for _, held in chunk for node in held),
            )
        }
        stored = {
            row[0]: (row[1], int(row[2]))
            for row in bulk.select_in(
                "SELECT id, traits_hash, record_count FROM profile WHERE id IN ({in})",
                [profile for profile, _ in chunk],
            )
        }
        live = [[nodes[node] for node in held if nodes[node][4] is not None] for _, held in chunk]
        decoded = _parsed(row[4] for rows in live for row in rows)
        profiles = [
            _Profile(
                profile,
                [RecordView(int(row[0]), row[1], row[2], row[3], next(decoded)) for row in rows],
                stored.get(profile),
            )
            for (profile, _), rows in zip(chunk, live, strict=True)
        ]
        events = {}
        if _reads_events(rules):
            carried = {
                profile: [key for node in held for key in decode_ids(nodes[node][5])]
                for profile, held in chunk
            }
            events = _load_events(bulk, carried)
        rows.extend(_changed_rows(rules, profiles, events, now, run_id))
    return rows


Computed = tuple[object, list[ProfileRow]]
"""A task of profiles computed elsewhere (whatever tags it there) and its changed rows."""


class ComputedElsewhere(Protocol):
    """Profiles computed in other processes (`rows_of_members`), in batches, in order."""

    def ready(self) -> Iterator[Computed]:
        """The batches finished by now, without waiting for any."""
        ...

    def rest(self) -> Iterator[Computed]:
        """Every batch not yet taken, waiting for each."""
        ...


class RowsFromElsewhere:
    """Writes the rows of profiles computed in other processes into the run's transaction as
    they come: the run goes on with its own work meanwhile (a resolution, its write-back,
    calling `write_ready` now and then), and `refresh_profiles` takes the rest. Profiles
    may come in several lots (`add`), none of them in two."""

    def __init__(self, bulk: Bulk, computed: ComputedElsewhere) -> None:
        self._bulk = bulk
        self._lots = [computed]
        self.written = 0

    def add(self, computed: ComputedElsewhere) -> None:
        self._lots.append(computed)

    def write_ready(self) -> None:
        for computed in self._lots:
            self._write(computed.ready())

    def write_rest(self) -> None:
        for computed in self._lots:
            self._write(computed.rest())

    def _write(self, batches: Iterable[Computed]) -> None:
        for _, rows in batches:
            self._bulk.upsert("profile", PROFILE_COLUMNS, rows, ("id",))
            self.written += len(rows)


def refresh_time() -> str:
    """The time a refresh computes its profiles at: computed traits' windows end there."""
    return format_timestamp(utcnow())


def refresh_profiles(
    bulk: Bulk,
    rules: ProfileMapping,
    touched: set[str],
    removed: set[str],
    run_id: str,
    elsewhere: RowsFromElsewhere | None = None,
    now: str | None = None,
) -> tuple[int, int]:
    """Recompute the touched profiles, drop removed ones; returns (written, deleted).

    `elsewhere` has more profiles computed in other processes (none of them in `touched` or
    `removed`), at `now`: the time every profile of one refresh is computed at.
    """
    now = now or refresh_time()
    gone = sorted(removed - touched)
    bulk.execute_in("DELETE FROM profile WHERE id IN ({in})", gone)
    written = 0
    if elsewhere is not None:
        elsewhere.write_rest()
        written += elsewhere.written
    visited = 0
    for chunk in _batches(_touched_profiles(bulk, touched), PROFILE_CHUNK):
        written += _write_profiles(bulk, rules, chunk, now, run_id)
        visited += len(chunk)
    if visited < len(touched):
        # Touched, yet no node carries it any more: the profile keeps a row all the same.
        for chunk in _batches(_nodeless_profiles(bulk, touched), PROFILE_CHUNK):
            written += _write_profiles(bulk, rules, chunk, now, run_id)
    return written, len(gone)
