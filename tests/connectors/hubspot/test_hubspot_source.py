"""The HubSpot source: full and incremental reads, the look-back, timestamp ties, the search
cap, deletions."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from structlog.testing import capture_logs

from connectors.hubspot import SEARCH_LIMIT
from connectors.hubspot.client import HubSpotClient
from connectors.hubspot.cursor import ReadCursor
from connectors.hubspot.emulator import HubSpotEmulator
from connectors.hubspot.source import HubSpotSource
from syncd.budget import RequestBudget
from syncd.connector import Page
from syncd.errors import FatalConnectorError
from tests.connectors.hubspot.hubspot_support import ClientFactory

SourceFactory = Callable[..., HubSpotSource]
LATER = 1_900_000_000_000  # 2030, after every seeded timestamp and the test clock
MINUTE = 60_000


@pytest.fixture
def make_source(make_client: ClientFactory) -> SourceFactory:
    def build(
        search_page_size: int = 200,
        page_size: int = 25,
        clock_ms: int = LATER,
        lookback_seconds: float = 300,
    ) -> HubSpotSource:
        return HubSpotSource(
            make_client(),
            objects=("contacts", "companies"),
            page_size=page_size,
            search_page_size=search_page_size,
            clock=lambda: clock_ms / 1000,
            lookback_seconds=lookback_seconds,
        )

    return build


def ids(pages: list[Page]) -> list[str]:
    return [str(record.payload["id"]) for page in pages for record in page.records]


def roundtrip(cursor: Any) -> Any:
    return json.loads(json.dumps(cursor))


def test_full_read_lists_every_record_once_in_pages(
    emulator: HubSpotEmulator, make_source: SourceFactory
) -> None:
    pages = list(make_source().read("contacts", None))
    assert ids(pages) == [c.id for c in emulator.records("contacts")]
    assert max(len(page.records) for page in pages) == 25
    record = pages[0].records[0]
    assert set(record.payload) == {"id", "properties", "createdAt", "updatedAt", "archived"}
    assert {"email", "phone", "lastmodifieddate"} <= set(record.payload["properties"])
    assert record.location == f"hubspot:contacts/{record.payload['id']}"
    companies = ids(list(make_source().read("companies", None)))
    assert companies == [c.id for c in emulator.records("companies")]


def test_full_read_reports_archived_records_as_deleted(
    emulator: HubSpotEmulator, make_source: SourceFactory
) -> None:
    gone = [c.id for c in emulator.records("contacts")[:2]]
    emulator.archive("contacts", gone)
    pages = list(make_source().read("contacts", None))
    assert sorted(d for page in pages for d in page.deleted_ids) == sorted(gone)
    assert not set(gone) & set(ids(pages))


def test_incremental_read_brings_changes_and_deletions_since_the_cursor(
    emulator: HubSpotEmulator, make_source: SourceFactory
) -> None:
    # The full read starts at LATER on our clock; edits come after it.
    full = list(make_source(clock_ms=LATER).read("contacts", None))
    contacts = [c.id for c in emulator.records("contacts")]
    emulator.modify("contacts", contacts[5:8], {"city": "Denver"}, at_ms=LATER + 1_000)
    emulator.archive("contacts", [contacts[9]], at_ms=LATER + 2_000)
    # Each read opens its next deletion window 5 minutes early (clock skew): read well apart.
    later = list(
        make_source(clock_ms=LATER + 10 * MINUTE).read("contacts", roundtrip(full[-1].cursor))
    )
    assert sorted(ids(later)) == sorted(contacts[5:8])
    assert [d for page in later for d in page.deleted_ids] == [contacts[9]]
    assert all(r.payload["properties"]["city"] == "Denver" for p in later for r in p.records)
    # Five minutes later by HubSpot's stamps the edits are still inside the look-back: they come
    # again, unchanged; so does the deletion, whose window also looks back five minutes.
    again = list(
        make_source(clock_ms=LATER + 20 * MINUTE).read("contacts", roundtrip(later[-1].cursor))
    )
    assert sorted(ids(again)) == sorted(contacts[5:8])
    assert [d for page in again for d in page.deleted_ids] == [contacts[9]]
    quiet = list(
        make_source(clock_ms=LATER + 30 * MINUTE).read("contacts", roundtrip(again[-1].cursor))
    )
    assert sorted(ids(quiet)) == sorted(contacts[5:8]), "the edits share the stored time"
    assert [d for page in quiet for d in page.deleted_ids] == []


def test_a_stream_gone_quiet_reads_only_its_stored_time_again(
    emulator: HubSpotEmulator, make_source: SourceFactory
) -> None:
    # An import: 40 records a second apart, all within one look-back of the newest.
    contacts = [c.id for c in emulator.records("contacts")[:40]]
    for index, contact in enumerate(contacts):
        emulator.modify("contacts", [contact], {"city": "Denver"}, at_ms=LATER + index * 1_000)
    cursor: Any = _search_cursor(LATER - MINUTE)
    counts = []
    for run in range(1, 4):
        searches = len(emulator.requests("objects.search"))
        source = make_source(clock_ms=LATER + run * 20 * MINUTE)
        pages = _read_all(source, cursor)
        cursor = pages[-1].cursor
        counts.append((len(ids(pages)), len(emulator.requests("objects.search")) - searches))
    # The first read takes the import; later ones, started more than a look-back after the
    # import, read only the record at the stored time, with one search each.
    assert counts == [(40, 1), (1, 1), (1, 1)]


def _search_cursor(since: int) -> dict[str, Any]:
    return {"v": 1, "phase": "search", "since": since, "archived_since": since}


def test_a_record_searchable_only_after_a_later_one_is_read_next_time(
    emulator: HubSpotEmulator, make_source: SourceFactory
) -> None:
    lagging, prompt = [c.id for c in emulator.records("contacts")[:2]]
    emulator.modify("contacts", [prompt], {"city": "Denver"}, at_ms=LATER + 2_000)
    first = list(make_source(clock_ms=LATER + 3_000).read("contacts", _search_cursor(LATER)))
    assert ids(first) == [prompt]
    # Edited a second before `prompt`, but the search index shows it only now.
    emulator.modify("contacts", [lagging], {"city": "Austin"}, at_ms=LATER + 1_000)
    later = list(make_source(clock_ms=LATER + MINUTE).read("contacts", roundtrip(first[-1].cursor)))
    assert sorted(ids(later)) == sorted([lagging, prompt])
    # Without a look-back (and the clock skew margin, from a cursor that tells no read start)
    # it would be lost for good.
    blind = make_source(clock_ms=LATER + MINUTE, lookback_seconds=0)
    no_start = {**roundtrip(first[-1].cursor), "started": 0}
    assert ids(list(blind.read("contacts", no_start))) == [prompt]


def test_a_second_edit_in_the_same_millisecond_is_read(
    emulator: HubSpotEmulator, make_source: SourceFactory
) -> None:
    contact = emulator.records("contacts")[0].id
    emulator.modify("contacts", [contact], {"city": "Denver"}, at_ms=LATER + 1_000)
    first = list(make_source(clock_ms=LATER + 3_000).read("contacts", _search_cursor(LATER)))
    emulator.modify("contacts", [contact], {"city": "Austin"}, at_ms=LATER + 1_000)
    later = list(make_source(clock_ms=LATER + MINUTE).read("contacts", roundtrip(first[-1].cursor)))
    assert [r.payload["properties"]["city"] for page in later for r in page.records] == ["Austin"]


def test_an_archival_listed_late_is_reported_next_time(
    emulator: HubSpotEmulator, make_source: SourceFactory
) -> None:
    first = list(make_source(clock_ms=LATER).read("contacts", _search_cursor(LATER - MINUTE)))
    # Archived by HubSpot's clock before our last scan's window began (clock skew included).
    gone = emulator.records("contacts")[0].id
    emulator.archive("contacts", [gone], at_ms=LATER - 7 * MINUTE)
    later = list(make_source(clock_ms=LATER + MINUTE).read("contacts", roundtrip(first[-1].cursor)))
    assert [d for page in later for d in page.deleted_ids] == [gone]


def test_a_cursor_stored_before_the_look_back_still_resumes(
    emulator: HubSpotEmulator, make_source: SourceFactory
) -> None:
    contacts = [c.id for c in emulator.records("contacts")[:3]]
    emulator.modify("contacts", contacts, {"city": "Denver"}, at_ms=LATER + 1_000)
    seen = {"seen": contacts[:2], "archived_since": LATER, "started": 0}
    for legacy in (
        {"v": 1, "phase": "search", "since": LATER + 1_000, **seen},
        {"v": 1, "phase": "tie", "since": LATER + 1_000, "after": contacts[1], **seen},
    ):
        assert ReadCursor.from_json(legacy) == ReadCursor(
            phase="search", since=LATER + 1_000, archived_since=LATER
        )
        pages = list(make_source(clock_ms=LATER + MINUTE).read("contacts", legacy))
        assert sorted(ids(pages)) == sorted(contacts)


def test_companies_read_incrementally_on_hs_lastmodifieddate(
    emulator: HubSpotEmulator, make_source: SourceFactory
) -> None:
    full = list(make_source(clock_ms=LATER).read("companies", None))
    company = emulator.records("companies")[1].id
    emulator.modify("companies", [company], {"industry": "Retail"}, at_ms=LATER + 5)
    later = list(make_source(clock_ms=LATER + 10 * MINUTE).read("companies", full[-1].cursor))
    assert ids(later) == [company]
    assert later[0].records[0].payload["properties"]["industry"] == "Retail"


def _read_all(source: HubSpotSource, cursor: Any) -> list[Page]:
    return list(source.read("contacts", roundtrip(cursor)))


def test_records_sharing_a_timestamp_across_pages_arrive_once_per_read(
    emulator: HubSpotEmulator, make_source: SourceFactory
) -> None:
    contacts = [c.id for c in emulator.records("contacts")]
    # 8 at T1 straddle the first page of 10; 25 at T2 are more than a page holds.
    emulator.modify("contacts", contacts[:4], at_ms=LATER + 1)
    emulator.modify("contacts", contacts[4:12], at_ms=LATER + 2)
    emulator.modify("contacts", contacts[12:37], at_ms=LATER + 3)
    emulator.modify("contacts", contacts[37:40], at_ms=LATER + 4)
    with capture_logs() as logs:
        pages = _read_all(make_source(search_page_size=10), _search_cursor(LATER))
    got = ids(pages)
    assert len(got) == len(set(got)), "a record arrived twice"
    assert set(got) == set(contacts[:40])
    assert any("walking them by id" in entry["event"] for entry in logs), "25 at T2 need a walk"
    for index, page in enumerate(pages):
        # Resuming looks back again: every record after the page comes, each once.
        rest = ids(_read_all(make_source(search_page_size=10), page.cursor))
        assert len(rest) == len(set(rest))
        assert set(ids(pages[index + 1 :])) <= set(rest), f"resuming after page {index}"


def test_a_second_edit_in_a_timestamp_walked_by_id_is_read_without_look_back(
    emulator: HubSpotEmulator, make_source: SourceFactory
) -> None:
    crowd = [c.id for c in emulator.records("contacts")[:25]]
    emulator.modify("contacts", crowd, {"city": "Denver"}, at_ms=LATER + 3)
    source = make_source(search_page_size=10, lookback_seconds=0, clock_ms=LATER + MINUTE)
    with capture_logs() as logs:
        first = _read_all(source, _search_cursor(LATER))
    assert any("walking them by id" in entry["event"] for entry in logs)
    assert sorted(ids(first)) == sorted(crowd)
    # The stored time is the newest one delivered, not the one the id walk ended past.
    assert first[-1].cursor["since"] == LATER + 3
    emulator.modify("contacts", crowd[-1:], {"city": "Austin"}, at_ms=LATER + 3)
    again = _read_all(source, first[-1].cursor)
    cities = {r.payload["id"]: r.payload["properties"]["city"] for p in again for r in p.records}
    assert cities.get(crowd[-1]) == "Austin"


def test_incremental_read_past_the_10000_result_cap() -> None:
    """10,200 changed records: the keyset walk never pages past search's 10,000th result,
    and a record edited mid-read cannot push another one out of view."""
    # No request limits: this is about the result cap (the search limit has a test below).
    with HubSpotEmulator(
        people=10_200, seed=2, share=1.0, rate_limit=None, search_limit=None
    ) as emulator:
        client = HubSpotClient(emulator.url, emulator.access_token, RequestBudget(10_000, 1.0))
        source = HubSpotSource(client, ("contacts",), clock=lambda: LATER / 1000)
        try:
            start = _search_cursor(0)
            delivered: list[str] = []
            pages: Iterator[Page] = source.read("contacts", start)
            first = next(pages)
            delivered += ids([first])
            # Edit records already delivered: with offset paging each would shift one unseen
            # record below the next page's offset and lose it.
            emulator.modify("contacts", delivered[:50], {"city": "Boston"}, at_ms=LATER)
            delivered += ids(list(pages))
        finally:
            source.close()
        statuses = {status for _, status in emulator.requests("objects.search")}
        everyone = {c.id for c in emulator.records("contacts")}
    assert statuses == {200}, "a search went past the 10,000-result cap"
    assert set(delivered) == everyone
    assert len(delivered) == len(everyone) + 50, "only the 50 edited records came twice"


def test_an_incremental_read_keeps_to_the_search_limit() -> None:
    with HubSpotEmulator(people=1_500, seed=2, share=1.0) as emulator:
        # The budget the options give by default: 100 requests per 10 s.
        client = HubSpotClient(
            emulator.url,
            emulator.access_token,
            RequestBudget(100, 10.0),
            search_budget=RequestBudget(*SEARCH_LIMIT),
        )
        source = HubSpotSource(client, ("contacts",), clock=lambda: LATER / 1000)
        start = {"v": 1, "phase": "search", "since": 0, "seen": [], "archived_since": 0}
        try:
            delivered = ids(list(source.read("contacts", start)))
        finally:
            source.close()
        statuses = [status for _, status in emulator.requests("objects.search")]
        everyone = {c.id for c in emulator.records("contacts")}
    assert set(delivered) == everyone
    assert len(statuses) > 5, "enough searches to pass the limit if they came back to back"
    assert set(statuses) == {200}, f"{statuses.count(429)} searches refused with 429"


def test_a_foreign_cursor_or_unknown_stream_is_fatal(make_source: SourceFactory) -> None:
    source = make_source()
    with pytest.raises(FatalConnectorError, match="--full"):
        list(source.read("contacts", {"since": 5}))
    with pytest.raises(FatalConnectorError, match="deals"):
        list(source.read("deals", None))
