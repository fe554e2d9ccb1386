"""The emulator answers and refuses as Salesforce does, seen through the real simple-salesforce."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import pytest
import requests
from simple_salesforce.api import Salesforce, SFType
from simple_salesforce.exceptions import (
    SalesforceAuthenticationFailed,
    SalesforceExpiredSession,
    SalesforceGeneralError,
    SalesforceMalformedRequest,
    SalesforceOperationError,
    SalesforceRefusedRequest,
    SalesforceResourceNotFound,
)

from connectors.salesforce.emulator import DEFAULT_CREDENTIALS, SalesforceEmulator
from connectors.salesforce.faults import Endpoint, FaultKind
from tests.connectors.salesforce.sf_fixtures import raw_salesforce, raw_session

COLLECTION = "composite/sobjects/Contact/Syncd_Id__c"


@pytest.fixture
def sf(emulator: SalesforceEmulator) -> Iterator[Salesforce]:
    client = raw_salesforce(emulator)
    yield client
    client.session.close()


def contact(ext: str, **fields: Any) -> dict[str, Any]:
    return {"attributes": {"type": "Contact"}, "Syncd_Id__c": ext, "LastName": "Doe", **fields}


def upsert(sf: Salesforce, records: list[dict[str, Any]], all_or_none: bool = False) -> Any:
    return sf.restful(
        COLLECTION, method="PATCH", json={"allOrNone": all_or_none, "records": records}
    )


def bulk2(sf: Salesforce) -> Any:
    """The Bulk 2.0 handle for Contact (the library types attribute access as a union)."""
    return cast(Any, sf.bulk2).Contact


def sobject(sf: Salesforce) -> SFType:
    return cast(SFType, getattr(sf, "Contact"))  # noqa: B009


def error_code(error: pytest.ExceptionInfo[Any]) -> str:
    return str(error.value.content[0]["errorCode"])


# -- login -----------------------------------------------------------------------------
def test_password_login_gives_a_session_on_the_emulator(
    sf: Salesforce, emulator: SalesforceEmulator
) -> None:
    assert sf.sf_instance == emulator.url.removeprefix("http://")
    assert sf.session_id in emulator.state.sessions


def test_a_wrong_password_is_invalid_login(emulator: SalesforceEmulator) -> None:
    session = raw_session(emulator)
    with pytest.raises(SalesforceAuthenticationFailed) as caught:
        Salesforce(
            username="syncd@example.com", password="nope", security_token="x", session=session
        )
    session.close()
    assert caught.value.code == "INVALID_LOGIN"


def test_oauth_client_credentials(emulator: SalesforceEmulator) -> None:
    session = raw_session(emulator)
    sf = Salesforce(
        consumer_key=DEFAULT_CREDENTIALS.client_id,
        consumer_secret=DEFAULT_CREDENTIALS.client_secret,
        domain="emulator.my",
        session=session,
    )
    assert sf.query("SELECT COUNT() FROM Account")["totalSize"] == 12
    with pytest.raises(SalesforceAuthenticationFailed) as caught:
        Salesforce(consumer_key="x", consumer_secret="y", domain="emulator.my", session=session)
    session.close()
    assert caught.value.code == "invalid_grant"


def test_oauth_password_grant(emulator: SalesforceEmulator) -> None:
    creds = DEFAULT_CREDENTIALS
    session = raw_session(emulator)
    sf = Salesforce(
        username=creds.username,
        password=creds.password,
        consumer_key=creds.client_id,
        consumer_secret=creds.client_secret,
        session=session,
    )
    assert sf.query("SELECT COUNT() FROM Account")["totalSize"] == 12
    with pytest.raises(SalesforceAuthenticationFailed):
        Salesforce(
            username=creds.username,
            password=creds.password,
            consumer_key=creds.client_id,
            consumer_secret="wrong",
            session=session,
        )
    session.close()


def test_login_protocol_errors(emulator: SalesforceEmulator) -> None:
    grant = requests.post(
        f"{emulator.url}/services/oauth2/token", data={"grant_type": "magic"}, timeout=5
    )
    assert (grant.status_code, grant.json()["error"]) == (400, "unsupported_grant_type")
    soap = requests.post(f"{emulator.url}/services/Soap/u/59.0", data="<x/>", timeout=5)
    assert soap.status_code == 500
    assert "<sf:exceptionCode>INVALID_OPERATION</sf:exceptionCode>" in soap.text


@pytest.mark.parametrize("token", ["", "bogus"])
def test_missing_or_bad_auth_is_invalid_session(emulator: SalesforceEmulator, token: str) -> None:
    session = raw_session(emulator)
    sf = Salesforce(session_id=token, instance_url=emulator.url, session=session)
    with pytest.raises(SalesforceExpiredSession) as caught:
        sf.query("SELECT Id FROM Contact")
    session.close()
    assert caught.value.status == 401
    assert error_code(caught) == "INVALID_SESSION_ID"


def test_an_expired_session_is_renewed_by_the_client(
    sf: Salesforce, emulator: SalesforceEmulator
) -> None:
    old = sf.session_id
    emulator.expire_sessions()
    assert sf.query("SELECT COUNT() FROM Lead")["totalSize"] > 0
    assert sf.session_id != old


def test_refused_logins_after_expiry_fail_the_call(
    sf: Salesforce, emulator: SalesforceEmulator
) -> None:
    emulator.expire_sessions()
    emulator.refuse_logins(10)
    with pytest.raises(SalesforceAuthenticationFailed):
        sf.query("SELECT COUNT() FROM Lead")


def test_unknown_api_version_is_not_found(emulator: SalesforceEmulator, sf: Salesforce) -> None:
    old = Salesforce(
        session_id=sf.session_id, instance_url=emulator.url, session=sf.session, version="7.0"
    )
    with pytest.raises(SalesforceResourceNotFound):
        old.query("SELECT Id FROM Contact")


# -- queries -----------------------------------------------------------------------------
def test_query_pages_through_next_records_url(sf: Salesforce, emulator: SalesforceEmulator) -> None:
    first = sf.query(
        "SELECT Id FROM Contact ORDER BY Id", headers={"Sforce-Query-Options": "batchSize=200"}
    )
    assert len(first["records"]) == 200
    assert first["nextRecordsUrl"].startswith("/services/data/v59.0/query/")
    ids = [r["Id"] for r in sf.query_all_iter("SELECT Id FROM Contact ORDER BY Id")]
    assert ids == emulator.ids("Contact")
    assert first["totalSize"] == len(ids)
    assert first["records"][0]["attributes"] == {
        "type": "Contact",
        "url": f"/services/data/v59.0/sobjects/Contact/{ids[0]}",
    }


def test_default_and_minimum_page_sizes(sf: Salesforce) -> None:
    small = sf.query("SELECT Id FROM Contact", headers={"Sforce-Query-Options": "batchSize=5"})
    assert len(small["records"]) == 200, "Salesforce never pages below 200"
    full = sf.query("SELECT Id FROM Contact")
    assert full["done"] is True
    assert len(full["records"]) == full["totalSize"] <= 2000


def test_datetimes_use_the_rest_format(sf: Salesforce) -> None:
    (record,) = sf.query("SELECT SystemModstamp FROM Contact LIMIT 1")["records"]
    assert record["SystemModstamp"].endswith(".000+0000")


def test_query_all_sees_deleted_records_and_query_does_not(
    sf: Salesforce, emulator: SalesforceEmulator
) -> None:
    gone = emulator.ids("Lead")[:2]
    emulator.delete("Lead", gone)
    live = {r["Id"] for r in sf.query_all("SELECT Id FROM Lead")["records"]}
    everything = sf.query_all("SELECT Id, IsDeleted FROM Lead", include_deleted=True)["records"]
    assert not live & set(gone)
    assert {r["Id"] for r in everything if r["IsDeleted"]} == set(gone)


@pytest.mark.parametrize(
    ("soql", "code"),
    [
        ("SELECT Foo FROM Contact", "INVALID_FIELD"),
        ("SELECT Id FROM Nothing", "INVALID_TYPE"),
        ("SELECT Id FROM Contact WHERE Email LIKE 'a%'", "MALFORMED_QUERY"),
        (
            "SELECT Id FROM Contact WHERE SystemModstamp > '2024-01-01T00:00:00Z'",
            "INVALID_QUERY_FILTER_OPERATOR",
        ),
        ("SELECT Id FROM Contact WHERE Birthdate > '1990-01-01'", "INVALID_QUERY_FILTER_OPERATOR"),
        ("SELECT Id FROM Contact WHERE SystemModstamp >= 2024-02-30T00:00:00Z", "MALFORMED_QUERY"),
        ("SELECT Id FROM Contact WHERE Birthdate > 1990-02-30", "MALFORMED_QUERY"),
        ("SELECT Id, Email, Email FROM Contact", "INVALID_FIELD"),
    ],
)
def test_bad_queries_are_refused(sf: Salesforce, soql: str, code: str) -> None:
    with pytest.raises(SalesforceMalformedRequest) as caught:
        sf.query(soql)
    assert error_code(caught) == code


def test_date_fields_take_unquoted_dates(sf: Salesforce, emulator: SalesforceEmulator) -> None:
    born = sorted(
        (row["Birthdate"], row["Id"])
        for row in emulator.state.org.rows("Contact", include_deleted=False)
    )
    middle = born[len(born) // 2][0]
    records = sf.query_all(f"SELECT Id FROM Contact WHERE Birthdate > {middle}")["records"]
    assert {r["Id"] for r in records} == {record_id for day, record_id in born if day > middle}


def test_limit_info_header_reports_usage(sf: Salesforce) -> None:
    sf.query("SELECT COUNT() FROM Contact")
    first = sf.api_usage["api-usage"].used
    sf.query("SELECT COUNT() FROM Contact")
    assert sf.api_usage["api-usage"].used == first + 1
    assert sf.api_usage["api-usage"].total == 15000


def test_describe_lists_fields_and_external_ids(sf: Salesforce) -> None:
    fields = {f["name"]: f for f in sobject(sf).describe()["fields"]}
    assert fields["Syncd_Id__c"]["externalId"] is True
    assert fields["SystemModstamp"]["updateable"] is False
    assert fields["Email"]["type"] == "email"


def test_get_deleted_and_updated(sf: Salesforce, emulator: SalesforceEmulator) -> None:
    start = emulator.now
    changed, removed = emulator.ids("Contact")[:2], emulator.ids("Contact")[2:3]
    emulator.modify("Contact", changed, Phone="555-0100")
    emulator.delete("Contact", removed)
    end = emulator.now + timedelta(seconds=1)
    assert [r["id"] for r in sobject(sf).deleted(start, end)["deletedRecords"]] == removed
    assert sobject(sf).updated(start, end)["ids"] == changed
    with pytest.raises(SalesforceMalformedRequest) as caught:
        sobject(sf).deleted(start - timedelta(days=31), end)
    assert error_code(caught) == "INVALID_REPLICATION_DATE"


# -- sObject Collections -----------------------------------------------------------------
def test_collection_upsert_creates_then_updates(
    sf: Salesforce, emulator: SalesforceEmulator
) -> None:
    (created,) = upsert(sf, [contact("ext-1", Email="a@example.com")])
    assert created["success"] is True
    assert created["created"] is True
    (updated,) = upsert(sf, [contact("ext-1", Email="b@example.com")])
    assert (updated["id"], updated["created"]) == (created["id"], False)
    assert emulator.record("Contact", created["id"])["Email"] == "b@example.com"


def test_per_record_errors_do_not_block_the_batch(
    sf: Salesforce, emulator: SalesforceEmulator
) -> None:
    results = upsert(
        sf,
        [
            contact("ok-1"),
            contact("bad-email", Email="nope"),
            {"attributes": {"type": "Contact"}, "Syncd_Id__c": "no-name"},
            contact("audit", SystemModstamp="2024-01-01T00:00:00Z"),
            contact("too-long", MailingCity="x" * 41),
            contact("ok-2"),
        ],
    )
    errors = [
        (r["errors"][0]["statusCode"], r["errors"][0]["fields"]) if r["errors"] else None
        for r in results
    ]
    assert errors == [
        None,
        ("INVALID_EMAIL_ADDRESS", ["Email"]),
        ("REQUIRED_FIELD_MISSING", ["LastName"]),
        ("INVALID_FIELD_FOR_INSERT_UPDATE", ["SystemModstamp"]),
        ("STRING_TOO_LONG", ["MailingCity"]),
        None,
    ]
    assert [r["success"] for r in results] == [True, False, False, False, False, True]
    assert len(emulator.find("Contact", "Syncd_Id__c", "ok-2")) == 1
    assert not emulator.find("Contact", "Syncd_Id__c", "bad-email")


def test_all_or_none_rolls_everything_back(sf: Salesforce, emulator: SalesforceEmulator) -> None:
    results = upsert(sf, [contact("fine"), contact("bad", Email="nope")], all_or_none=True)
    assert results[0]["errors"][0]["statusCode"] == "ALL_OR_NONE_OPERATION_ROLLED_BACK"
    assert not emulator.find("Contact", "Syncd_Id__c", "fine")


def test_records_sharing_an_external_id_in_one_request_all_fail(
    sf: Salesforce, emulator: SalesforceEmulator
) -> None:
    results = upsert(
        sf, [contact("twin", FirstName="Ann"), contact("single"), contact("twin", FirstName="Bo")]
    )
    assert [r["success"] for r in results] == [False, True, False]
    duplicate = {
        "statusCode": "DUPLICATE_VALUE",
        "message": "Duplicate external id specified: twin",
        "fields": [],
    }
    assert [r["errors"] for r in results[::2]] == [[duplicate], [duplicate]]
    assert not emulator.find("Contact", "Syncd_Id__c", "twin")


def test_more_than_200_records_are_refused(sf: Salesforce, emulator: SalesforceEmulator) -> None:
    with pytest.raises(SalesforceMalformedRequest) as caught:
        upsert(sf, [contact(f"e{i}") for i in range(201)])
    assert error_code(caught) == "EXCEEDED_ID_LIMIT"
    assert emulator.writes == []
    assert len(upsert(sf, [contact(f"e{i}") for i in range(200)])) == 200


def test_an_unknown_field_refuses_the_whole_request(sf: Salesforce) -> None:
    with pytest.raises(SalesforceMalformedRequest) as caught:
        upsert(sf, [contact("a"), contact("b", Favourite_Colour__c="red")])
    assert error_code(caught) == "INVALID_FIELD"
    assert "Favourite_Colour__c" in json.dumps(caught.value.content)


def test_malformed_json_is_refused(sf: Salesforce) -> None:
    with pytest.raises(SalesforceMalformedRequest) as caught:
        sf.restful(COLLECTION, method="PATCH", data='{"records": [')
    assert error_code(caught) == "JSON_PARSER_ERROR"


def test_records_need_their_type(sf: Salesforce) -> None:
    with pytest.raises(SalesforceMalformedRequest) as caught:
        upsert(sf, [{"Syncd_Id__c": "x", "LastName": "Doe"}])
    assert error_code(caught) == "INVALID_TYPE"
    with pytest.raises(SalesforceMalformedRequest):
        upsert(sf, [{"attributes": {"type": "Lead"}, "Syncd_Id__c": "x", "LastName": "Doe"}])


def test_upsert_needs_an_external_id_field(sf: Salesforce) -> None:
    with pytest.raises(SalesforceResourceNotFound):
        sf.restful("composite/sobjects/Contact/Email", method="PATCH", json={"records": []})


def test_writes_are_logged(sf: Salesforce, emulator: SalesforceEmulator) -> None:
    upsert(sf, [contact("a"), contact("b")])
    upsert(sf, [contact("c")])
    assert [(w.api, w.sobject, w.records) for w in emulator.writes] == [
        ("collections", "Contact", 2),
        ("collections", "Contact", 1),
    ]


# -- faults and budget -------------------------------------------------------------------
def test_request_limit_fault_is_403(sf: Salesforce, emulator: SalesforceEmulator) -> None:
    emulator.inject(Endpoint.QUERY, FaultKind.REQUEST_LIMIT)
    with pytest.raises(SalesforceRefusedRequest) as caught:
        sf.query("SELECT Id FROM Contact")
    assert error_code(caught) == "REQUEST_LIMIT_EXCEEDED"
    assert sf.query("SELECT COUNT() FROM Contact")["totalSize"] > 0, "only the next call fails"


def test_server_error_fault_is_503(sf: Salesforce, emulator: SalesforceEmulator) -> None:
    emulator.inject(Endpoint.QUERY, FaultKind.SERVER_ERROR)
    with pytest.raises(SalesforceGeneralError) as caught:
        sf.query("SELECT Id FROM Contact")
    assert caught.value.status == 503


def test_reset_fault_drops_the_connection(sf: Salesforce, emulator: SalesforceEmulator) -> None:
    emulator.inject(Endpoint.QUERY, FaultKind.RESET)
    with pytest.raises(requests.ConnectionError):
        sf.query("SELECT Id FROM Contact")


def test_slow_fault_outlasts_the_client_timeout(
    sf: Salesforce, emulator: SalesforceEmulator
) -> None:
    emulator.inject(Endpoint.COLLECTIONS, FaultKind.SLOW)
    with pytest.raises(requests.Timeout):
        upsert(sf, [contact("late")])
    assert emulator.find("Contact", "Syncd_Id__c", "late"), (
        "the write happened, the answer was lost"
    )


def test_expired_session_fault_forces_a_new_login(
    sf: Salesforce, emulator: SalesforceEmulator
) -> None:
    old = sf.session_id
    emulator.inject(Endpoint.QUERY, FaultKind.EXPIRED_SESSION)
    sf.query("SELECT COUNT() FROM Contact")
    assert sf.session_id != old


def test_partial_fault_rejects_some_records(sf: Salesforce, emulator: SalesforceEmulator) -> None:
    emulator.inject(Endpoint.COLLECTIONS, FaultKind.PARTIAL)
    results = upsert(sf, [contact(f"p{i}") for i in range(20)])
    failed = [r for r in results if not r["success"]]
    assert 0 < len(failed) < 20
    assert {r["errors"][0]["statusCode"] for r in failed} == {"FIELD_CUSTOM_VALIDATION_EXCEPTION"}


def test_faults_by_rate_are_seeded(emulator: SalesforceEmulator) -> None:
    def pattern() -> list[bool]:
        emulator.inject_rate(Endpoint.SOBJECTS, FaultKind.SERVER_ERROR, 0.5, seed=3)
        outcomes = []
        sf = raw_salesforce(emulator)
        for _ in range(12):
            try:
                sobject(sf).describe()
                outcomes.append(True)
            except SalesforceGeneralError:
                outcomes.append(False)
        sf.session.close()
        return outcomes

    first = pattern()
    assert True in first
    assert False in first
    assert pattern() == first
    emulator.inject_rate(Endpoint.SOBJECTS, FaultKind.SERVER_ERROR, 0)
    emulator.faults.clear()


def test_request_budget_refuses_beyond_the_window() -> None:
    with SalesforceEmulator(people=5, budget=(3, 60.0)) as emulator:
        sf = raw_salesforce(emulator)
        for _ in range(3):
            sf.query("SELECT COUNT() FROM Contact")
        with pytest.raises(SalesforceRefusedRequest) as caught:
            sf.query("SELECT COUNT() FROM Contact")
        sf.session.close()
    assert error_code(caught) == "REQUEST_LIMIT_EXCEEDED"


# -- Bulk 2.0 ----------------------------------------------------------------------------
def test_bulk_query_pages_by_locator(sf: Salesforce, emulator: SalesforceEmulator) -> None:
    pages = list(bulk2(sf).query("SELECT Id, IsDeleted FROM Contact", max_records=150, wait=0))
    rows = [row for page in pages for row in csv.DictReader(io.StringIO(page))]
    assert len(pages) == -(-len(emulator.ids("Contact")) // 150)
    assert [row["Id"] for row in rows] == emulator.ids("Contact")
    assert {row["IsDeleted"] for row in rows} == {"false"}


def test_bulk_query_refuses_aggregates_and_bad_soql(sf: Salesforce) -> None:
    with pytest.raises(SalesforceMalformedRequest):
        list(bulk2(sf).query("SELECT COUNT() FROM Contact", wait=0))
    with pytest.raises(SalesforceMalformedRequest):
        list(bulk2(sf).query("SELECT Nope FROM Contact", wait=0))
    no_such_day = "SELECT Id FROM Contact WHERE SystemModstamp >= 2024-02-30T00:00:00Z"
    with pytest.raises(SalesforceMalformedRequest):
        list(bulk2(sf).query(no_such_day, wait=0))


def test_bulk_ingest_upserts_and_reports_per_record(
    sf: Salesforce, emulator: SalesforceEmulator
) -> None:
    records = [
        {"Syncd_Id__c": "b1", "LastName": "One", "Email": "one@example.com"},
        {"Syncd_Id__c": "b2", "LastName": "Two", "Email": "broken"},
    ]
    (job,) = bulk2(sf).upsert(records=records, external_id_field="Syncd_Id__c", wait=0)
    assert (job["numberRecordsProcessed"], job["numberRecordsFailed"]) == (2, 1)
    report = bulk2(sf).get_all_ingest_records(job["job_id"])
    assert [r["Syncd_Id__c"] for r in report["successfulRecords"]] == ["b1"]
    # Code, message (quoting the value), then the fields it concerns.
    assert report["failedRecords"][0]["sf__Error"] == (
        "INVALID_EMAIL_ADDRESS:Email: invalid email address: broken:Email --"
    )
    assert report["unprocessedRecords"] == []
    assert [(w.api, w.records) for w in emulator.writes] == [("bulk", 2)]


def test_bulk_ingest_fails_every_row_sharing_an_external_id(
    sf: Salesforce, emulator: SalesforceEmulator
) -> None:
    records = [
        {"Syncd_Id__c": "twin", "LastName": "Ann"},
        {"Syncd_Id__c": "b1", "LastName": "One"},
        {"Syncd_Id__c": "twin", "LastName": "Bo"},
    ]
    (job,) = bulk2(sf).upsert(records=records, external_id_field="Syncd_Id__c", wait=0)
    report = bulk2(sf).get_all_ingest_records(job["job_id"])
    assert [r["Syncd_Id__c"] for r in report["successfulRecords"]] == ["b1"]
    assert [(r["LastName"], r["sf__Error"]) for r in report["failedRecords"]] == [
        ("Ann", "DUPLICATE_VALUE:Duplicate external id specified: twin:--"),
        ("Bo", "DUPLICATE_VALUE:Duplicate external id specified: twin:--"),
    ]
    assert not emulator.find("Contact", "Syncd_Id__c", "twin")


def test_bulk_ingest_fails_a_job_with_an_unknown_column(sf: Salesforce) -> None:
    with pytest.raises(SalesforceOperationError, match="Field name not found : Shoe_Size__c"):
        bulk2(sf).upsert(
            records=[{"Syncd_Id__c": "x", "Shoe_Size__c": "9"}],
            external_id_field="Syncd_Id__c",
            wait=0,
        )


def test_bulk_ingest_job_rules(sf: Salesforce) -> None:
    jobs = sf.bulk2_url + "ingest"
    headers = sf.headers

    def post(body: dict[str, Any]) -> requests.Response:
        return sf.session.post(jobs, data=json.dumps(body), headers=headers)

    assert post({"object": "Nothing", "operation": "upsert"}).status_code == 400
    no_ext = post({"object": "Contact", "operation": "upsert", "externalIdFieldName": "Email"})
    assert no_ext.json()[0]["errorCode"] == "INVALIDJOB"
    job = post({"object": "Contact", "operation": "upsert", "externalIdFieldName": "Syncd_Id__c"})
    job_id = job.json()["id"]
    csv_headers = {**headers, "Content-Type": "text/csv"}
    assert (
        sf.session.put(
            f"{jobs}/{job_id}/batches", data="Syncd_Id__c,LastName\nz,Z\n", headers=csv_headers
        ).status_code
        == 201
    )
    closed = sf.session.patch(
        f"{jobs}/{job_id}", data='{"state": "UploadComplete"}', headers=headers
    )
    assert closed.json()["state"] == "JobComplete"
    late = sf.session.put(f"{jobs}/{job_id}/batches", data="Syncd_Id__c\ny\n", headers=csv_headers)
    assert late.status_code == 409


# -- standalone ----------------------------------------------------------------------------
def test_runs_standalone_for_the_command_line(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[3]
    process = subprocess.Popen(
        [sys.executable, "-m", "connectors.salesforce.emulator", "--people", "5", "--port", "0"],
        cwd=root,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        url = banner.split(" on ")[1].split()[0].rstrip(":")
        token = requests.post(
            f"{url}/services/oauth2/token",
            data={"grant_type": "client_credentials"},
            auth=(DEFAULT_CREDENTIALS.client_id, DEFAULT_CREDENTIALS.client_secret),
            timeout=5,
        )
        assert token.json()["instance_url"] == url
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0, "SIGTERM stops it cleanly"
        assert process.stdout is not None
        process.stdout.close()


def _call(sf: Salesforce, method: str, path: str, **kwargs: Any) -> requests.Response:
    """A raw call with the session's auth, for answers the client hides."""
    headers = {**sf.headers, **kwargs.pop("headers", {})}
    return sf.session.request(method, sf.base_url + path, headers=headers, **kwargs)


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "code"),
    [
        ("GET", "query/", {}, 400, "MALFORMED_QUERY"),
        ("GET", "query/01gNOPE-200", {}, 400, "INVALID_QUERY_LOCATOR"),
        ("GET", "sobjects/Nothing/describe/", {}, 404, "NOT_FOUND"),
        ("GET", "sobjects/Contact/deleted/?start=yesterday&end=today", {}, 400, "MALFORMED_QUERY"),
        (
            "GET",
            "sobjects/Contact/updated/?start=2025-02-03T00:00:00Z&end=2025-02-01T00:00:00Z",
            {},
            400,
            "INVALID_REPLICATION_DATE",
        ),
        ("PATCH", "composite/sobjects/Nothing/Syncd_Id__c", {"json": {}}, 404, "NOT_FOUND"),
        ("PATCH", COLLECTION, {"json": [1, 2]}, 400, "JSON_PARSER_ERROR"),
        ("PATCH", COLLECTION, {"json": {"records": ["x"]}}, 400, "JSON_PARSER_ERROR"),
        ("POST", "jobs/query", {"json": {"operation": "delete"}}, 400, "INVALIDJOB"),
        ("POST", "jobs/query", {"data": "{"}, 400, "JSON_PARSER_ERROR"),
        ("GET", "jobs/query/750NOPE", {}, 404, "NOT_FOUND"),
        (
            "POST",
            "jobs/ingest",
            {"json": {"object": "Contact", "operation": "insert"}},
            400,
            "INVALIDJOB",
        ),
        (
            "POST",
            "jobs/ingest",
            {
                "json": {
                    "object": "Contact",
                    "operation": "upsert",
                    "externalIdFieldName": "Syncd_Id__c",
                    "contentType": "JSON",
                }
            },
            400,
            "INVALIDJOB",
        ),
    ],
)
def test_request_rules(
    sf: Salesforce, method: str, path: str, kwargs: dict[str, Any], status: int, code: str
) -> None:
    answer = _call(sf, method, path, **kwargs)
    assert answer.status_code == status
    assert answer.json()[0]["errorCode"] == code


