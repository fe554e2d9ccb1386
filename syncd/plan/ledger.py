"""The push ledger: per (destination, target, profile) what the destination acknowledged.

OK stores the state's hash and the destination's id and clears the failure count. RETRY
clears the acknowledged hash and counts the attempt: the write may have landed (an answer
lost after the destination processed it), so what the destination holds is unknown and the
next run sends the profile's state whatever it is, even the one acknowledged before. REJECTED
remembers the refused state's hash, so that same state is not sent again until the profile
changes. Every outcome keeps the state's match value: the key the destination's record has
(or may have, after a RETRY), which the planner keeps using while the profile has it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass

from syncd.connector import Outcome
from syncd.plan.desired import DesiredState
from syncd.store.db import Bulk

COLUMNS = (
    "destination",
    "target",
    "profile_id",
    "state_hash",
    "rejected_hash",
    "match_value",
    "external_id",
    "attempts",
    "last_outcome",
    "last_error",
    "updated_at",
    "run_id",
)
_ON_CONFLICT = {
    Outcome.OK: (
        "state_hash = excluded.state_hash, rejected_hash = NULL, "
        "external_id = excluded.external_id, attempts = 0, last_error = NULL"
    ),
    Outcome.RETRY: (
        "state_hash = NULL, attempts = push_ledger.attempts + 1, last_error = excluded.last_error"
    ),
    Outcome.REJECTED: (
        "rejected_hash = excluded.rejected_hash, attempts = push_ledger.attempts + 1, "
        "last_error = excluded.last_error"
    ),
}


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """What the ledger knows of one profile at one target."""

    state_hash: str | None
    rejected_hash: str | None
    match_value: str | None


@dataclass(frozen=True, slots=True)
class Recorded:
    """One outcome to write: the pushed state, and the destination's answer."""

    state: DesiredState
    outcome: Outcome
    external_id: str | None = None
    error: str | None = None


_ENTRY = "SELECT profile_id, state_hash, rejected_hash, match_value FROM push_ledger"


def load_entries(
    bulk: Bulk, destination: str, target: str, profiles: Sequence[str]
) -> dict[str, LedgerEntry]:
    """The ledger entries of `profiles` at one target."""
    rows = bulk.select_in(
        f"{_ENTRY} WHERE destination = ? AND target = ? AND profile_id IN ({{in}})",
        profiles,
        before=(destination, target),
    )
    return {row[0]: LedgerEntry(*row[1:]) for row in rows}


def entries_without_profile(
    bulk: Bulk, destination: str, target: str, after: str, limit: int
) -> list[tuple[str, LedgerEntry]]:
    """Up to `limit` entries at one target, after profile id `after` in id order, whose
    profile no longer exists (every record of it deleted)."""
    rows = bulk.connection.exec_driver_sql(
        bulk.sql(
            f"{_ENTRY} WHERE destination = ? AND target = ? AND profile_id > ? AND NOT EXISTS "
            "(SELECT 1 FROM profile WHERE profile.id = push_ledger.profile_id) "
            "ORDER BY profile_id LIMIT ?"
        ),
        (destination, target, after, limit),
    ).all()
    return [(row[0], LedgerEntry(*row[1:])) for row in rows]


def follow_renames(bulk: Bulk, renamed: Mapping[str, str], survivors: Set[str]) -> None:
    """Entries of profiles that only changed their id (old id to new in `renamed`) go with
    them, so the next push does not send the same person again as new.

    `survivors` are the new ids that were profiles already (the profile merged into): their
    own entries stay and the push compares against them; the merged-away ones go. Any other
    new id's entries are left from a profile that no longer exists, and are replaced.
    """
    fresh = sorted({new for new in renamed.values() if new not in survivors})
    bulk.execute_in("DELETE FROM push_ledger WHERE profile_id IN ({in})", fresh)
    bulk.executemany(
        bulk.sql(
            "UPDATE push_ledger SET profile_id = ? WHERE profile_id = ? AND NOT EXISTS ("
            "SELECT 1 FROM push_ledger AS taken WHERE taken.destination = push_ledger.destination "
            "AND taken.target = push_ledger.target AND taken.profile_id = ?)"
        ),
        [(new, old, new) for old, new in sorted(renamed.items())],
    )
    bulk.execute_in("DELETE FROM push_ledger WHERE profile_id IN ({in})", sorted(renamed))


def record_outcomes(
    bulk: Bulk,
    destination: str,
    target: str,
    outcomes: Sequence[Recorded],
    run_id: str,
    now: str,
) -> None:
    """Write each outcome into the ledger, in one statement per kind of outcome."""
    marks = ", ".join("?" * len(COLUMNS))
    for outcome, assignments in _ON_CONFLICT.items():
        rows = [
            (
                destination,
                target,
                r.state.profile_id,
                r.state.hash if outcome is Outcome.OK else None,
                r.state.hash if outcome is Outcome.REJECTED else None,
                r.state.match_value,
                r.external_id,
                0 if outcome is Outcome.OK else 1,
                outcome.value,
                r.error,
                now,
                run_id,
            )
            for r in outcomes
            if r.outcome is outcome
        ]
        sql = (
            f"INSERT INTO push_ledger ({', '.join(COLUMNS)}) VALUES ({marks}) "
            "ON CONFLICT (destination, target, profile_id) DO UPDATE SET "
            f"{assignments}, match_value = excluded.match_value, "
            "last_outcome = excluded.last_outcome, updated_at = excluded.updated_at, "
            "run_id = excluded.run_id"
        )
        bulk.executemany(bulk.sql(sql), rows)
