"""Walk the profiles in bounded chunks and keep the desired states the ledger lacks.

A state is planned when its hash differs from the last acknowledged one, unless it is the
very state the destination last rejected. A profile that leaves a list target, by no longer
passing its conditions or by no longer existing, is planned out of the list. Each chunk is
read in its own short transaction, so pushes and ledger writes can run between chunks.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal, TypeVar

from sqlalchemy import Engine

from syncd.log import get_logger
from syncd.mapping.destinations import CompiledDestination, FieldError
from syncd.plan.desired import DesiredState, desired_state, match_value, removal
from syncd.plan.ledger import LedgerEntry, entries_without_profile, load_entries
from syncd.store.db import Bulk, transaction
from syncd.store.graph import profile_identifiers

CHUNK = 500
Change = Literal["new", "changed", "failed before", "left"]
Row = TypeVar("Row")


@dataclass(frozen=True, slots=True)
class PlannedPush:
    """A desired state to send, and why: new to the target, changed, failed before, or the
    profile left a list target."""

    destination: str
    target: str
    state: DesiredState
    change: Change


@dataclass
class PlanChunk:
    """The planned pushes of one chunk of profiles, and what happened to the others."""

    items: list[PlannedPush] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)

    def add(self, planned: PlannedPush) -> None:
        self.items.append(planned)
        self.counts["planned"] += 1
        if planned.change == "left":
            self.counts["left"] += 1


def _profiles_after(bulk: Bulk, after: str, limit: int) -> list[tuple[str, dict[str, Any]]]:
    rows = bulk.connection.exec_driver_sql(
        bulk.sql("SELECT id, traits FROM profile WHERE id > ? ORDER BY id LIMIT ?"),
        (after, limit),
    ).all()
    return [(row[0], Bulk.decode(row[1])) for row in rows]


def identifier_values(
    bulk: Bulk, kind: str, profiles: Sequence[str], pinned: Mapping[str, str]
) -> dict[str, str]:
    """Each profile's value of identifier `kind`.

    A profile keeps the value it was last pushed with (`pinned`) while it still has it: the
    destination upserts by that value, and another would create a second record there.
    Otherwise the smallest, so the choice does not depend on record order.
    """
    chosen = {}
    for profile, identifiers in profile_identifiers(bulk, profiles).items():
        values = {value for of_kind, value in identifiers if of_kind == kind}
        if values:
            kept = pinned.get(profile)
            chosen[profile] = kept if kept in values else min(values)
    return chosen


def _change(state: DesiredState, entry: LedgerEntry | None) -> Change | None:
    if entry is None:
        return "new"
    if state.hash in (entry.state_hash, entry.rejected_hash):
        return None
    return "changed" if entry.state_hash is not None else "failed before"


def _leaving(
    mapping: CompiledDestination, profile_id: str, entry: LedgerEntry | None, current: str | None
) -> PlannedPush | None:
    """The removal of a profile from a list target it no longer belongs to, if it is due.

    Due while the destination may still hold the membership: unless the entry's state is
    the removal, acknowledged or refused (after a RETRY nothing is known). It goes by the
    match value the entry was last sent with, which names the member there; `current`, the
    profile's own, stands in for an entry written before match values were kept.
    """
    if entry is None or not mapping.is_list:
        return None
    match = entry.match_value or current
    if match is None:
        return None
    state = removal(profile_id, match)
    if _change(state, entry) is None:
        return None
    return PlannedPush(mapping.destination, mapping.target, state, "left")


Phase = Literal["all", "leaving", "joining"]
"""What a walk over the profiles plans: everything, or (for a list target, in two walks)
first the profiles that leave it, then those it should hold."""


def _plan(
    mapping: CompiledDestination,
    phase: Phase,
    bulk: Bulk,
    profiles: list[tuple[str, dict[str, Any]]],
) -> PlanChunk:
    chunk = PlanChunk()
    if phase != "all":
        # Each walk of a list target reads the entries and identifiers of its own side only.
        joining = phase == "joining"
        profiles = [(key, traits) for key, traits in profiles if mapping.selects(traits) == joining]
    ids = [profile_id for profile_id, _ in profiles]
    entries = load_entries(bulk, mapping.destination, mapping.target, ids)
    kind = mapping.match_identifier
    pinned = {key: entry.match_value for key, entry in entries.items() if entry.match_value}
    identifiers = identifier_values(bulk, kind, ids, pinned) if kind else {}
    for profile_id, traits in profiles:
        identifier = identifiers.get(profile_id)
        if not mapping.selects(traits):
            current = match_value(mapping, traits, identifier)
            leaving = _leaving(mapping, profile_id, entries.get(profile_id), current)
            if leaving is None:
                chunk.counts["not_selected"] += 1
            else:
                chunk.add(leaving)
            continue
        try:
            state = desired_state(mapping, profile_id, traits, identifier)
        except FieldError as error:
            chunk.counts["skipped_invalid"] += 1
            get_logger().warning(
                "profile not planned",
                destination=mapping.destination,
                target=mapping.target,
                profile_id=profile_id,
                reason=str(error),
            )
            continue
        if state is None:
            chunk.counts["skipped_no_key"] += 1
            continue
        change = _change(state, entries.get(profile_id))
        if change is None:
            chunk.counts["unchanged"] += 1
            continue
        chunk.add(PlannedPush(mapping.destination, mapping.target, state, change))
    return chunk


def _plan_gone(
    mapping: CompiledDestination, _bulk: Bulk, entries: list[tuple[str, LedgerEntry]]
) -> PlanChunk:
    chunk = PlanChunk()
    for profile_id, entry in entries:
        leaving = _leaving(mapping, profile_id, entry, None)
        if leaving is not None:
            chunk.add(leaving)
    return chunk


def _walk(
    engine: Engine,
    chunk_size: int,
    read: Callable[[Bulk, str, int], list[tuple[str, Row]]],
    plan: Callable[[Bulk, list[tuple[str, Row]]], PlanChunk],
) -> Iterator[PlanChunk]:
    """Rows keyed by profile id, read after the last one and planned in a transaction each."""
    after = ""
    while True:
        with transaction(engine) as bulk:
            rows = read(bulk, after, chunk_size)
            if not rows:
                return
            planned = plan(bulk, rows)
        after = rows[-1][0]
        yield planned


def plan_chunks(
    engine: Engine, mapping: CompiledDestination, chunk_size: int = CHUNK
) -> Iterator[PlanChunk]:
    """The plan of one destination mapping, chunk by chunk of profiles (in id order).

    A list target's removals go first, those of profiles that no longer exist included (by
    chunks of entries), and its additions after: the member a profile leaves may be the one
    another profile now holds (a record deleted and created again, a profile split), and a
    removal sent after that profile's addition would take it out of the list for good.
    """
    if not mapping.is_list:
        yield from _walk(engine, chunk_size, _profiles_after, partial(_plan, mapping, "all"))
        return

    def gone(bulk: Bulk, after: str, limit: int) -> list[tuple[str, LedgerEntry]]:
        return entries_without_profile(bulk, mapping.destination, mapping.target, after, limit)

    yield from _walk(engine, chunk_size, _profiles_after, partial(_plan, mapping, "leaving"))
    yield from _walk(engine, chunk_size, gone, partial(_plan_gone, mapping))
    yield from _walk(engine, chunk_size, _profiles_after, partial(_plan, mapping, "joining"))