def test_bulk_job_lifecycle_rules(sf: Salesforce) -> None:
    query = _call(
        sf, "POST", "jobs/query", json={"operation": "query", "query": "SELECT Id FROM Lead"}
    )
    job = query.json()["id"]
    early = _call(sf, "GET", f"jobs/query/{job}/results")
    assert (early.status_code, early.json()[0]["errorCode"]) == (400, "INVALIDJOBSTATE")
    states = [_call(sf, "GET", f"jobs/query/{job}").json()["state"] for _ in range(2)]
    assert states == ["InProgress", "JobComplete"]
    bad_locator = _call(sf, "GET", f"jobs/query/{job}/results", params={"locator": "!!"})
    assert bad_locator.status_code == 400

    ingest = _call(
        sf,
        "POST",
        "jobs/ingest",
        json={"object": "Contact", "operation": "upsert", "externalIdFieldName": "syncd_id__c"},
    )
    assert ingest.json()["externalIdFieldName"] == "Syncd_Id__c"
    job = ingest.json()["id"]
    as_json = _call(sf, "PUT", f"jobs/ingest/{job}/batches", data="a,b\n")
    assert as_json.json()[0]["errorCode"] == "INVALIDCONTENTTYPE"
    aborted = _call(sf, "PATCH", f"jobs/ingest/{job}", json={"state": "Aborted"})
    assert aborted.json()["state"] == "Aborted"
    again = _call(sf, "PATCH", f"jobs/ingest/{job}", json={"state": "UploadComplete"})
    assert (again.status_code, again.json()[0]["errorCode"]) == (409, "INVALIDJOBSTATE")
    assert _call(sf, "GET", f"jobs/ingest/{job}/weirdResults").status_code == 404
