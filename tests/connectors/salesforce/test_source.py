"""The Salesforce source beyond the standard suite: shared timestamps, the look-back, lost
query locators, bulk reads, options."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connectors.salesforce.client import QueryLocatorLost
from connectors.salesforce.emulator import SalesforceEmulator
from connectors.salesforce.faults import Endpoint, FaultKind
from connectors.salesforce.source import SalesforceSource, page_after, soql_datetime, start_walk
from syncd.connector import EnvRef, JsonValue, Page
from syncd.errors import FatalConnectorError
from tests.connectors.salesforce.sf_fixtures import client_for


def source_for(emulator: SalesforceEmulator, **overrides: Any) -> SalesforceSource:
    """A source on `emulator` whose clock is the org's virtual one."""
    return SalesforceSource(
        client_for(emulator, **overrides), clock=lambda: emulator.now.timestamp()
    )


def read(
    emulator: SalesforceEmulator, stream: str, cursor: JsonValue | None, **overrides: Any
) -> list[Page]:
    source = source_for(emulator, **overrides)
    try:
        return list(source.read(stream, json.loads(json.dumps(cursor))))
    finally:
        source.close()


def ids(pages: list[Page]) -> list[str]:
    return [str(record.payload["Id"]) for page in pages for record in page.records]


def test_records_sharing_a_timestamp_across_pages_arrive_once(
    emulator: SalesforceEmulator,
) -> None:
    before = {"modstamp": soql_datetime(emulator.now)}  # after every seeded record
    crowd = emulator.ids("Contact")[:300]
    stamp = emulator.modify("Contact", crowd, MailingCity="Porto")
    pages = read(emulator, "Contact", before)
    assert len(pages) == 2, "300 records at one timestamp span two 200-record pages"
    assert sorted(ids(pages)) == sorted(crowd)
    assert {page.cursor["modstamp"] for page in pages} == {stamp.strftime("%Y-%m-%dT%H:%M:%S.000Z")}
    # Killed after the first page: the resumed run looks back, so it reads all 300 again.
    assert sorted(ids(read(emulator, "Contact", pages[0].cursor))) == sorted(crowd)
    assert sorted(ids(read(emulator, "Contact", pages[-1].cursor))) == sorted(crowd)


def test_a_later_change_at_a_seen_timestamp_is_not_lost(emulator: SalesforceEmulator) -> None:
    first, second = emulator.ids("Lead")[:2]
    emulator.modify("Lead", [first], Status="Working")
    cursor = read(emulator, "Lead", None)[-1].cursor
    emulator.modify("Lead", [first, second], Status="Closed")
    assert sorted(ids(read(emulator, "Lead", cursor))) == sorted([first, second])


def _rewind(emulator: SalesforceEmulator, seconds: int) -> None:
    """Stamp the emulator's next change `seconds` - 1 before its last one."""
    with emulator.org.lock:
        emulator.org.now -= timedelta(seconds=seconds)


def test_a_second_edit_within_the_same_second_is_read(emulator: SalesforceEmulator) -> None:
    lead = emulator.ids("Lead")[0]
    stamp = emulator.modify("Lead", [lead], Status="Working")
    cursor = read(emulator, "Lead", None)[-1].cursor
    # SystemModstamp counts whole seconds: an edit later in the same second keeps the stamp.
    _rewind(emulator, 1)
    assert emulator.modify("Lead", [lead], Status="Closed") == stamp
    (record,) = (r for page in read(emulator, "Lead", cursor) for r in page.records)
    assert (record.payload["Id"], record.payload["Status"]) == (lead, "Closed")


