"""The Salesforce destination beyond the standard suite: bulk ingest, clearing fields, outcomes."""

from __future__ import annotations

from typing import Any

import pytest

from connectors.salesforce.destination import SalesforceDestination
from connectors.salesforce.emulator import SalesforceEmulator
from connectors.salesforce.faults import Endpoint, FaultKind
from syncd.connector import Outcome, PushItem, PushResult
from syncd.errors import FatalConnectorError
from tests.connectors.salesforce.sf_fixtures import client_for


def item(index: int, **fields: Any) -> PushItem:
    values = {"LastName": f"Doe{index}", "Email": f"d{index}@example.com", **fields}
    return PushItem(key=f"k{index}", match_value=f"ext-{index}", fields=values)


def push(
    emulator: SalesforceEmulator, items: list[PushItem], target: str = "Contact", **options: Any
) -> list[PushResult]:
    destination = SalesforceDestination(client_for(emulator, **options))
    try:
        return destination.push(target, items)
    finally:
        destination.close()


def stored(emulator: SalesforceEmulator, ext: str, sobject: str = "Contact") -> dict[str, Any]:
    (row,) = emulator.find(sobject, "Syncd_Id__c", ext)
    return row


def test_collections_of_at_most_200(emulator: SalesforceEmulator) -> None:
    results = push(emulator, [item(i) for i in range(450)])
    assert [w.records for w in emulator.writes] == [200, 200, 50]
    assert {r.outcome for r in results} == {Outcome.OK}
    assert results[449].external_id == stored(emulator, "ext-449")["Id"]


def test_an_update_keeps_the_record(emulator: SalesforceEmulator) -> None:
    (first,) = push(emulator, [item(1)])
    (second,) = push(emulator, [item(1, Email="new@example.com")])
    assert second.external_id == first.external_id
    assert stored(emulator, "ext-1")["Email"] == "new@example.com"


def test_none_clears_a_field(emulator: SalesforceEmulator) -> None:
    push(emulator, [item(1, Phone="555-0100"), item(2, Phone="555-0101")])
    push(emulator, [item(1, Phone=None)])
    push(emulator, [item(2, Phone=None), item(3)], bulk_push_threshold=1)
    assert stored(emulator, "ext-1")["Phone"] is None
    assert stored(emulator, "ext-2")["Phone"] is None


def test_a_bulk_push_leaves_a_field_alone_where_an_item_lacks_it(
    emulator: SalesforceEmulator,
) -> None:
    push(emulator, [item(1, Phone="555-0100")])
    push(emulator, [item(1), item(2, Phone="555-0101")], bulk_push_threshold=1)
    assert emulator.bulk_jobs == [("ingest", "upsert", "Contact")]
    assert stored(emulator, "ext-1")["Phone"] == "555-0100"
    assert stored(emulator, "ext-2")["Phone"] == "555-0101"


def test_rejections_carry_the_salesforce_code(emulator: SalesforceEmulator) -> None:
    results = push(emulator, [item(1, Email="nope"), PushItem("k2", "ext-2", {"Email": "a@b.co"})])
    assert [r.outcome for r in results] == [Outcome.REJECTED, Outcome.REJECTED]
    assert [r.reason for r in results] == [
        "INVALID_EMAIL_ADDRESS (Email): not a valid email address",
        "REQUIRED_FIELD_MISSING (LastName): a required field has no value",
    ]


def test_validation_rule_failures_are_isolated(emulator: SalesforceEmulator) -> None:
    emulator.inject(Endpoint.COLLECTIONS, FaultKind.PARTIAL)
    results = push(emulator, [item(i) for i in range(12)])
    rejected = [r for r in results if r.outcome is Outcome.REJECTED]
    assert 0 < len(rejected) < 12
    assert all(r.reason and "FIELD_CUSTOM_VALIDATION_EXCEPTION" in r.reason for r in rejected)
    assert all(r.external_id for r in results if r.outcome is Outcome.OK)


