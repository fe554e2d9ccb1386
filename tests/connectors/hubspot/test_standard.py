"""The standard connector suite, run against the HubSpot emulator."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from connectors.hubspot.client import HubSpotClient
from connectors.hubspot.destination import HubSpotDestination
from connectors.hubspot.emulator import Fault as EmulatorFault
from connectors.hubspot.emulator import FaultKind, HubSpotEmulator
from connectors.hubspot.source import HubSpotSource
from syncd.budget import RequestBudget
from syncd.connector import PushItem, RawRecord
from syncd.testing import Fault, Sleep, StandardDestinationTests, StandardSourceTests
from tests.connectors.hubspot.hubspot_support import ManualClock

TIMEOUT = 0.5
_FAULTS = {
    Fault.RATE_LIMIT: EmulatorFault(FaultKind.RATE_LIMIT, retry_after=1.0),
    Fault.SERVER_ERROR: EmulatorFault(FaultKind.SERVER_ERROR, status=503),
    Fault.TIMEOUT: EmulatorFault(FaultKind.TIMEOUT, delay=2 * TIMEOUT),
    Fault.RESET: EmulatorFault(FaultKind.RESET),
    Fault.AUTH: EmulatorFault(FaultKind.AUTH),
}


class HubSpotHarness:
    """Contacts of an emulated account, read and written through the HubSpot connector."""

    stream = "contacts"
    target = "contacts"
    rate_limit_retry_after = 1.0
    system_max_batch = 100

    def __init__(self, emulator: HubSpotEmulator) -> None:
        self.emulator = emulator

    def _client(self, sleep: Sleep) -> HubSpotClient:
        # After a 429 the budget holds requests back; on a manual clock that costs no time.
        clock = ManualClock()
        return HubSpotClient(
            self.emulator.url,
            self.emulator.access_token,
            budget=RequestBudget(10_000, 1.0, clock=clock, sleep=clock.sleep),
            timeout=TIMEOUT,
            sleep=sleep,
        )

    def make_source(self, sleep: Sleep) -> HubSpotSource:
        return HubSpotSource(self._client(sleep), ("contacts",), page_size=25)

    def make_destination(self, sleep: Sleep) -> HubSpotDestination:
        return HubSpotDestination(self._client(sleep))

    def record_id(self, record: RawRecord) -> str:
        return str(record.payload["id"])

    def live_ids(self) -> set[str]:
        return {record.id for record in self.emulator.records("contacts")}

    def change(self, ids: Sequence[str]) -> None:
        self.emulator.modify("contacts", ids, {"city": "Lisbon"})

    def delete(self, ids: Sequence[str]) -> None:
        self.emulator.archive("contacts", ids)

    def inject(self, fault: Fault, times: int = 1) -> None:
        self.emulator.faults.script("*", _FAULTS[fault], times)

    def item(self, index: int) -> PushItem:
        return PushItem(
            key=f"profile-{index}",
            match_value=f"pushed{index}@example.com",
            fields={"firstname": "Ada", "lastname": f"Pushed{index}"},
        )

    def invalid_item(self, index: int) -> PushItem:
        valid = self.item(index)
        return PushItem(valid.key, valid.match_value, {**valid.fields, "lifecyclestage": "pal"})

    def write_batches(self) -> list[int]:
        return [
            len(entry.body["inputs"])
            for entry in self.emulator.write_log
            if entry.path.endswith("/batch/upsert")
        ]

    def stored(self) -> Mapping[str, Mapping[str, Any]]:
        return {
            record.values["email"]: {
                name: record.values.get(name) for name in ("firstname", "lastname")
            }
            for record in self.emulator.records("contacts")
        }


class TestHubSpotSource(StandardSourceTests):
    @pytest.fixture
    def source_harness(self, emulator: HubSpotEmulator) -> HubSpotHarness:
        return HubSpotHarness(emulator)


class TestHubSpotDestination(StandardDestinationTests):
    @pytest.fixture
    def destination_harness(self, emulator: HubSpotEmulator) -> HubSpotHarness:
        return HubSpotHarness(emulator)
