"""The standard connector suite, run against the Salesforce emulator."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from connectors.salesforce.destination import SalesforceDestination
from connectors.salesforce.emulator import SalesforceEmulator
from connectors.salesforce.faults import Endpoint, FaultKind
from connectors.salesforce.source import SalesforceSource
from syncd.connector import PushItem, RawRecord
from syncd.testing import Fault, Sleep, StandardDestinationTests, StandardSourceTests
from tests.connectors.salesforce.sf_fixtures import client_for

_KINDS = {
    Fault.RATE_LIMIT: FaultKind.REQUEST_LIMIT,
    Fault.SERVER_ERROR: FaultKind.SERVER_ERROR,
    Fault.TIMEOUT: FaultKind.SLOW,
    Fault.RESET: FaultKind.RESET,
}
_PUSHED = ("FirstName", "LastName", "Email")


def _inject(emulator: SalesforceEmulator, endpoint: Endpoint, fault: Fault, times: int) -> None:
    if fault is Fault.AUTH:
        emulator.expire_sessions()
        emulator.refuse_logins(times)
    else:
        emulator.inject(endpoint, _KINDS[fault], times)


class SalesforceHarness:
    """Contacts of an emulated org, read and written through the Salesforce connector."""

    stream = "Contact"
    target = "Contact"
    rate_limit_retry_after = None
    system_max_batch = 200

    def __init__(self, emulator: SalesforceEmulator) -> None:
        self.emulator = emulator

    def make_source(self, sleep: Sleep) -> SalesforceSource:
        return SalesforceSource(client_for(self.emulator, sleep))

    def make_destination(self, sleep: Sleep) -> SalesforceDestination:
        return SalesforceDestination(client_for(self.emulator, sleep))

    def record_id(self, record: RawRecord) -> str:
        return str(record.payload["Id"])

    def live_ids(self) -> set[str]:
        return set(self.emulator.ids("Contact"))

    def change(self, ids: Sequence[str]) -> None:
        self.emulator.modify("Contact", ids, MailingCity="Lisbon")

    def delete(self, ids: Sequence[str]) -> None:
        self.emulator.delete("Contact", ids)

    def inject(self, fault: Fault, times: int = 1) -> None:
        _inject(self.emulator, Endpoint.QUERY, fault, times)

    def item(self, index: int) -> PushItem:
        return PushItem(
            key=f"profile-{index}",
            match_value=f"syncd-{index:05d}",
            fields={
                "FirstName": "Ada",
                "LastName": f"Pushed{index}",
                "Email": f"p{index}@example.com",
            },
        )

    def invalid_item(self, index: int) -> PushItem:
        valid = self.item(index)
        return PushItem(valid.key, valid.match_value, {**valid.fields, "Email": "no-at-sign"})

    def write_batches(self) -> list[int]:
        return [write.records for write in self.emulator.writes]

    def stored(self) -> Mapping[str, Mapping[str, Any]]:
        return {
            row["Syncd_Id__c"]: {name: row[name] for name in _PUSHED}
            for row in self.emulator.org.rows("Contact", include_deleted=False)
            if row["Syncd_Id__c"]
        }


class WritingHarness(SalesforceHarness):
    def inject(self, fault: Fault, times: int = 1) -> None:
        _inject(self.emulator, Endpoint.COLLECTIONS, fault, times)


class TestSalesforceSource(StandardSourceTests):
    @pytest.fixture
    def source_harness(self, emulator: SalesforceEmulator) -> SalesforceHarness:
        return SalesforceHarness(emulator)


class TestSalesforceDestination(StandardDestinationTests):
    @pytest.fixture
    def destination_harness(self, emulator: SalesforceEmulator) -> WritingHarness:
        return WritingHarness(emulator)
