"""Incremental reads by modification time, with a look-back: what the API sources share.

Salesforce, HubSpot and Matomo each stamp a change with a time and list changes at or after a
time, in time order. A read stores the newest time it delivered (its mark), but that time is no
safe boundary for the next read:

- a change can become visible after later-stamped ones were delivered: HubSpot's search index
  lags its writes, a long Salesforce transaction shows its rows only when it commits, and
  Matomo's queued tracking and log imports write visits with past times;
- a record can change again within the stamp's resolution (Salesforce stamps to the second) and
  keep the stamp a read already passed.

So each read looks back and skips nothing an earlier read delivered: a record inside the
look-back may come again, which costs the store a content hash and no write when it did not
change. The look-back is measured from when the previous read started, not from its mark: each
source stores that start with its mark (our clock less a clock-skew margin of 5 minutes, so it
is no later than the system's clock), and a record that read could not see yet is stamped after
`previous start - lookback` (if it became visible within the look-back), so the next read
starts at `min(mark, previous start - lookback)`. A stream gone quiet after a burst then reads,
one look-back period later, only the records at its mark (a later edit within the mark's stamp
keeps that stamp), not the whole burst on every run. A cursor stored without a read start looks
back from its mark once. Within one read, queries re-anchor at the walk's position (the time of
the last record taken) and drop the ids already taken at exactly that time, so paging neither
loses nor repeats a record.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, TypeVar

Stamp = TypeVar("Stamp", int, datetime)
Key = TypeVar("Key", bound=Hashable)

CLOCK_SKEW_SECONDS = 5 * 60
"""How far a system's clock may be ahead of ours: a read's start is stored this much earlier."""


def resume_at(stored: Stamp, started: Stamp | None, back: Callable[[Stamp], Stamp]) -> Stamp:
    """Where a read after the mark `stored` starts, when the read that stored it began at
    `started` (None: its cursor does not say); `back(t)` is `t` less the look-back."""
    return back(stored) if started is None else min(stored, back(started))


@dataclass
class Walk(Generic[Stamp, Key]):
    """One read's way through records in (time, id) order.

    `stored` is the mark the previous read stored (None: there was none); `at` is where the
    next query starts (time >= at), the look-back before `stored` until the read takes records.
    """

    stored: Stamp | None
    at: Stamp | None
    taken_at: set[Key] = field(default_factory=set)
    """The ids this read took at exactly `at`."""
    newest: Stamp | None = None
    """The newest time this read took (`at` may go past it: see `jump`)."""

    @property
    def mark(self) -> Stamp | None:
        """The time to store: the newest this read took, never earlier than the stored one."""
        if self.stored is None:
            return self.newest
        if self.newest is None:
            return self.stored
        return max(self.stored, self.newest)

    def fresh(self, key: Key, stamp: Stamp) -> bool:
        """Whether this read has not taken this record at this time yet."""
        return not (stamp == self.at and key in self.taken_at)

    def took(self, keyed: Iterable[tuple[Key, Stamp]]) -> None:
        """Move past these (id, time) pairs, the records of one answer."""
        pairs = list(keyed)
        if not pairs:
            return
        newest = max(stamp for _, stamp in pairs)
        if self.newest is None or newest > self.newest:
            self.newest = newest
        if self.at is None or newest > self.at:
            self.at, self.taken_at = newest, set()
        self.taken_at.update(key for key, stamp in pairs if stamp == self.at)

    def jump(self, stamp: Stamp) -> None:
        """Go on at `stamp`: every record before it was taken.

        The mark stays the newest time taken: a record changed again at a time this read
        passed without taking anything there would otherwise be skipped by the next read.
        """
        self.at, self.taken_at = stamp, set()
