"""Walk the profiles in bounded chunks and keep the desired states the ledger lacks.

A state is planned when its hash differs from the last acknowledged one, unless it is the
very state the destination last rejected. Each chunk is read in its own short transaction,
so pushes and ledger writes can run between chunks.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import Engine

from syncd.log import get_logger
from syncd.mapping.destinations import CompiledDestination, FieldError
from syncd.plan.desired import DesiredState, desired_state
from syncd.plan.ledger import LedgerEntry, load_entries
from syncd.store.db import Bulk, transaction
from syncd.store.graph import profile_identifiers

CHUNK = 500
Change = Literal["new", "changed", "failed before"]


@dataclass(frozen=True, slots=True)
class PlannedPush:
    """A desired state to send, and why: new to the target, changed, or failed before."""

    destination: str
    target: str
    state: DesiredState
    change: Change


@dataclass
class PlanChunk:
    """The planned pushes of one chunk of profiles, and what happened to the others."""

    items: list[PlannedPush] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)


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


def _plan(
    bulk: Bulk, mapping: CompiledDestination, profiles: list[tuple[str, dict[str, Any]]]
) -> PlanChunk:
    chunk = PlanChunk()
    ids = [profile_id for profile_id, _ in profiles]
    entries = load_entries(bulk, mapping.destination, mapping.target, ids)
    kind = mapping.match_identifier
    pinned = {key: entry.match_value for key, entry in entries.items() if entry.match_value}
    identifiers = identifier_values(bulk, kind, ids, pinned) if kind else {}
    for profile_id, traits in profiles:
        if not mapping.selects(traits):
            chunk.counts["not_selected"] += 1
            continue
        try:
            state = desired_state(mapping, profile_id, traits, identifiers.get(profile_id))
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
        chunk.counts["planned"] += 1
        chunk.items.append(PlannedPush(mapping.destination, mapping.target, state, change))
    return chunk


def plan_chunks(
    engine: Engine, mapping: CompiledDestination, chunk_size: int = CHUNK
) -> Iterator[PlanChunk]:
    """The plan of one destination mapping, chunk by chunk of profiles (in id order)."""
    after = ""
    while True:
        with transaction(engine) as bulk:
            profiles = _profiles_after(bulk, after, chunk_size)
            if not profiles:
                return
            planned = _plan(bulk, mapping, profiles)
        after = profiles[-1][0]
        yield planned
