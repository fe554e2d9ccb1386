"""The simulated shop, sent through the real endpoint into the reference sink."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from syncd.ingest.app import create_app
from syncd.ingest.server import running
from syncd.ingest.simulator import SHARED_DEVICE, simulate, user_id
from syncd.ingest.sqlite_sink import SqliteEventSink

KEY = "wk_sim"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, SqliteEventSink]]:
    sink = SqliteEventSink(tmp_path / "events.sqlite")
    with running(create_app(sink, [KEY])) as url:
        yield url, sink
    sink.close()


def stored(sink: SqliteEventSink) -> list[dict[str, Any]]:
    return [json.loads(row[0]) for row in sink._db.execute("SELECT payload FROM ingest_event")]


def test_journeys_arrive_with_anonymous_identified_and_shared_device_visitors(
    served: tuple[str, SqliteEventSink],
) -> None:
    url, sink = served
    summary = simulate(url, KEY, people=30, seed=5, batch_size=40)
    messages = stored(sink)
    assert len(messages) == summary.messages
    assert summary.batches >= summary.messages // 40

    identifies = [m for m in messages if m["type"] == "identify"]
    assert len(identifies) == summary.identified
    assert 0 < summary.identified < 30, "some people never log in"
    assert all(m["traits"]["email"].strip() for m in identifies)
    orders = [m for m in messages if m.get("event") == "Order Completed"]
    assert len(orders) == summary.orders > 0
    assert all(m["userId"] for m in orders), "orders are placed logged in"

    users_by_device: dict[str, set[str]] = defaultdict(set)
    for message in messages:
        users_by_device[message["anonymousId"]].add(message.get("userId", ""))
    shared = [users - {""} for users in users_by_device.values() if len(users - {""}) > 1]
    assert shared == [{user_id(i) for i in SHARED_DEVICE}]
    assert any(users == {""} for users in users_by_device.values()), "anonymous-only visitors"


def test_running_it_twice_stores_nothing_new(served: tuple[str, SqliteEventSink]) -> None:
    url, sink = served
    first = simulate(url, KEY, people=8, seed=2)
    simulate(url, KEY, people=8, seed=2)
    assert sink.count() == first.messages
