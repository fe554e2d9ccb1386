"""The Matomo source beyond the standard suite: cursor edge cases, the look-back, actions,
errors, spec."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

import connectors.matomo as matomo
from connectors.matomo.client import classify
from connectors.matomo.emulator import DEFAULT_TOKEN, MatomoEmulator
from connectors.matomo.options import MatomoOptions
from connectors.matomo.source import MatomoSource, action_ids
from syncd.budget import RequestBudget
from syncd.config import load_config
from syncd.connector import ConnectorContext, JsonValue, Page
from syncd.errors import AuthError, ConfigError, FatalConnectorError, RetryableError
from syncd.mapping.compiler import compile_mappings
from syncd.testing import FakeSleep

from .conftest import SourceFactory, VirtualClock


def visit_ids(pages: list[Page]) -> list[int]:
    return [record.payload["idVisit"] for page in pages for record in page.records]


def roundtrip(cursor: JsonValue) -> JsonValue:
    return json.loads(json.dumps(cursor))


def test_the_token_is_posted_never_in_the_url(
    emulator: MatomoEmulator, make_source: SourceFactory
) -> None:
    list(make_source().read("visits", None))
    assert emulator.requests
    for request in emulator.requests:
        assert "token_auth" not in request["query"]
        assert request["form"] == {"token_auth": DEFAULT_TOKEN}


def test_pages_ascend_by_last_action_and_re_anchor_on_the_cursor(
    emulator: MatomoEmulator, make_source: SourceFactory
) -> None:
    pages = list(make_source().read("visits", None))
    first, second = emulator.requests[0]["query"], emulator.requests[1]["query"]
    assert first["filter_sort_order"] == "asc"
    assert first["filter_limit"] == "10"
    assert "minTimestamp" not in first
    assert first["period"] == "range"
    assert first["date"] == "2000-01-01,today"
    assert int(second["minTimestamp"]) == pages[0].cursor["last_action"] - 1
    stamps = [r.payload["lastActionTimestamp"] for page in pages for r in page.records]
    assert stamps == sorted(stamps)


def test_a_run_of_equal_timestamps_across_pages_is_read_once_per_read(
    emulator: MatomoEmulator, make_source: SourceFactory, clock: VirtualClock
) -> None:
    clock.at = emulator.now() + 3600
    before = {"last_action": emulator.now()}  # a look-back after every seeded visit
    tied = [visit["idVisit"] for visit in emulator.visits()[:25]]
    moment = emulator.now() + 100
    for id_visit in tied:
        emulator.record_pageview(id_visit, at=moment)
    emulator.record_pageview(emulator.visits()[30]["idVisit"], at=moment + 1)

    pages = list(make_source().read("visits", roundtrip(before)))
    ids = visit_ids(pages)
    assert sorted(ids) == sorted([*tied, emulator.visits()[30]["idVisit"]])
    # Resuming inside the run of 25 equal timestamps looks back again: all the rest, each once.
    for index, page in enumerate(pages):
        rest = visit_ids(list(make_source().read("visits", roundtrip(page.cursor))))
        assert len(rest) == len(set(rest))
        assert set(visit_ids(pages[index + 1 :])) <= set(rest), index


def test_a_crowded_second_costs_one_request_per_page() -> None:
    with MatomoEmulator(people=400, seed=11) as emulator:
        tied = [visit["idVisit"] for visit in emulator.visits()[:500]]
        assert len(tied) == 500
        moment = emulator.now() + 100
        for id_visit in tied:
            emulator.record_pageview(id_visit, at=moment)
        options = MatomoOptions(
            url=emulator.url,
            site_id=1,
            token_auth={"env": "X"},
            page_size=10,
            lookback_seconds=0,
            budget=10_000,
        )
        source = MatomoSource(options, DEFAULT_TOKEN, sleep=FakeSleep())
        try:
            pages = list(source.read("visits", {"last_action": moment}))
        finally:
            source.close()
        requests = len(emulator.requests)
    assert sorted(visit_ids(pages)) == sorted(tied)
    # 50 pages and the short one ending the read, not a request per page taken so far per page.
    assert requests <= 60, requests


def test_a_visit_written_late_is_read_next_time(
    emulator: MatomoEmulator, make_source: SourceFactory
) -> None:
    cursor = list(make_source().read("visits", None))[-1].cursor
    newest = cursor["last_action"]
    late = next(v["idVisit"] for v in emulator.visits() if v["lastActionTimestamp"] < newest - 600)
    # A queued tracking request, processed only now, adds an action from a minute before the
    # newest visit already read.
    emulator.record_pageview(late, at=newest - 60)
    assert late in visit_ids(list(make_source().read("visits", roundtrip(cursor))))
    # Beyond the look-back (and the clock skew margin, from a cursor that tells no read start),
    # the stored time is final.
    blind = make_source(lookback_seconds=0).read("visits", {"last_action": newest})
    assert late not in visit_ids(list(blind))


def test_a_site_gone_quiet_reads_only_its_stored_time_again(
    emulator: MatomoEmulator, make_source: SourceFactory, clock: VirtualClock
) -> None:
    clock.at = emulator.now() + 3600
    cursor: JsonValue = {"last_action": emulator.now()}  # a look-back after every seeded visit
    # A burst: 40 visits acting a second apart, all within one look-back of the newest.
    burst = [visit["idVisit"] for visit in emulator.visits()[:40]]
    moment = emulator.now() + 60
    for index, id_visit in enumerate(burst):
        emulator.record_pageview(id_visit, at=moment + index)
    counts = []
    for run in range(1, 4):
        clock.at = moment + run * 1200
        asked = len(emulator.requests)
        pages = list(make_source().read("visits", roundtrip(cursor)))
        cursor = pages[-1].cursor
        counts.append((len(visit_ids(pages)), len(emulator.requests) - asked))
    # The first read takes the burst, a page of 10 at a time; later ones, started more than a
    # look-back after it, read only the visit at the stored time, with one request each.
    assert counts == [(40, 5), (1, 1), (1, 1)]


def test_a_visit_changed_within_the_second_of_the_cursor_is_read_again(
    emulator: MatomoEmulator, make_source: SourceFactory
) -> None:
    cursor = list(make_source().read("visits", None))[-1].cursor
    newest = cursor["last_action"]
    (last,) = (v["idVisit"] for v in emulator.visits() if v["lastActionTimestamp"] == newest)
    # An event tracked in the same second as the visit's last action read so far.
    emulator.record_pageview(last, path="/checkout", at=newest)
    (visit,) = (
        record.payload
        for page in make_source().read("visits", roundtrip(cursor))
        for record in page.records
        if record.payload["idVisit"] == last
    )
    assert visit["actionDetails"][-1]["url"].endswith("/checkout")


def test_a_cursor_stored_before_the_look_back_still_resumes(
    emulator: MatomoEmulator, make_source: SourceFactory
) -> None:
    newest = list(make_source().read("visits", None))[-1].cursor["last_action"]
    at_newest = [v["idVisit"] for v in emulator.visits() if v["lastActionTimestamp"] == newest]
    legacy = {"last_action": newest, "visits_at_last_action": at_newest}
    assert set(at_newest) <= set(visit_ids(list(make_source().read("visits", legacy))))


def test_a_visit_moving_forward_during_a_read_is_not_lost(
    emulator: MatomoEmulator, make_source: SourceFactory
) -> None:
    reader = make_source().read("visits", None)
    first = next(reader)
    # The visitor of an already-read visit acts again between two page requests.
    moved = first.records[0].payload["idVisit"]
    emulator.record_pageview(moved)
    rest = list(reader)
    ids = visit_ids([first, *rest])
    assert set(ids) == {v["idVisit"] for v in emulator.visits()}
    assert ids.count(moved) == 2
    assert rest[-1].records[-1].payload["idVisit"] == moved


def test_actions_carry_their_visit_and_a_stable_unique_id(
    emulator: MatomoEmulator, make_source: SourceFactory
) -> None:
    pages = list(make_source().read("actions", None))
    records = [record for page in pages for record in page.records]
    visits = {v["idVisit"]: v for v in emulator.visits()}
    assert len(records) == sum(len(v["actionDetails"]) for v in visits.values())
    ids = [record.payload["actionId"] for record in records]
    assert len(ids) == len(set(ids))
    for record in records:
        visit = visits[record.payload["idVisit"]]
        assert record.payload["visitorId"] == visit["visitorId"]
        assert record.payload["userId"] == visit["userId"]
        assert record.payload["idSite"] == 1
        assert record.location.endswith(f"&action={record.payload['actionId']}")

    changed = records[0].payload["idVisit"]
    emulator.record_pageview(changed)
    again = list(make_source().read("actions", roundtrip(pages[-1].cursor)))
    again_ids = [
        record.payload["actionId"]
        for page in again
        for record in page.records
        if record.payload["idVisit"] == changed
    ]
    old = [i for i in ids if i.startswith(f"{changed}:")]
    assert again_ids[: len(old)] == old, "a changed visit's earlier actions keep their ids"
    assert len(again_ids) == len(old) + 1


def test_actions_resume_after_a_kill(emulator: MatomoEmulator, make_source: SourceFactory) -> None:
    everything = list(make_source().read("actions", None))
    reader = make_source().read("actions", None)
    # The process dies after the third page; the engine stored that page's cursor.
    done = [next(reader) for _ in range(3)]
    del reader
    resumed = list(make_source().read("actions", roundtrip(done[-1].cursor)))
    ids = [r.payload["actionId"] for page in [*done, *resumed] for r in page.records]
    # The look-back reads some actions twice: the store keeps each once by its id.
    assert set(ids) == {r.payload["actionId"] for p in everything for r in p.records}


def test_action_ids_fall_back_to_type_time_and_rank() -> None:
    actions = [
        {"type": "action", "pageId": 7, "timestamp": 1},
        {"type": "ecommerceOrder", "orderId": "A-1", "timestamp": 2},
        {"type": "ecommerceAbandonedCart", "timestamp": 3},
        {"type": "goal", "timestamp": 3},
        {"type": "goal", "timestamp": 3},
    ]
    assert action_ids(5, actions) == [
        "5:7",
        "5:order:A-1",
        "5:ecommerceAbandonedCart:3:0",
        "5:goal:3:0",
        "5:goal:3:1",
    ]
    assert action_ids(5, [*actions, {"type": "goal", "timestamp": 9}])[:5] == action_ids(5, actions)


def test_every_request_goes_through_the_budget(
    emulator: MatomoEmulator, make_source: SourceFactory
) -> None:
    class CountingBudget(RequestBudget):
        acquired = 0

        def acquire(self) -> float:
            CountingBudget.acquired += 1
            return super().acquire()

    options = MatomoOptions(
        url=emulator.url, site_id=1, token_auth={"env": "X"}, page_size=10, timeout=0.5
    )
    source = MatomoSource(
        options, DEFAULT_TOKEN, sleep=FakeSleep(), budget=CountingBudget(1000, 1.0)
    )
    emulator.inject("server_error", 2)
    list(source.read("visits", None))
    source.close()
    assert CountingBudget.acquired == len(emulator.requests)


def test_retries_give_up_after_the_configured_attempts(
    emulator: MatomoEmulator, make_source: SourceFactory
) -> None:
    sleep = FakeSleep()
    emulator.inject("server_error", 10)
    with pytest.raises(RetryableError, match="HTTP 500"):
        list(make_source(sleep, retry_attempts=3).read("visits", None))
    assert len(emulator.requests) == 3
    assert len(sleep.waits) == 2


def test_a_site_the_token_cannot_see_is_an_auth_error(make_source: SourceFactory) -> None:
    sleep = FakeSleep()
    with pytest.raises(AuthError, match="website id = 2"):
        list(make_source(sleep, site_id=2).read("visits", None))
    assert sleep.waits == []


def test_a_url_that_is_not_matomo_is_fatal(
    emulator: MatomoEmulator, make_source: SourceFactory
) -> None:
    with pytest.raises(FatalConnectorError, match="Not found"):
        list(make_source(url=f"{emulator.url}/analytics").read("visits", None))


@pytest.mark.parametrize("cursor", [{"last_action": "x"}, [1], {"visits_at_last_action": [5]}])
def test_a_foreign_cursor_is_fatal(make_source: SourceFactory, cursor: JsonValue) -> None:
    with pytest.raises(FatalConnectorError, match="not a Matomo visits cursor"):
        list(make_source().read("visits", cursor))


def test_an_unknown_stream_is_fatal(make_source: SourceFactory) -> None:
    source = make_source()
    assert list(source.streams()) == ["visits", "actions"]
    with pytest.raises(FatalConnectorError, match="no stream 'goals'"):
        list(source.read("goals", None))


# --- classification of answers --------------------------------------------------------


def answer(status: int, body: object = None, **headers: str) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.Response(status, content=content, headers=headers)


def test_rate_limits_and_5xx_are_retryable_with_retry_after() -> None:
    with pytest.raises(RetryableError) as limited:
        classify(answer(429, {"result": "error"}, **{"Retry-After": "7"}))
    assert limited.value.retry_after == 7.0
    with pytest.raises(RetryableError) as failed:
        classify(answer(502, b"<html>Bad gateway</html>"))
    assert failed.value.retry_after is None


@pytest.mark.parametrize(
    "message",
    [
        "You can't access this resource as it requires 'view' access for the website id = 1.",
        "Unable to authenticate with the provided token.",
    ],
)
def test_matomo_4_auth_errors_with_200_are_auth_errors(message: str) -> None:
    with pytest.raises(AuthError):
        classify(answer(200, {"result": "error", "message": message}))


def test_other_error_bodies_and_html_are_fatal() -> None:
    with pytest.raises(FatalConnectorError, match="does not exist"):
        classify(answer(200, {"result": "error", "message": "The method 'x' does not exist"}))
    with pytest.raises(FatalConnectorError, match="no JSON"):
        classify(answer(200, b"<!DOCTYPE html><title>Matomo</title>"))
    assert classify(answer(200, [{"idVisit": 1}])) == [{"idVisit": 1}]


# --- the connector spec ---------------------------------------------------------------


def test_the_connector_spec_builds_a_source_from_options(
    emulator: MatomoEmulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert matomo.CONNECTOR.kind == "matomo"
    assert matomo.CONNECTOR.make_destination is None
    options = matomo.MatomoOptions.model_validate(
        {"url": emulator.url + "/", "site_id": 1, "token_auth": {"env": "MATOMO_TOKEN"}}
    )
    assert options.url == emulator.url
    context = ConnectorContext("web", options, tmp_path)
    assert matomo.CONNECTOR.make_source is not None
    with pytest.raises(ConfigError, match="MATOMO_TOKEN"):
        matomo.CONNECTOR.make_source(context)
    monkeypatch.setenv("MATOMO_TOKEN", DEFAULT_TOKEN)
    source = matomo.CONNECTOR.make_source(context)
    try:
        assert next(iter(source.read("visits", None))).records
    finally:
        source.close()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"token_auth": "literal-secret"}, "token_auth"),
        ({"url": "matomo.example.com"}, "url"),
        ({"site_id": 0}, "site_id"),
        ({"page_size": 0}, "page_size"),
        ({"lookback_seconds": -1}, "lookback_seconds"),
        ({"filter_limit": 10}, "filter_limit"),
    ],
)
def test_bad_options_are_refused(change: dict[str, object], field: str) -> None:
    settings = {"url": "https://matomo.example.com", "site_id": 1, "token_auth": {"env": "T"}}
    with pytest.raises(ValidationError, match=field):
        MatomoOptions.model_validate({**settings, **change})


def test_a_matomo_order_adds_to_total_spent_with_the_shipped_mappings() -> None:
    mappings = compile_mappings(load_config(Path("syncd.toml")))
    summed = mappings.profile.computed["total_spent"]
    order = mappings.for_stream("matomo", "actions").map_event(
        {
            "actionId": "v1-3",
            "type": "ecommerceOrder",
            "revenue": 12.5,
            "orderId": "O-1",
            "timestamp": 1732406400,
            "visitorId": "a1b2c3d4e5f60718",
        }
    )
    assert order.name == summed.event
    assert order.properties[str(summed.property)] == 12.5
