"""The Matomo emulator rejects what Matomo rejects, pages as Matomo pages, and fails on cue."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from connectors.matomo.emulator import DEFAULT_TOKEN, MatomoEmulator


@pytest.fixture(scope="module")
def emulator() -> Iterator[MatomoEmulator]:
    with MatomoEmulator(people=30, seed=3, slow_seconds=0.5) as emulator:
        yield emulator


def api(emulator: MatomoEmulator, **params: Any) -> httpx.Response:
    query = {
        "module": "API",
        "method": "Live.getLastVisitsDetails",
        "idSite": 1,
        "format": "JSON",
        "token_auth": DEFAULT_TOKEN,
        "period": "range",
        "date": "2000-01-01,today",
        **params,
    }
    chosen = {k: v for k, v in query.items() if v is not None}
    return _CLIENT.get(f"{emulator.url}/index.php", params=chosen)


# One client for the module: creating an httpx client costs tens of milliseconds.
_CLIENT = httpx.Client()


@pytest.fixture(scope="module", autouse=True)
def _close_client() -> Iterator[None]:
    yield
    _CLIENT.close()


def error_of(answer: httpx.Response) -> str:
    body = answer.json()
    assert body["result"] == "error"
    return str(body["message"])


# --- data -----------------------------------------------------------------------------


def test_seeded_visits_have_the_live_api_shape(emulator: MatomoEmulator) -> None:
    visits = emulator.visits()
    assert len(visits) >= 30
    logged_in = [v for v in visits if v["userId"]]
    assert logged_in, "some visitors log in"
    assert len(logged_in) < len(visits), "some visitors stay anonymous"
    assert all(v["userId"].startswith("cust-") for v in logged_in)
    assert any(v["userId"].startswith("cust-") for v in logged_in)
    kinds = {a["type"] for v in visits for a in v["actionDetails"]}
    assert {"action", "ecommerceOrder", "ecommerceAbandonedCart"} <= kinds
    for visit in visits:
        assert len(visit["visitorId"]) == 16
        stamps = [a["timestamp"] for a in visit["actionDetails"]]
        assert stamps == sorted(stamps)
        assert visit["firstActionTimestamp"] == stamps[0]
        assert visit["lastActionTimestamp"] == visit["serverTimestamp"] == stamps[-1]
    order = next(a for v in visits for a in v["actionDetails"] if a["type"] == "ecommerceOrder")
    assert order["orderId"]
    assert order["itemDetails"][0]["itemSKU"].startswith("SKU-")


def test_same_seed_same_visits() -> None:
    assert MatomoEmulator(people=5, seed=9).visits() == MatomoEmulator(people=5, seed=9).visits()


def test_one_visitor_id_across_a_person_s_visits(emulator: MatomoEmulator) -> None:
    by_visitor: dict[str, set[str | None]] = {}
    for visit in emulator.visits():
        by_visitor.setdefault(visit["visitorId"], set()).add(visit["userId"])
    assert any(len(user_ids) == 2 for user_ids in by_visitor.values()), (
        "someone browses anonymously first and logged in later"
    )
    assert len(by_visitor) == 30


# --- authentication and request errors --------------------------------------------------


def test_a_wrong_token_is_401_with_matomo_s_error(emulator: MatomoEmulator) -> None:
    answer = api(emulator, token_auth="stolen")
    assert answer.status_code == 401
    assert "Unable to authenticate with the provided token" in error_of(answer)


def test_a_missing_token_has_no_view_access(emulator: MatomoEmulator) -> None:
    answer = api(emulator, token_auth=None)
    assert answer.status_code == 401
    assert "requires 'view' access for the website id = 1" in error_of(answer)


def test_another_site_has_no_view_access(emulator: MatomoEmulator) -> None:
    answer = api(emulator, idSite=2)
    assert answer.status_code == 401
    assert "website id = 2" in error_of(answer)


def test_the_token_may_be_posted(emulator: MatomoEmulator) -> None:
    answer = httpx.post(
        f"{emulator.url}/index.php",
        params={"module": "API", "method": "API.getMatomoVersion", "format": "JSON"},
        data={"token_auth": DEFAULT_TOKEN},
    )
    assert answer.status_code == 200
    assert answer.json()["value"].startswith("5.")


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"method": "Live.getEverything"}, "does not exist or is not available"),
        ({"method": "Goals.get"}, "plugin Goals is not enabled"),
        ({"idSite": None}, "Please specify a value for 'idSite'"),
        ({"date": "2024-13-45,today"}, "Date format must be"),
        ({"date": "2024-01-01"}, "not a correct date range"),
        ({"period": "week"}, "period=day and period=range"),
        ({"filter_limit": "ten"}, "'filter_limit' must be an integer"),
        ({"minTimestamp": "soon"}, "'minTimestamp' must be an integer"),
        ({"segment": "visitorType==new"}, "segment"),
    ],
)
def test_bad_requests_answer_an_error_body_with_200(
    emulator: MatomoEmulator, params: dict[str, Any], message: str
) -> None:
    answer = api(emulator, **params)
    assert answer.status_code == 200
    assert message in error_of(answer)


def test_only_json_is_served(emulator: MatomoEmulator) -> None:
    answer = api(emulator, format="xml")
    assert answer.status_code == 400
    assert "format=JSON" in error_of(answer)


def test_only_the_api_module_is_served(emulator: MatomoEmulator) -> None:
    assert api(emulator, module="CoreHome").status_code == 400
    assert httpx.get(f"{emulator.url}/matomo.php").status_code == 404


# --- paging and filters ---------------------------------------------------------------


def test_default_page_is_ten_newest_visits(emulator: MatomoEmulator) -> None:
    visits = api(emulator).json()
    assert len(visits) == 10
    stamps = [v["lastActionTimestamp"] for v in visits]
    assert stamps == sorted(stamps, reverse=True)
    assert stamps[0] == max(v["lastActionTimestamp"] for v in emulator.visits())


def test_limit_offset_and_ascending_order_page_through_everything(
    emulator: MatomoEmulator,
) -> None:
    seen: list[int] = []
    offset = 0
    while True:
        page = api(emulator, filter_limit=7, filter_offset=offset, filter_sort_order="asc").json()
        seen += [v["idVisit"] for v in page]
        if len(page) < 7:
            break
        offset += 7
    everything = api(emulator, filter_limit=-1, filter_sort_order="asc").json()
    assert seen == [v["idVisit"] for v in everything]
    assert len(seen) == len(emulator.visits())


def test_min_timestamp_keeps_strictly_later_visits(emulator: MatomoEmulator) -> None:
    visits = api(emulator, filter_limit=-1, filter_sort_order="asc").json()
    pivot = visits[5]["lastActionTimestamp"]
    later = api(emulator, filter_limit=-1, minTimestamp=pivot).json()
    assert {v["idVisit"] for v in later} == {
        v["idVisit"] for v in visits if v["lastActionTimestamp"] > pivot
    }


def test_day_period_selects_visits_by_last_action_day(emulator: MatomoEmulator) -> None:
    visit = emulator.visits()[0]
    day = time.strftime("%Y-%m-%d", time.gmtime(visit["lastActionTimestamp"]))
    chosen = api(emulator, period="day", date=day, filter_limit=-1).json()
    assert visit["idVisit"] in {v["idVisit"] for v in chosen}
    assert all(
        time.strftime("%Y-%m-%d", time.gmtime(v["lastActionTimestamp"])) == day for v in chosen
    )


def test_without_period_or_limit_only_the_last_24_hours(emulator: MatomoEmulator) -> None:
    assert api(emulator, period=None, date=None).json() == []


def test_do_not_fetch_actions(emulator: MatomoEmulator) -> None:
    visits = api(emulator, doNotFetchActions="1").json()
    assert visits
    assert all(v["actionDetails"] == [] for v in visits)


def test_a_new_pageview_moves_the_visit_to_the_front() -> None:
    with MatomoEmulator(people=5, seed=1) as emulator:
        oldest = emulator.visits()[0]
        at = emulator.record_pageview(oldest["idVisit"], "/products")
        newest = api(emulator, filter_limit=1).json()[0]
        assert newest["idVisit"] == oldest["idVisit"]
        assert newest["lastActionTimestamp"] == at > oldest["lastActionTimestamp"]
        assert newest["actions"] == oldest["actions"] + 1
        assert newest["actionDetails"][-1]["url"].endswith("/products")
        emulator.delete_visits([oldest["idVisit"]])
        assert oldest["idVisit"] not in {v["idVisit"] for v in emulator.visits()}


# --- faults ---------------------------------------------------------------------------


def test_scripted_faults_then_normal_answers() -> None:
    with MatomoEmulator(people=3, slow_seconds=0.3) as emulator:
        emulator.inject("server_error")
        emulator.inject("rate_limit")
        emulator.inject("auth")
        assert api(emulator).status_code == 500
        limited = api(emulator)
        assert limited.status_code == 429
        assert limited.headers["Retry-After"] == "2"
        assert api(emulator).status_code == 401
        emulator.inject("reset")
        with pytest.raises(httpx.TransportError):
            api(emulator)
        emulator.inject("slow")
        with pytest.raises(httpx.ReadTimeout):
            httpx.get(
                f"{emulator.url}/index.php",
                params={"module": "API", "method": "API.getMatomoVersion", "format": "JSON"},
                timeout=0.1,
            )
        assert api(emulator).status_code == 200


def test_fault_rate_fails_a_seeded_share_of_requests() -> None:
    with MatomoEmulator(people=3, fault_rate=0.5, fault_kinds=("server_error",)) as emulator:
        statuses = [api(emulator).status_code for _ in range(40)]
    assert 8 < statuses.count(500) < 32
    assert statuses.count(500) + statuses.count(200) == 40


def test_unknown_faults_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown fault"):
        MatomoEmulator(people=1).inject("meteor")
    with pytest.raises(ValueError, match="unknown fault kinds"):
        MatomoEmulator(people=1, fault_kinds=("meteor",))