def test_spent_retries_leave_the_batch_for_later(emulator: SalesforceEmulator) -> None:
    emulator.inject(Endpoint.COLLECTIONS, FaultKind.SERVER_ERROR, times=3)
    results = push(emulator, [item(1), item(2)], retry_attempts=3)
    assert [r.outcome for r in results] == [Outcome.RETRY, Outcome.RETRY]
    assert results[0].reason is not None
    assert "503" in results[0].reason
    assert emulator.find("Contact", "Syncd_Id__c", "ext-1") == []


@pytest.mark.parametrize(
    ("bulk_push_threshold", "requests"),
    [(2000, [("collections", 2), ("collections", 1)]), (1, [("bulk", 2), ("collections", 1)])],
    ids=["collections", "bulk"],
)
def test_items_sharing_an_external_id_go_in_separate_requests(
    emulator: SalesforceEmulator, bulk_push_threshold: int, requests: list[tuple[str, int]]
) -> None:
    twin = PushItem("k3", "ext-1", {"LastName": "Twin", "Email": "twin@example.com"})
    results = push(emulator, [item(1), item(2), twin], bulk_push_threshold=bulk_push_threshold)
    assert [(w.api, w.records) for w in emulator.writes] == requests
    assert [r.outcome for r in results] == [Outcome.OK] * 3
    assert [r.key for r in results] == ["k1", "k2", "k3"]
    assert results[0].external_id == results[2].external_id == stored(emulator, "ext-1")["Id"]
    assert stored(emulator, "ext-1")["LastName"] == "Twin"


def test_an_unknown_field_is_fatal_not_a_rejection(emulator: SalesforceEmulator) -> None:
    with pytest.raises(FatalConnectorError, match="INVALID_FIELD"):
        push(emulator, [item(1, Shoe_Size__c=9)])


def test_a_large_push_runs_as_a_bulk_ingest_job(emulator: SalesforceEmulator) -> None:
    items = [item(i) for i in range(30)] + [item(30, Email="broken")]
    results = push(emulator, items, bulk_push_threshold=10)
    assert emulator.bulk_jobs == [("ingest", "upsert", "Contact")]
    assert [(w.api, w.records) for w in emulator.writes] == [("bulk", 31)]
    assert [r.key for r in results] == [i.key for i in items]
    assert {r.outcome for r in results[:30]} == {Outcome.OK}
    assert results[5].external_id == stored(emulator, "ext-5")["Id"]
    assert results[30].outcome is Outcome.REJECTED
    assert results[30].reason == "INVALID_EMAIL_ADDRESS (Email): not a valid email address"


def test_a_bulk_push_is_retried_as_a_whole(emulator: SalesforceEmulator) -> None:
    emulator.inject(Endpoint.BULK_INGEST, FaultKind.RESET)
    results = push(emulator, [item(i) for i in range(4)], bulk_push_threshold=2)
    assert {r.outcome for r in results} == {Outcome.OK}
    assert len(emulator.find("Contact", "Syncd_Id__c", "ext-3")) == 1


def test_leads_too(emulator: SalesforceEmulator) -> None:
    (result,) = push(emulator, [item(1, Company="Initech")], target="Lead")
    assert result.outcome is Outcome.OK
    assert stored(emulator, "ext-1", "Lead")["Company"] == "Initech"


ADDRESS = "12 Rue de la Paix, Apartment 5B, Paris 75002 France"


@pytest.mark.parametrize("bulk_push_threshold", [2000, 1], ids=["collections", "bulk"])
def test_a_reason_names_the_code_and_field_never_the_value_salesforce_quotes(
    emulator: SalesforceEmulator, bulk_push_threshold: int
) -> None:
    items = [item(1, MailingCity=ADDRESS), item(2)]
    results = push(emulator, items, bulk_push_threshold=bulk_push_threshold)
    assert [r.outcome for r in results] == [Outcome.REJECTED, Outcome.OK]
    assert results[0].reason == (
        "STRING_TOO_LONG (MailingCity): the value is longer than the field allows"
    )