def test_a_change_visible_after_a_later_one_is_read_next_time(
    emulator: SalesforceEmulator,
) -> None:
    early, late, gone = emulator.ids("Contact")[:3]
    emulator.modify("Contact", [early], MailingCity="Porto")
    cursor = read(emulator, "Contact", None)[-1].cursor
    # A long transaction stamped its rows 30 s before that edit but commits only now.
    _rewind(emulator, 30)
    emulator.modify("Contact", [late], MailingCity="Faro")
    emulator.delete("Contact", [gone])
    pages = read(emulator, "Contact", cursor)
    assert sorted(ids(pages)) == sorted([early, late])
    assert [d for page in pages for d in page.deleted_ids] == [gone]
    # Beyond the look-back (and the clock skew margin, from a cursor that tells no read start),
    # the stored time is final.
    no_start = {"modstamp": cursor["modstamp"]}
    assert ids(read(emulator, "Contact", no_start, lookback_seconds=10)) == [early]


def _pass(emulator: SalesforceEmulator, minutes: int) -> None:
    """Let `minutes` pass on the emulator's clock without any change."""
    with emulator.org.lock:
        emulator.org.now += timedelta(minutes=minutes)


def test_a_stream_gone_quiet_reads_only_its_stored_time_again(
    emulator: SalesforceEmulator,
) -> None:
    cursor: JsonValue = {"modstamp": soql_datetime(emulator.now)}  # after every seeded record
    # An import: 40 records a second apart, all within one look-back of the newest.
    contacts = emulator.ids("Contact")[:40]
    for contact in contacts:
        emulator.modify("Contact", [contact], MailingCity="Porto")
    counts = []
    for _ in range(3):
        _pass(emulator, 20)
        source = source_for(emulator)
        queries = _counting_queries(source)
        try:
            pages = list(source.read("Contact", json.loads(json.dumps(cursor))))
        finally:
            source.close()
        cursor = pages[-1].cursor
        counts.append((len(ids(pages)), len(queries)))
    # The first read takes the import; later ones, started more than a look-back after it,
    # read only the record at the stored time, with one query each.
    assert counts == [(40, 1), (1, 1), (1, 1)]


def _counting_queries(source: SalesforceSource) -> list[str]:
    """The SOQL of every query `source` runs from now on (queryMore calls count as "more")."""
    asked: list[str] = []
    query, query_more = source.client.query, source.client.query_more

    def counted_query(soql: str, include_deleted: bool) -> Any:
        asked.append(soql)
        return query(soql, include_deleted)

    def counted_more(url: str) -> Any:
        asked.append("more")
        return query_more(url)

    source.client.query = counted_query  # type: ignore[method-assign]
    source.client.query_more = counted_more  # type: ignore[method-assign]
    return asked


def test_deleted_records_come_as_deleted_ids_only(emulator: SalesforceEmulator) -> None:
    cursor = read(emulator, "Lead", None)[-1].cursor
    gone = emulator.ids("Lead")[3:5]
    emulator.delete("Lead", gone)
    pages = read(emulator, "Lead", cursor)
    assert sorted(d for page in pages for d in page.deleted_ids) == sorted(gone)
    assert not set(gone) & set(ids(pages))


def test_payloads_carry_no_attributes_and_say_where_they_came_from(
    emulator: SalesforceEmulator,
) -> None:
    record = read(emulator, "Account", None)[0].records[0]
    assert "attributes" not in record.payload
    assert record.location == f"/services/data/v59.0/sobjects/Account/{record.payload['Id']}"
    assert record.payload["SystemModstamp"].endswith("+0000")


def test_the_fields_option_picks_columns(emulator: SalesforceEmulator) -> None:
    pages = read(emulator, "Contact", None, fields={"Contact": ("Email", "Phone")})
    assert set(pages[0].records[0].payload) == {
        "Id",
        "IsDeleted",
        "SystemModstamp",
        "Email",
        "Phone",
    }


@pytest.mark.parametrize(
    ("stream", "cursor", "overrides", "message"),
    [
        ("Opportunity", None, {}, "not one of the configured objects"),
        ("Contact", None, {"fields": {"Contact": ("Shoe_Size__c",)}}, "no field"),
        ("Contact", {"since": 1}, {}, "not a Salesforce cursor"),
    ],
)
def test_impossible_reads_are_fatal(
    emulator: SalesforceEmulator,
    stream: str,
    cursor: JsonValue,
    overrides: dict[str, Any],
    message: str,
) -> None:
    with pytest.raises(FatalConnectorError, match=message):
        read(emulator, stream, cursor, **overrides)


