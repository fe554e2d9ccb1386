"""A migrated store per backend, filled through the store-backed sink, and sources on it."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine

from connectors.ingest.source import IngestSource
from syncd.ingest.spec import IngestMessage, parse_message
from syncd.ingest.store_sink import StoreEventSink
from syncd.testing import FakeSleep

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def message(kind: str, n: int, **fields: Any) -> IngestMessage:
    """A valid message of type `kind` with messageId `{kind}-{n}`, n seconds after START."""
    raw: dict[str, Any] = {"messageId": f"{kind}-{n}", "anonymousId": f"anon-{n % 7}", **fields}
    if kind == "track":
        raw.setdefault("event", "Product Viewed")
    if kind == "alias":
        raw.setdefault("userId", f"user-{n}")
        raw.setdefault("previousId", f"anon-{n % 7}")
    if kind == "group":
        raw.setdefault("groupId", "acme")
    raw["timestamp"] = (START + timedelta(seconds=n)).isoformat()
    return parse_message(raw, kind=kind, received_at=START + timedelta(seconds=n))


Append = Callable[[Sequence[IngestMessage]], None]


@pytest.fixture
def append(engine: Engine) -> Append:
    """Commit messages to the spool as the endpoint does."""
    return StoreEventSink(engine).write


SourceFactory = Callable[..., IngestSource]


@pytest.fixture
def make_source(engine: Engine) -> Iterator[SourceFactory]:
    made: list[IngestSource] = []

    def make(
        sleep: Callable[[float], None] | None = None,
        page_size: int = 10,
        streams: Sequence[str] = ("identify", "track", "page", "screen", "group", "alias"),
    ) -> IngestSource:
        source = IngestSource(engine, streams, page_size, sleep=sleep or FakeSleep())
        made.append(source)
        return source

    yield make
    for source in made:
        source.close()
