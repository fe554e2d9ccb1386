"""Which records wait for resolution, without a flag on their rows to clear.

A record written after resolution G carries G + 1 (`SourceRecord.unify_generation`); the
next resolution reads the records past G and then moves `unify_state.resolved` on to G + 1.
That one write is what marks them all resolved, so a resolution of a million records never
writes their rows again, and a crash before it leaves them waiting for the next run.

The same row holds when the profiles were last refreshed (`profiles_as_of`): where the next
refresh looks for events that have left a window of days since.
"""

from __future__ import annotations

from syncd.store.db import Bulk

RESOLVED = "SELECT resolved FROM unify_state WHERE id = 1"


def resolved_generation(bulk: Bulk) -> int:
    """The generation of the last resolution (0 before the first)."""
    return int(bulk.connection.exec_driver_sql(RESOLVED).scalar_one())


def waiting_generation(bulk: Bulk) -> int:
    """The generation a record written now carries: the next resolution's."""
    return resolved_generation(bulk) + 1


def mark_resolved(bulk: Bulk, generation: int) -> None:
    """Every record of `generation` or before is resolved."""
    bulk.connection.exec_driver_sql(
        bulk.sql("UPDATE unify_state SET resolved = ? WHERE id = 1"), (generation,)
    )


def count_waiting(bulk: Bulk) -> int:
    return int(
        bulk.connection.exec_driver_sql(
            f"SELECT COUNT(*) FROM source_record WHERE unify_generation > ({RESOLVED})"
        ).scalar_one()
    )


def profiles_as_of(bulk: Bulk) -> str | None:
    """When the profiles were last refreshed (None before the first refresh)."""
    value = bulk.connection.exec_driver_sql(
        "SELECT profiles_as_of FROM unify_state WHERE id = 1"
    ).scalar_one()
    return None if value is None else str(value)


def mark_profiles_as_of(bulk: Bulk, at: str) -> None:
    bulk.connection.exec_driver_sql(
        bulk.sql("UPDATE unify_state SET profiles_as_of = ? WHERE id = 1"), (at,)
    )
