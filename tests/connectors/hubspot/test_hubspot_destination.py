"""The HubSpot destination: upserts with per-record outcomes, and list memberships."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from connectors.hubspot.destination import HubSpotDestination
from connectors.hubspot.emulator import Fault, FaultKind, HubSpotEmulator
from syncd.connector import Outcome, PushItem
from syncd.errors import AuthError, FatalConnectorError
from tests.connectors.hubspot.hubspot_support import ClientFactory, Waits

DestinationFactory = Callable[..., HubSpotDestination]


@pytest.fixture
def make_destination(make_client: ClientFactory) -> DestinationFactory:
    def build(
        id_property: str = "email", sleep: Waits | None = None, **client: object
    ) -> HubSpotDestination:
        return HubSpotDestination(make_client(sleep=sleep, **client), id_property=id_property)

    return build


def item(index: int, email: str | None = None, **fields: object) -> PushItem:
    return PushItem(
        key=f"profile-{index}",
        match_value=email or f"person{index}@example.com",
        fields={"firstname": f"Person{index}", **fields},
    )


def stored_by_email(emulator: HubSpotEmulator) -> dict[str, dict[str, str]]:
    return {c.values["email"]: c.values for c in emulator.records("contacts")}


def upsert_sizes(emulator: HubSpotEmulator) -> list[int]:
    return [
        len(entry.body["inputs"])
        for entry in emulator.write_log
        if entry.path.endswith("/batch/upsert")
    ]


def test_upsert_creates_and_updates_by_email_with_one_result_per_item(
    emulator: HubSpotEmulator, make_destination: DestinationFactory
) -> None:
    existing = emulator.records("contacts")[0]
    items = [item(1), item(2, email=existing.values["email"].upper(), city="Austin")]
    results = make_destination().push("contacts", items)
    assert [(r.key, r.outcome) for r in results] == [
        ("profile-1", Outcome.OK),
        ("profile-2", Outcome.OK),
    ]
    assert results[1].external_id == existing.id
    stored = stored_by_email(emulator)
    assert stored["person1@example.com"]["firstname"] == "Person1"
    assert stored[existing.values["email"]]["city"] == "Austin"
    assert results[0].external_id == next(
        c.id for c in emulator.records("contacts") if c.values["email"] == "person1@example.com"
    )


def test_upsert_by_a_custom_unique_property(
    emulator: HubSpotEmulator, make_destination: DestinationFactory
) -> None:
    destination = make_destination(id_property="syncd_key")
    first = destination.push("contacts", [PushItem("p1", "key-1", {"email": "k@example.com"})])
    again = destination.push("contacts", [PushItem("p1", "key-1", {"city": "Boston"})])
    assert first[0].outcome is again[0].outcome is Outcome.OK
    assert first[0].external_id == again[0].external_id
    record = {c.id: c for c in emulator.records("contacts")}[str(first[0].external_id)]
    assert (record.values["syncd_key"], record.values["city"]) == ("key-1", "Boston")


def test_large_pushes_go_in_batches_of_at_most_100(
    emulator: HubSpotEmulator, make_destination: DestinationFactory
) -> None:
    items = [item(i) for i in range(230)]
    results = make_destination().push("contacts", items)
    assert all(r.outcome is Outcome.OK for r in results)
    assert upsert_sizes(emulator) == [100, 100, 30]


def test_the_same_record_twice_in_one_push_goes_in_separate_requests(
    emulator: HubSpotEmulator, make_destination: DestinationFactory
) -> None:
    items = [item(1), item(2), item(3, email="Person1@example.com", city="Chicago")]
    results = make_destination().push("contacts", items)
    assert [r.outcome for r in results] == [Outcome.OK] * 3
    assert results[0].external_id == results[2].external_id
    assert upsert_sizes(emulator) == [2, 1]
    assert stored_by_email(emulator)["person1@example.com"]["city"] == "Chicago"


def test_a_207_marks_only_the_failed_records_rejected(
    emulator: HubSpotEmulator, make_destination: DestinationFactory
) -> None:
    emulator.faults.script("objects.batch_upsert", Fault(FaultKind.PARTIAL, error="INVALID_EMAIL"))
    items = [item(i) for i in range(10)]
    results = make_destination().push("contacts", items)
    rejected = [r for r in results if r.outcome is Outcome.REJECTED]
    ok = [r for r in results if r.outcome is Outcome.OK]
    assert rejected and ok and len(rejected) + len(ok) == 10
    assert all(r.reason and r.reason.startswith("VALIDATION_ERROR") for r in rejected)
    assert all("INVALID_EMAIL" in str(r.reason) and "@" not in str(r.reason) for r in rejected)
    stored = stored_by_email(emulator)
    for it, result in zip(items, results, strict=True):
        assert (it.match_value in stored) is (result.outcome is Outcome.OK)


def test_a_bad_record_refusing_the_whole_batch_is_isolated(
    emulator: HubSpotEmulator, make_destination: DestinationFactory
) -> None:
    items = [item(i) for i in range(8)]
    items[5] = item(5, email="not-an-email")
    items[2] = item(2, lifecyclestage="best-friend")
    results = make_destination().push("contacts", items)
    outcomes = [r.outcome for r in results]
    assert (
        outcomes
        == [Outcome.OK] * 2
        + [Outcome.REJECTED]
        + [Outcome.OK] * 2
        + [Outcome.REJECTED]
        + [Outcome.OK] * 2
    )
    assert "INVALID_OPTION" in str(results[2].reason)
    assert "INVALID_EMAIL" in str(results[5].reason)
    assert len(stored_by_email(emulator)) == 60 + 6


def test_an_unknown_property_fails_the_push_instead_of_every_record(
    emulator: HubSpotEmulator, make_destination: DestinationFactory
) -> None:
    with pytest.raises(FatalConnectorError, match="PROPERTY_DOESNT_EXIST"):
        make_destination().push("contacts", [item(i, shoe_size=44) for i in range(20)])
    assert upsert_sizes(emulator) == [20], "no bisection for a mapping problem"


def test_records_without_a_match_value_are_rejected_locally(
    emulator: HubSpotEmulator, make_destination: DestinationFactory
) -> None:
    results = make_destination().push("contacts", [item(1, email=" "), item(2)])
    assert [r.outcome for r in results] == [Outcome.REJECTED, Outcome.OK]
    assert upsert_sizes(emulator) == [1]


def test_transient_failures_that_outlast_the_retries_come_back_as_retry(
    emulator: HubSpotEmulator, make_destination: DestinationFactory
) -> None:
    emulator.faults.script("objects.batch_upsert", FaultKind.SERVER_ERROR, times=50)
    results = make_destination(attempts=2).push("contacts", [item(1), item(2)])
    assert [r.outcome for r in results] == [Outcome.RETRY] * 2
    assert all("503" in str(r.reason) for r in results)


def test_refused_credentials_raise(
    emulator: HubSpotEmulator, make_destination: DestinationFactory
) -> None:
    waits = Waits()
    with pytest.raises(AuthError):
        make_destination(sleep=waits, token="pat-revoked").push("contacts", [item(1)])
    assert waits.waits == []


def test_list_membership_add_and_remove_by_email_or_id(
    emulator: HubSpotEmulator, make_destination: DestinationFactory
) -> None:
    contacts = emulator.records("contacts")
    items = [
        PushItem("a", contacts[0].values["email"].upper(), {}),
        PushItem("b", contacts[1].id, {"member": True}),
        PushItem("c", "nobody@example.com", {}),
        PushItem("d", "987654", {}),
    ]
    results = make_destination().push("list:1", items)
    assert [r.outcome for r in results] == [
        Outcome.OK,
        Outcome.OK,
        Outcome.REJECTED,
        Outcome.REJECTED,
    ]
    assert [r.external_id for r in results[:2]] == [contacts[0].id, contacts[1].id]
    assert emulator.list_members("1") == {contacts[0].id, contacts[1].id}
    removed = make_destination().push("list:1", [PushItem("b", contacts[1].id, {"member": False})])
    assert removed[0].outcome is Outcome.OK
    assert emulator.list_members("1") == {contacts[0].id}


def test_a_list_that_takes_no_manual_members_fails_the_push(
    make_destination: DestinationFactory,
) -> None:
    with pytest.raises(FatalConnectorError, match=r"list 2 .* MANUAL or SNAPSHOT"):
        make_destination().push("list:2", [PushItem("a", "101", {})])
