"""The ingest source beyond the standard suite: streams by type, new messages, options."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy import Engine, event
from sqlalchemy.exc import ProgrammingError

import connectors.ingest
from connectors.ingest import CONNECTOR, IngestOptions, IngestSource
from syncd.connector import ConnectorContext, Page
from syncd.errors import ConfigError, FatalConnectorError
from syncd.ingest.store_sink import StoreEventSink
from syncd.store.db import Bulk, open_store
from syncd.testing import FakeSleep

from .conftest import START, Append, SourceFactory, message


def ids(pages: list[Page]) -> list[str]:
    return [str(record.payload["messageId"]) for page in pages for record in page.records]


def test_each_stream_reads_only_its_message_type(
    append: Append, make_source: SourceFactory
) -> None:
    append([message(kind, n) for n in range(3) for kind in ("track", "page", "alias")])
    source = make_source()
    assert ids(list(source.read("page", None))) == ["page-0", "page-1", "page-2"]
    assert ids(list(source.read("alias", None))) == ["alias-0", "alias-1", "alias-2"]
    assert list(source.read("screen", None)) == []


def test_messages_after_the_cursor_arrive_on_the_next_read_once(
    append: Append, make_source: SourceFactory
) -> None:
    append([message("track", n) for n in range(12)])
    source = make_source(page_size=5)
    first = list(source.read("track", None))
    assert [len(page.records) for page in first] == [5, 5, 2]
    # An SDK retrying an old request, plus new messages, interleaved with another type.
    append([message("track", 3), message("page", 1), message("track", 12), message("track", 13)])
    later = list(source.read("track", first[-1].cursor))
    assert ids(later) == ["track-12", "track-13"]
    assert list(source.read("track", later[-1].cursor)) == []


def test_records_are_the_messages_as_committed(append: Append, make_source: SourceFactory) -> None:
    append([message("identify", 1, userId="u-1", traits={"email": "Ann@Example.com"})])
    (page,) = list(make_source().read("identify", None))
    (record,) = page.records
    assert record.error is None
    assert record.location.startswith("ingest_spool/")
    assert record.payload["traits"] == {"email": "Ann@Example.com"}
    assert record.payload["userId"] == "u-1"
    assert record.payload["receivedAt"].endswith("Z")
    assert page.cursor == {"after_id": int(record.location.split("/")[1])}


@pytest.mark.parametrize("cursor", [{"after_id": "7"}, {"after": 3}, [1], {"after_id": -1}])
def test_a_foreign_cursor_is_fatal(make_source: SourceFactory, cursor: object) -> None:
    with pytest.raises(FatalConnectorError, match="cursor"):
        list(make_source().read("track", cursor))


def test_an_unread_stream_is_fatal(make_source: SourceFactory) -> None:
    with pytest.raises(FatalConnectorError, match="no stream 'track'"):
        list(make_source(streams=["page"]).read("track", None))


def test_a_refused_statement_is_not_retried(engine: Engine, append: Append) -> None:
    def refuse(*_: object) -> None:
        raise ProgrammingError("SELECT", None, Exception("permission denied for ingest_spool"))

    sleep = FakeSleep()
    source = IngestSource(engine, ["track"], 10, sleep=sleep)
    event.listen(engine, "before_cursor_execute", refuse)
    try:
        with pytest.raises(FatalConnectorError, match="permission denied"):
            list(source.read("track", None))
    finally:
        event.remove(engine, "before_cursor_execute", refuse)
    assert sleep.waits == []


def context(tmp_path: Path, engine_url: str | None = None, **options: object) -> ConnectorContext:
    settings = {"write_keys": [{"env": "WEB_WRITE_KEY"}], **options}
    return ConnectorContext("web", IngestOptions.model_validate(settings), tmp_path, engine_url)


def test_the_source_reads_the_store_the_engine_hands_over(tmp_path: Path) -> None:
    assert CONNECTOR.make_source is not None
    with pytest.raises(ConfigError, match="store_url"):
        CONNECTOR.make_source(context(tmp_path))
    url = f"sqlite:///{tmp_path / 'store.db'}"
    assert connectors.ingest.store_url(context(tmp_path, url)) == url


def test_a_relative_store_url_is_relative_to_the_config(tmp_path: Path) -> None:
    given = context(tmp_path, None, store_url="sqlite:///var/web.db")
    assert connectors.ingest.store_url(given) == f"sqlite:///{tmp_path / 'var' / 'web.db'}"


def test_the_options_declare_the_streams_and_refuse_literal_keys() -> None:
    assert CONNECTOR.declared_streams is not None
    options = IngestOptions.model_validate(
        {"write_keys": [{"env": "K"}], "streams": ["identify", "page"]}
    )
    assert CONNECTOR.declared_streams(options) == ["identify", "page"]
    with pytest.raises(ValidationError, match="literal secret"):
        IngestOptions.model_validate({"write_keys": ["wk_live_123"]})
    with pytest.raises(ValidationError, match="listed twice"):
        IngestOptions.model_validate({"write_keys": [{"env": "K"}], "streams": ["page", "page"]})
    with pytest.raises(ValidationError, match="at least 1"):
        IngestOptions.model_validate({"write_keys": []})
    with pytest.raises(ValidationError, match="streams"):
        IngestOptions.model_validate({"write_keys": [{"env": "K"}], "streams": ["pageview"]})
    for hours in (-1, float("inf"), 1e9):
        with pytest.raises(ValidationError, match="spool_retention_hours"):
            IngestOptions.model_validate(
                {"write_keys": [{"env": "K"}], "spool_retention_hours": hours}
            )


def spooled(engine: Engine) -> list[str]:
    with engine.connect() as connection:
        rows = connection.exec_driver_sql("SELECT message_id FROM ingest_spool ORDER BY id")
        return [str(row[0]) for row in rows]


def pruning(
    engine: Engine, retention: timedelta, now: datetime, page_size: int = 10
) -> IngestSource:
    streams = ["track", "page"]
    return IngestSource(
        engine, streams, page_size, retention=retention, clock=lambda: now, sleep=FakeSleep()
    )


def test_messages_read_and_older_than_the_retention_leave_the_spool(
    engine: Engine, append: Append
) -> None:
    append([message("page", 0)] + [message("track", n) for n in range(5)])
    source = pruning(engine, timedelta(hours=1), START + timedelta(hours=2))
    first = list(source.read("track", None))
    assert ids(first) == [f"track-{n}" for n in range(5)]
    assert len(spooled(engine)) == 6  # a first read has no stored cursor: nothing goes
    append([message("track", 5), message("page", 1)])  # as old, but not read yet
    assert ids(list(source.read("track", first[-1].cursor))) == ["track-5"]
    # Only what the track cursor covers goes: the unread track-5, and the pages, which no
    # cursor covers, stay however old they are.
    assert spooled(engine) == ["page-0", "track-5", "page-1"]


def test_a_message_goes_only_once_every_reader_of_the_spool_has_stored_it(
    engine: Engine, append: Append
) -> None:
    append([message("track", n) for n in range(6)])
    source = pruning(engine, timedelta(hours=1), START + timedelta(hours=2), page_size=2)
    first = list(source.read("track", None))
    # Two sources read this spool: "web" stored all six, "app" only its first page. (A
    # cursor of another shape, another connector's stream of the same name, is no reader.)
    stored = {"web": first[-1].cursor, "app": first[0].cursor, "crm": {"page": 9}}
    with engine.begin() as connection:
        Bulk(connection).upsert(
            "cursor",
            ("source", "stream", "value", "updated_at"),
            [(name, "track", json.dumps(value), "2026-03-01") for name, value in stored.items()],
            ("source", "stream"),
        )
    list(source.read("track", first[-1].cursor))
    assert spooled(engine) == [f"track-{n}" for n in range(2, 6)]


def test_messages_within_the_retention_stay(engine: Engine, append: Append) -> None:
    append([message("track", n) for n in range(3)])
    source = pruning(engine, timedelta(hours=1), START + timedelta(minutes=30))
    first = list(source.read("track", None))
    assert list(source.read("track", first[-1].cursor)) == []
    assert spooled(engine) == ["track-0", "track-1", "track-2"]


def test_old_messages_not_yet_read_stay_while_younger_ones_follow(
    engine: Engine, append: Append
) -> None:
    append([message("track", n) for n in range(3)])
    # Messages are n seconds after START: with this clock, those before 5 s are old.
    source = pruning(engine, timedelta(hours=1), START + timedelta(hours=1, seconds=5))
    first = list(source.read("track", None))
    append([message("track", 3), message("track", 10)])
    assert ids(list(source.read("track", first[-1].cursor))) == ["track-3", "track-10"]
    assert spooled(engine) == ["track-3", "track-10"]


def test_the_newest_message_stays_so_that_no_id_is_handed_out_again(
    engine: Engine, append: Append
) -> None:
    # SQLite gives a new row the largest id plus one: were every row deleted, new messages
    # would get ids the cursor already covers, and never be read.
    append([message("track", n) for n in range(3)])
    source = pruning(engine, timedelta(0), START + timedelta(days=1))
    first = list(source.read("track", None))
    assert list(source.read("track", first[-1].cursor)) == []
    assert spooled(engine) == ["track-2"]
    append([message("track", 3)])
    assert ids(list(source.read("track", first[-1].cursor))) == ["track-3"]


@pytest.mark.parametrize(("read_only", "left"), [(True, 3), (False, 1)])
def test_a_dry_run_deletes_nothing_from_the_spool(
    tmp_path: Path, read_only: bool, left: int
) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    engine = open_store(url)
    try:
        StoreEventSink(engine).write([message("track", n) for n in range(3)])
        options = IngestOptions.model_validate({"write_keys": [{"env": "K"}]})
        assert CONNECTOR.make_source is not None
        source = CONNECTOR.make_source(ConnectorContext("web", options, tmp_path, url, read_only))
        try:
            first = list(source.read("track", None))
            list(source.read("track", first[-1].cursor))
        finally:
            source.close()
        # The messages are months older than the default retention of a week.
        assert len(spooled(engine)) == left
    finally:
        engine.dispose()
