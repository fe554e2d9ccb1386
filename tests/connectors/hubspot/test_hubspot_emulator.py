"""The emulator, driven by the real hubspot-api-client: what it serves and what it refuses."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import urllib3
from hubspot.crm.lists.exceptions import ApiException as ListApiException
from hubspot.crm.objects.exceptions import ApiException, UnauthorizedException

from connectors.hubspot.client import HubSpotRejected
from connectors.hubspot.emulator import DEFAULT_TOKEN, Fault, FaultKind, HubSpotEmulator
from connectors.sample_people import in_system, person
from tests.connectors.hubspot.hubspot_support import ClientFactory, RawApi


def data(response: Any) -> Any:
    return json.loads(response.data)


def refused(call: Callable[[], Any]) -> tuple[int, dict[str, Any], Any]:
    with pytest.raises((ApiException, ListApiException)) as caught:
        call()
    error = caught.value
    return error.status, json.loads(error.body), error.headers


def search_body(**extra: Any) -> dict[str, Any]:
    return {
        "filterGroups": [
            {"filters": [{"propertyName": "lastmodifieddate", "operator": "GTE", "value": "0"}]}
        ],
        "limit": 10,
        **extra,
    }


MODIFIED = {"propertyName": "lastmodifieddate"}


def upsert_input(email: str, **properties: str) -> dict[str, Any]:
    return {"idProperty": "email", "id": email, "properties": properties}


# -- seeding ------------------------------------------------------------------------------


def test_seed_is_a_noisy_slice_of_the_sample_population() -> None:
    emulator = HubSpotEmulator(people=80, seed=5, share=0.5)
    contacts = emulator.records("contacts")
    expected = [i for i in range(80) if in_system(5, i, "hubspot", 0.5)]
    assert len(contacts) == len(expected)
    emails = {c.values["email"] for c in contacts}
    assert emails == {person(5, i).email for i in expected}
    phones = [c.values["phone"] for c in contacts]
    assert any(not p.startswith("+") for p in phones), "phones should be written as people do"
    assert {c.values["company"] for c in contacts} == {
        c.values["name"] for c in emulator.records("companies")
    }
    again = HubSpotEmulator(people=80, seed=5, share=0.5).records("contacts")
    assert [c.values for c in again] == [c.values for c in contacts]


# -- auth ---------------------------------------------------------------------------------


def test_a_missing_or_unknown_token_is_a_401_invalid_authentication(
    make_api: Callable[..., RawApi],
) -> None:
    for token in ("", "pat-wrong"):
        api = make_api(token)
        with pytest.raises(UnauthorizedException) as caught:
            api.basic.get_page("contacts")
        body = json.loads(caught.value.body)
        assert body["status"] == "error"
        assert body["category"] == "INVALID_AUTHENTICATION"
        assert body["correlationId"]


# -- objects list -------------------------------------------------------------------------


def test_list_pages_by_after_cover_every_record_once(
    api: RawApi, emulator: HubSpotEmulator
) -> None:
    seen: list[str] = []
    after = None
    pages = 0
    while True:
        page = data(api.basic.get_page("contacts", limit=25, after=after))
        pages += 1
        assert len(page["results"]) <= 25
        seen += [r["id"] for r in page["results"]]
        after = (page.get("paging") or {}).get("next", {}).get("after")
        if after is None:
            break
    assert pages == 3
    assert seen == [c.id for c in emulator.records("contacts")]


def test_list_returns_requested_properties_with_system_ones(api: RawApi) -> None:
    page = data(api.basic.get_page("contacts", limit=1, properties=["phone", "nope"]))
    record = page["results"][0]
    assert set(record["properties"]) == {"phone"}
    assert record["archived"] is False
    assert record["createdAt"].endswith("Z")
    default = data(api.basic.get_page("companies", limit=1))["results"][0]
    assert "hs_lastmodifieddate" in default["properties"]


def test_list_limit_above_100_is_refused(api: RawApi) -> None:
    status, body, _ = refused(lambda: api.basic.get_page("contacts", limit=101))
    assert (status, body["category"]) == (400, "VALIDATION_ERROR")


def test_archived_records_leave_lists_and_search_and_show_with_archived_true(
    api: RawApi, emulator: HubSpotEmulator
) -> None:
    gone = emulator.records("contacts")[0].id
    api.basic.archive("contacts", gone)
    live = data(api.basic.get_page("contacts", limit=100))["results"]
    assert gone not in {r["id"] for r in live}
    found = data(api.search.do_search("contacts", search_body(limit=200)))
    assert gone not in {r["id"] for r in found["results"]}
    archived = data(api.basic.get_page("contacts", archived=True))["results"]
    assert [r["id"] for r in archived] == [gone]
    assert archived[0]["archived"] is True
    assert archived[0]["archivedAt"]


# -- search -------------------------------------------------------------------------------


def test_search_filters_and_sorts_on_last_modified(api: RawApi, emulator: HubSpotEmulator) -> None:
    ids = [c.id for c in emulator.records("contacts")]
    emulator.modify("contacts", ids[:3], at_ms=2_000_000_000_000)
    emulator.modify("contacts", ids[3:5], at_ms=2_000_000_000_500)
    body: dict[str, Any] = {
        "filterGroups": [
            {
                "filters": [
                    {
                        "propertyName": "lastmodifieddate",
                        "operator": "GTE",
                        "value": "2000000000000",
                    }
                ]
            }
        ],
        "sorts": [{"propertyName": "lastmodifieddate", "direction": "DESCENDING"}],
        "properties": ["email"],
        "limit": 10,
    }
    found = data(api.search.do_search("contacts", body))
    assert found["total"] == 5
    assert [r["id"] for r in found["results"][:2]] == sorted(ids[3:5], key=int, reverse=True)
    body["filterGroups"][0]["filters"][0].update(operator="EQ", value="2033-05-18T03:33:20.500Z")
    exact = data(api.search.do_search("contacts", body))
    assert {r["id"] for r in exact["results"]} == set(ids[3:5])
    body["filterGroups"][0]["filters"][0]["operator"] = "LT"
    before = data(api.search.do_search("contacts", body))
    assert before["total"] == len(ids) - 2


def test_companies_search_on_hs_lastmodifieddate(api: RawApi, emulator: HubSpotEmulator) -> None:
    company = emulator.records("companies")[0].id
    emulator.modify("companies", [company], at_ms=2_100_000_000_000)
    body = {
        "filterGroups": [
            {
                "filters": [
                    {
                        "propertyName": "hs_lastmodifieddate",
                        "operator": "GT",
                        "value": "2099999999999",
                    }
                ]
            }
        ]
    }
    found = data(api.search.do_search("companies", body))
    assert [r["id"] for r in found["results"]] == [company]


def test_search_pages_with_after_and_reports_the_total(api: RawApi) -> None:
    first = data(api.search.do_search("contacts", search_body(limit=50)))
    assert (first["total"], len(first["results"])) == (60, 50)
    second = data(
        api.search.do_search(
            "contacts", search_body(limit=50, after=first["paging"]["next"]["after"])
        )
    )
    assert len(second["results"]) == 10
    assert "paging" not in second


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"limit": 201}, "Limit"),
        ({"after": "10000"}, "10000"),
        ({"sorts": ["email", "firstname"]}, "one sort"),
        (
            {
                "filterGroups": [
                    {"filters": [{"propertyName": "email", "operator": "HAS_PROPERTY"}]}
                ]
                * 6
            },
            "filter groups",
        ),
        (
            {
                "filterGroups": [
                    {"filters": [{"propertyName": "email", "operator": "HAS_PROPERTY"}] * 11}
                ]
            },
            "in a group",
        ),
        (
            {
                "filterGroups": [
                    {"filters": [{"propertyName": "email", "operator": "HAS_PROPERTY"}] * 9}
                ]
                * 3
            },
            "Too many filters: 27",
        ),
        (
            {"filterGroups": [{"filters": [{"propertyName": "shoe_size", "operator": "EQ"}]}]},
            "shoe_size",
        ),
        (
            {"filterGroups": [{"filters": [dict(MODIFIED, operator="GTE", value="yesterday")]}]},
            "'yesterday' is not a valid value for lastmodifieddate",
        ),
        (
            {
                "filterGroups": [
                    {"filters": [dict(MODIFIED, operator="BETWEEN", value="0", highValue="soon")]}
                ]
            },
            "'soon' is not a valid value",
        ),
        (
            {"filterGroups": [{"filters": [dict(MODIFIED, operator="IN", values=["2024-02-30"])]}]},
            "'2024-02-30' is not a valid value",
        ),
        (
            {"filterGroups": [{"filters": [dict(MODIFIED, operator="IN", values="0")]}]},
            "must be a list",
        ),
    ],
)
def test_search_refuses_what_hubspot_refuses(
    api: RawApi, change: dict[str, Any], fragment: str
) -> None:
    status, body, _ = refused(lambda: api.search.do_search("contacts", search_body(**change)))
    assert (status, body["category"]) == (400, "VALIDATION_ERROR")
    assert fragment in body["message"]


def test_a_malformed_date_in_a_filter_is_refused_once_not_retried(
    emulator: HubSpotEmulator, make_client: ClientFactory
) -> None:
    body = search_body(filterGroups=[{"filters": [dict(MODIFIED, operator="GT", value="now")]}])
    with pytest.raises(HubSpotRejected, match="400 VALIDATION_ERROR"):
        make_client().search("contacts", body)
    assert emulator.requests("objects.search") == [("objects.search", 400)]


def test_search_stops_at_the_10000th_result() -> None:
    with HubSpotEmulator(people=10_050, seed=1, share=1.0, rate_limit=None) as emulator:
        api = RawApi(emulator.url, emulator.access_token)
        try:
            last = data(api.search.do_search("contacts", search_body(limit=200, after=9_900)))
            assert last["total"] == 10_050
            assert len(last["results"]) == 100, "results past the 10,000th are never served"
            assert "paging" not in last or int(last["paging"]["next"]["after"]) == 10_000
            status, body, _ = refused(
                lambda: api.search.do_search("contacts", search_body(after=10_000))
            )
            assert (status, body["category"]) == (400, "VALIDATION_ERROR")
        finally:
            api.close()


# -- batch writes -------------------------------------------------------------------------


def test_batch_upsert_creates_then_updates_by_email(api: RawApi, emulator: HubSpotEmulator) -> None:
    created = api.batch.upsert(
        "contacts", {"inputs": [upsert_input("New.Person@Example.com", firstname="New")]}
    )
    assert created.status == 200
    result = data(created)["results"][0]
    assert result["new"] is True
    assert result["properties"]["email"] == "new.person@example.com"
    again = data(
        api.batch.upsert(
            "contacts", {"inputs": [upsert_input("new.person@example.com", lastname="P")]}
        )
    )["results"][0]
    assert (again["id"], again["new"]) == (result["id"], False)
    stored = {c.id: c for c in emulator.records("contacts")}[result["id"]]
    assert stored.values["firstname"] == "New"
    assert stored.values["lastname"] == "P"


def test_batch_of_more_than_100_inputs_is_refused(api: RawApi, emulator: HubSpotEmulator) -> None:
    inputs = [upsert_input(f"p{i}@example.com") for i in range(101)]
    status, body, _ = refused(lambda: api.batch.upsert("contacts", {"inputs": inputs}))
    assert (status, body["category"]) == (400, "VALIDATION_ERROR")
    assert "101" in body["message"]
    assert all(c.values["email"] != "p0@example.com" for c in emulator.records("contacts"))


@pytest.mark.parametrize(
    ("properties", "error"),
    [
        ({"shoe_size": "44"}, "PROPERTY_DOESNT_EXIST"),
        ({"lastmodifieddate": "2024-01-01"}, "READ_ONLY_VALUE"),
        ({"lifecyclestage": "best-friend"}, "INVALID_OPTION"),
    ],
)
def test_invalid_properties_refuse_the_whole_batch(
    api: RawApi, emulator: HubSpotEmulator, properties: dict[str, str], error: str
) -> None:
    before = len(emulator.records("contacts"))
    inputs = [upsert_input("good@example.com"), upsert_input("bad@example.com", **properties)]
    status, body, _ = refused(lambda: api.batch.upsert("contacts", {"inputs": inputs}))
    assert (status, body["category"]) == (400, "VALIDATION_ERROR")
    assert body["message"].startswith("Property values were not valid")
    assert error in body["message"]
    assert len(emulator.records("contacts")) == before


def test_invalid_email_as_upsert_id_is_refused(api: RawApi) -> None:
    status, body, _ = refused(
        lambda: api.batch.upsert("contacts", {"inputs": [upsert_input("not-an-email")]})
    )
    assert status == 400
    assert "INVALID_EMAIL" in body["message"]


def test_upsert_refuses_duplicate_ids_and_non_unique_id_properties(api: RawApi) -> None:
    twice = [upsert_input("a@example.com"), upsert_input("A@example.com ")]
    status, body, _ = refused(lambda: api.batch.upsert("contacts", {"inputs": twice}))
    assert status == 400
    assert "Duplicate IDs" in body["message"]
    by_name = [{"idProperty": "firstname", "id": "Ada", "properties": {}}]
    status, body, _ = refused(lambda: api.batch.upsert("contacts", {"inputs": by_name}))
    assert status == 400
    assert "unique" in body["message"]


def test_malformed_json_is_a_400(api: RawApi) -> None:
    status, body, _ = refused(
        lambda: api.batch.upsert("contacts", '{"inputs": [', _content_type="text/plain")
    )
    assert (status, body["category"]) == (400, "VALIDATION_ERROR")
    assert "Invalid input JSON" in body["message"]


def test_batch_read_reports_missing_ids_in_a_207(api: RawApi, emulator: HubSpotEmulator) -> None:
    known = emulator.records("contacts")[0]
    answer = api.batch.read(
        "contacts",
        {
            "inputs": [{"id": known.values["email"].upper()}, {"id": "nobody@example.com"}],
            "idProperty": "email",
            "properties": ["email"],
            "propertiesWithHistory": [],
        },
    )
    assert answer.status == 207
    body = data(answer)
    assert [r["id"] for r in body["results"]] == [known.id]
    assert body["errors"][0]["category"] == "OBJECT_NOT_FOUND"
    assert body["errors"][0]["context"]["ids"] == ["nobody@example.com"]


def test_batch_create_and_update(api: RawApi, emulator: HubSpotEmulator) -> None:
    created = api.batch.create("contacts", {"inputs": [{"properties": {"email": "c@example.com"}}]})
    assert created.status == 201
    new_id = data(created)["results"][0]["id"]
    conflict_status, conflict, _ = refused(
        lambda: api.batch.create(
            "contacts", {"inputs": [{"properties": {"email": "c@example.com"}}]}
        )
    )
    assert (conflict_status, conflict["category"]) == (409, "CONFLICT")
    updated = api.batch.update(
        "contacts",
        {"inputs": [{"id": new_id, "properties": {"city": "Austin"}}, {"id": "999999"}]},
    )
    assert updated.status == 207
    assert data(updated)["errors"][0]["context"]["ids"] == ["999999"]
    assert {c.id: c for c in emulator.records("contacts")}[new_id].values["city"] == "Austin"


def test_write_log_holds_every_write_with_its_status(
    api: RawApi, emulator: HubSpotEmulator
) -> None:
    api.batch.upsert("contacts", {"inputs": [upsert_input("w@example.com")]})
    refused(lambda: api.batch.upsert("contacts", {"inputs": [upsert_input("bad")]}))
    api.search.do_search("contacts", search_body())
    log = emulator.write_log
    assert [(entry.path, entry.status) for entry in log] == [
        ("/crm/v3/objects/contacts/batch/upsert", 200),
        ("/crm/v3/objects/contacts/batch/upsert", 400),
    ]
    assert log[0].body["inputs"][0]["id"] == "w@example.com"


# -- lists --------------------------------------------------------------------------------


def test_list_memberships_add_remove_and_page(api: RawApi, emulator: HubSpotEmulator) -> None:
    ids = [c.id for c in emulator.records("contacts")]
    added = data(api.members.add("1", [*ids[:5], "424242"]))
    assert added == {
        "recordsIdsAdded": ids[:5],
        "recordIdsRemoved": [],
        "recordIdsMissing": ["424242"],
    }
    changed = data(
        api.members.add_and_remove("1", {"recordIdsToAdd": [ids[5]], "recordIdsToRemove": ids[:2]})
    )
    assert (changed["recordsIdsAdded"], changed["recordIdsRemoved"]) == ([ids[5]], ids[:2])
    data(api.members.remove("1", [ids[2]]))
    assert emulator.list_members("1") == set(ids[3:6])
    first = data(api.members.get_page("1", limit=2))
    assert (first["total"], len(first["results"])) == (3, 2)
    rest = data(api.members.get_page("1", after=first["paging"]["next"]["after"]))
    assert [r["recordId"] for r in first["results"] + rest["results"]] == ids[3:6]


def test_list_memberships_refuse_dynamic_and_unknown_lists(api: RawApi) -> None:
    status, body, _ = refused(lambda: api.members.add("2", ["101"]))
    assert (status, body["category"]) == (400, "VALIDATION_ERROR")
    assert "DYNAMIC" in body["message"]
    status, body, _ = refused(lambda: api.members.add("77", ["101"]))
    assert (status, body["category"]) == (404, "OBJECT_NOT_FOUND")
    status, body, _ = refused(lambda: api.members.get_page("1", limit=251))
    assert status == 400


# -- rate limits and faults ---------------------------------------------------------------


def test_request_budget_answers_429_with_the_ten_secondly_rolling_policy(
    make_api: Callable[..., RawApi],
) -> None:
    with HubSpotEmulator(people=5, rate_limit=(3, 10.0)) as emulator:
        api = RawApi(emulator.url, emulator.access_token)
        try:
            answers = [api.basic.get_page("contacts") for _ in range(3)]
            assert [a.getheader("X-HubSpot-RateLimit-Remaining") for a in answers] == [
                "2",
                "1",
                "0",
            ]
            assert answers[0].getheader("X-HubSpot-RateLimit-Max") == "3"
            assert answers[0].getheader("X-HubSpot-RateLimit-Interval-Milliseconds") == "10000"
            status, body, headers = refused(lambda: api.basic.get_page("contacts"))
        finally:
            api.close()
    assert status == 429
    assert body["errorType"] == "RATE_LIMIT"
    assert body["policyName"] == "TEN_SECONDLY_ROLLING"
    assert body["message"] == "You have reached your ten_secondly_rolling limit."
    assert 1 <= int(headers["Retry-After"]) <= 10


def test_search_takes_5_requests_a_second_and_answers_429_secondly_beyond() -> None:
    with HubSpotEmulator(people=5, rate_limit=None) as emulator:
        api = RawApi(emulator.url, emulator.access_token)
        try:
            for _ in range(5):
                assert api.search.do_search("contacts", search_body()).status == 200
            status, body, headers = refused(lambda: api.search.do_search("contacts", search_body()))
            assert api.basic.get_page("contacts").status == 200, "only searches are limited"
            time.sleep(1.0)
            assert api.search.do_search("contacts", search_body()).status == 200
        finally:
            api.close()
    assert (status, body["errorType"], body["policyName"]) == (429, "RATE_LIMIT", "SECONDLY")
    assert body["message"] == "You have reached your secondly limit."
    assert headers["Retry-After"] == "1"


def test_scripted_faults_hit_the_next_calls_of_their_endpoint_only(
    api: RawApi, emulator: HubSpotEmulator
) -> None:
    emulator.faults.script("objects.search", Fault(FaultKind.RATE_LIMIT, retry_after=7), times=2)
    emulator.faults.script("objects.list", Fault(FaultKind.SERVER_ERROR, status=502))
    for _ in range(2):
        status, body, headers = refused(lambda: api.search.do_search("contacts", search_body()))
        assert (status, body["policyName"], headers["Retry-After"]) == (429, "SECONDLY", "7")
    assert api.search.do_search("contacts", search_body()).status == 200
    status, body, _ = refused(lambda: api.basic.get_page("contacts"))
    assert (status, body["status"]) == (502, "error")
    assert api.basic.get_page("contacts").status == 200


def test_a_rate_limit_fault_names_the_limit_of_its_endpoint(
    api: RawApi, emulator: HubSpotEmulator
) -> None:
    emulator.faults.script("*", FaultKind.RATE_LIMIT, times=2)
    _, search, _ = refused(lambda: api.search.do_search("contacts", search_body()))
    _, listing, _ = refused(lambda: api.basic.get_page("contacts"))
    assert (search["policyName"], listing["policyName"]) == ("SECONDLY", "TEN_SECONDLY_ROLLING")


def test_rated_faults_are_seeded(make_api: Callable[..., RawApi]) -> None:
    def failures(fault_seed: int) -> list[int]:
        with HubSpotEmulator(people=5, rate_limit=None, fault_seed=fault_seed) as emulator:
            emulator.faults.rate("*", FaultKind.SERVER_ERROR, probability=0.5)
            api = RawApi(emulator.url, emulator.access_token)
            try:
                for _ in range(20):
                    with contextlib.suppress(ApiException):
                        api.basic.get_page("contacts")
            finally:
                api.close()
            return [status for _, status in emulator.requests()]

    first = failures(11)
    assert first == failures(11)
    assert 3 < first.count(503) < 17


def test_reset_and_slow_faults_break_the_connection(api: RawApi, emulator: HubSpotEmulator) -> None:
    emulator.faults.script("objects.list", FaultKind.RESET)
    with pytest.raises(urllib3.exceptions.ProtocolError):
        api.basic.get_page("contacts")
    emulator.faults.script("objects.list", Fault(FaultKind.TIMEOUT, delay=0.6))
    with pytest.raises(urllib3.exceptions.ReadTimeoutError):
        api.basic.get_page("contacts", _request_timeout=0.2)
    assert api.basic.get_page("contacts").status == 200


def test_auth_fault_refuses_a_good_token(api: RawApi, emulator: HubSpotEmulator) -> None:
    emulator.faults.script("*", FaultKind.AUTH)
    status, body, _ = refused(lambda: api.basic.get_page("contacts"))
    assert (status, body["category"]) == (401, "INVALID_AUTHENTICATION")


@pytest.mark.parametrize("error", ["INVALID_EMAIL", "PROPERTY_DOESNT_EXIST"])
def test_partial_failure_answers_207_with_per_input_errors(
    api: RawApi, emulator: HubSpotEmulator, error: str
) -> None:
    emulator.faults.script("write", Fault(FaultKind.PARTIAL, error=error, share=0.5))
    inputs = [upsert_input(f"part{i}@example.com") for i in range(10)]
    answer = api.batch.upsert("contacts", {"inputs": inputs})
    assert answer.status == 207
    body = data(answer)
    failed = {i for e in body["errors"] for i in e["context"]["ids"]}
    assert body["numErrors"] == len(body["errors"]) == len(failed) > 0
    assert all(
        e["category"] == "VALIDATION_ERROR" and error in e["message"] for e in body["errors"]
    )
    assert {r["properties"]["email"] for r in body["results"]} | failed == {i["id"] for i in inputs}
    stored = {c.values["email"] for c in emulator.records("contacts")}
    assert not failed & stored


def test_serve_forever_serves_until_interrupted(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code = f"from connectors.hubspot.emulator import serve_forever; serve_forever({port}, 20, 1)"
    process = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=Path(__file__).resolve().parents[3],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    api = RawApi(f"http://127.0.0.1:{port}", DEFAULT_TOKEN)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                page = data(api.basic.get_page("contacts", limit=100))
                break
            except urllib3.exceptions.HTTPError:
                assert time.monotonic() < deadline, "the emulator did not come up"
                time.sleep(0.05)
        assert len(page["results"]) == sum(in_system(1, i, "hubspot", 0.8) for i in range(20))
    finally:
        api.close()
        process.send_signal(signal.SIGINT)
        _, errors = process.communicate(timeout=20)
    assert process.returncode == 0, errors.decode()