def test_streams_are_the_configured_objects(emulator: SalesforceEmulator) -> None:
    source = source_for(emulator, objects=("Lead",))
    assert source.streams() == ["Lead"]
    source.close()


def test_a_large_full_read_runs_as_a_bulk_query(emulator: SalesforceEmulator) -> None:
    emulator.modify("Contact", emulator.ids("Contact")[:1], LastName='O"Brien, Jr\nIII')
    rest = read(emulator, "Contact", None)
    bulk = read(emulator, "Contact", None, bulk_query_threshold=100, bulk_page_size=150)
    assert emulator.bulk_jobs == [("query", "queryAll", "Contact")]
    assert len(bulk) == -(-len(ids(rest)) // 150)
    assert ids(bulk) == ids(rest)
    by_id = {r.payload["Id"]: r.payload for page in rest for r in page.records}
    for record in (r for page in bulk for r in page.records):
        assert record.payload == by_id[record.payload["Id"]], "bulk and REST payloads differ"
    # A run killed inside the bulk read resumes incrementally, over REST, from the page cursor,
    # reading the look-back before it again.
    resumed = ids(read(emulator, "Contact", bulk[0].cursor, bulk_query_threshold=100))
    assert len(resumed) == len(set(resumed))
    assert set(ids(bulk[1:])) <= set(resumed) <= set(ids(bulk))
    assert len(emulator.bulk_jobs) == 1


def test_an_incremental_read_never_goes_bulk(emulator: SalesforceEmulator) -> None:
    cursor = {"modstamp": "2024-01-01T00:00:00.000Z", "ids": []}
    assert ids(read(emulator, "Contact", cursor, bulk_query_threshold=1))
    assert emulator.bulk_jobs == []


def test_a_session_expiring_between_pages_is_renewed(emulator: SalesforceEmulator) -> None:
    source = source_for(emulator)
    pages = source.read("Contact", None)
    first = next(pages)
    emulator.expire_sessions()
    rest = list(pages)
    source.close()
    assert len(ids([first, *rest])) == len(emulator.ids("Contact"))


def test_an_answer_lost_on_the_last_page_restarts_the_query(emulator: SalesforceEmulator) -> None:
    source = source_for(emulator)
    try:
        pages = source.read("Contact", None)
        taken = [next(pages), next(pages)]
        # Salesforce serves the last page and forgets the locator, but the answer comes too
        # late: the retry of the same nextRecordsUrl meets INVALID_QUERY_LOCATOR.
        emulator.inject(Endpoint.QUERY, FaultKind.SLOW)
        taken += list(pages)
    finally:
        source.close()
    assert len(taken) == 3
    assert sorted(ids(taken)) == sorted(emulator.ids("Contact"))


def _losing_locators(source: SalesforceSource, times: int) -> None:
    """Make the next `times` queryMore calls fail as on an expired or evicted locator."""
    query_more = source.client.query_more
    lost = iter(range(times))

    def flaky(url: str) -> Any:
        if next(lost, None) is not None:
            raise QueryLocatorLost("Salesforce lost the query's place: 400 INVALID_QUERY_LOCATOR")
        return query_more(url)

    source.client.query_more = flaky  # type: ignore[method-assign]


def test_a_locator_lost_inside_shared_timestamps_restarts_exactly(
    emulator: SalesforceEmulator,
) -> None:
    before = {"modstamp": soql_datetime(emulator.now)}  # after every seeded record
    crowd = emulator.ids("Contact")[:300]
    emulator.modify("Contact", crowd, MailingCity="Porto")
    source = source_for(emulator)
    try:
        _losing_locators(source, times=1)
        pages = list(source.read("Contact", before))
    finally:
        source.close()
    assert len(ids(pages)) == len(set(ids(pages))) == 300
    assert set(ids(pages)) == set(crowd)


def test_a_locator_lost_again_before_any_progress_is_fatal(emulator: SalesforceEmulator) -> None:
    stamp = emulator.modify("Contact", emulator.ids("Contact")[:300], MailingCity="Porto")
    source = source_for(emulator)
    try:
        # The restarted query's first page holds only the 200 rows already taken.
        _losing_locators(source, times=2)
        with pytest.raises(QueryLocatorLost):
            list(source.read("Contact", {"modstamp": soql_datetime(stamp), "ids": []}))
    finally:
        source.close()


def test_a_bulk_session_expiry_means_one_fresh_login(emulator: SalesforceEmulator) -> None:
    emulator.inject(Endpoint.BULK_QUERY, FaultKind.EXPIRED_SESSION)
    pages = read(emulator, "Lead", None, bulk_query_threshold=1)
    assert sorted(ids(pages)) == sorted(emulator.ids("Lead"))
    assert emulator.bulk_jobs == [("query", "queryAll", "Lead")]


def test_oauth_client_credentials_work_too(emulator: SalesforceEmulator) -> None:
    pages = read(
        emulator,
        "Account",
        None,
        username=None,
        password=None,
        security_token=None,
        domain="emulator.my",
        client_id=EnvRef(env="SF_TEST_CLIENT_ID"),
        client_secret=EnvRef(env="SF_TEST_CLIENT_SECRET"),
    )
    assert len(ids(pages)) == 12


LOOKBACK = timedelta(seconds=2)


def _server(rows: list[dict[str, Any]], since: datetime | None, size: int) -> list[list[Any]]:
    """What Salesforce answers to `SystemModstamp >= since ORDER BY SystemModstamp, Id`."""
    chosen = sorted(
        (r for r in rows if since is None or r["SystemModstamp"] >= since),
        key=lambda r: (r["SystemModstamp"], r["Id"]),
    )
    wire = [{**r, "SystemModstamp": soql_datetime(r["SystemModstamp"])} for r in chosen]
    return [wire[i : i + size] for i in range(0, len(wire), size)]


def _pages(rows: list[dict[str, Any]], cursor: JsonValue | None, size: int) -> list[Page]:
    walk = start_walk(json.loads(json.dumps(cursor)), LOOKBACK.total_seconds())
    pages = (page_after(walk, chunk, lambda i: i, None) for chunk in _server(rows, walk.at, size))
    return [page for page in pages if page is not None]


def _since(rows: list[dict[str, Any]], cursor: JsonValue) -> list[str]:
    """The ids a read after `cursor` must bring: every row in or after its look-back."""
    start = datetime.fromisoformat(cursor["modstamp"]) - LOOKBACK
    return sorted(str(r["Id"]) for r in rows if r["SystemModstamp"] >= start)


@given(
    stamps=st.lists(st.integers(0, 4), min_size=1, max_size=40),
    size=st.integers(1, 7),
    kill_after=st.integers(0, 40),
    changed=st.sets(st.integers(0, 39), max_size=6),
)
def test_any_kill_point_resumes_with_nothing_lost(
    stamps: list[int], size: int, kill_after: int, changed: set[int]
) -> None:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    rows = [
        {"Id": f"003{i:05d}", "IsDeleted": False, "SystemModstamp": start + timedelta(seconds=s)}
        for i, s in enumerate(stamps)
    ]
    everything = [str(r["Id"]) for r in rows]
    pages = _pages(rows, None, size)
    assert sorted(ids(pages)) == sorted(everything)
    killed = min(kill_after, len(pages) - 1)
    resumed = ids(_pages(rows, pages[killed].cursor, size))
    assert len(resumed) == len(set(resumed))
    assert set(ids(pages[killed + 1 :])) <= set(resumed)
    assert sorted(resumed) == _since(rows, pages[killed].cursor)
    # Records changed together later (one new shared timestamp) arrive once, with the look-back.
    later = start + timedelta(seconds=10)
    touched = {f"003{i:05d}" for i in changed if i < len(rows)}
    for row in rows:
        if row["Id"] in touched:
            row["SystemModstamp"] = later
    again = ids(_pages(rows, pages[-1].cursor, size))
    assert touched <= set(again)
    assert sorted(again) == _since(rows, pages[-1].cursor)
