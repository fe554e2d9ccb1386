"""The standard connector suite, run against the Matomo emulator."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from connectors.matomo.emulator import MatomoEmulator
from connectors.matomo.source import MatomoSource
from syncd.connector import RawRecord
from syncd.testing import Fault, Sleep, SourceHarness, StandardSourceTests

from .conftest import SourceFactory


class MatomoHarness:
    """Visits of an emulated Matomo site, read through the Matomo source."""

    stream = "visits"
    rate_limit_retry_after: float | None = 2.0

    def __init__(self, emulator: MatomoEmulator, make_source: SourceFactory) -> None:
        self.emulator = emulator
        self._make_source = make_source

    def make_source(self, sleep: Sleep) -> MatomoSource:
        return self._make_source(sleep)

    def record_id(self, record: RawRecord) -> str:
        return str(record.payload["idVisit"])

    def live_ids(self) -> set[str]:
        return {str(visit["idVisit"]) for visit in self.emulator.visits()}

    def change(self, ids: Sequence[str]) -> None:
        # A returning visitor acts again: the visit's last action time moves to now.
        for id_visit in ids:
            self.emulator.record_pageview(int(id_visit))

    def delete(self, ids: Sequence[str]) -> None:
        self.emulator.delete_visits(int(id_visit) for id_visit in ids)

    def inject(self, fault: Fault, times: int = 1) -> None:
        self.emulator.inject("slow" if fault is Fault.TIMEOUT else fault.value, times)


class TestMatomoSource(StandardSourceTests):
    opt_outs = {
        "test_deletions_arrive_on_the_next_read": (
            "Matomo's Live API has no feed of deleted visits: GDPR deletions and raw-log "
            "purges just make visits disappear, so a source cannot report them"
        ),
    }

    @pytest.fixture
    def source_harness(self, emulator: MatomoEmulator, make_source: SourceFactory) -> SourceHarness:
        return MatomoHarness(emulator, make_source)
