"""The standard connector suite, run against the ingest spool on SQLite and PostgreSQL.

The spool's "emulator" is the store itself: faults are injected at the driver seam
(SQLAlchemy's before_cursor_execute event) as the errors a locked SQLite file, a failing or
restarted PostgreSQL server and a statement timeout raise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from sqlalchemy import Engine, event
from sqlalchemy.exc import OperationalError

from connectors.ingest.source import IngestSource
from syncd.connector import RawRecord
from syncd.testing import Fault, Sleep, SourceHarness, StandardSourceTests

from .conftest import Append, SourceFactory, message

MESSAGES = 35
"""Four pages of 10 in the track stream, between messages of other types."""

_FAULT_MESSAGES = {
    Fault.RATE_LIMIT: "database is locked",
    Fault.SERVER_ERROR: "the database system is shutting down",
    Fault.TIMEOUT: "canceling statement due to statement timeout",
    Fault.RESET: "server closed the connection unexpectedly",
}


class SpoolHarness:
    """The track stream of a spool holding MESSAGES track messages and some others."""

    stream = "track"
    rate_limit_retry_after: float | None = None

    def __init__(self, engine: Engine, append: Append, make_source: SourceFactory) -> None:
        self.engine = engine
        self._make_source = make_source
        append([message("track", n) for n in range(MESSAGES)])
        append([message("page", n) for n in range(5)] + [message("identify", 1, userId="u1")])
        self._pending: list[str] = []
        event.listen(engine, "before_cursor_execute", self._fail_if_told)

    def _fail_if_told(self, *args: Any) -> None:
        if self._pending:
            raise OperationalError(
                "SELECT … FROM ingest_spool", None, Exception(self._pending.pop())
            )

    def make_source(self, sleep: Sleep) -> IngestSource:
        return self._make_source(sleep)

    def record_id(self, record: RawRecord) -> str:
        return str(record.payload["messageId"])

    def live_ids(self) -> set[str]:
        return {f"track-{n}" for n in range(MESSAGES)}

    def change(self, ids: Sequence[str]) -> None:
        raise AssertionError("spool messages never change")

    def delete(self, ids: Sequence[str]) -> None:
        raise AssertionError("spool messages are never deleted")

    def inject(self, fault: Fault, times: int = 1) -> None:
        if fault is Fault.AUTH:
            raise AssertionError("the spool has no credentials of its own")
        self._pending.extend([_FAULT_MESSAGES[fault]] * times)

    def close(self) -> None:
        event.remove(self.engine, "before_cursor_execute", self._fail_if_told)


class TestIngestSource(StandardSourceTests):
    opt_outs = {
        "test_changes_after_the_cursor_arrive_on_the_next_read": (
            "spool messages are immutable: an SDK re-sending a messageId is a duplicate and is "
            "ignored; new messages after the cursor are tested in test_ingest_source.py"
        ),
        "test_deletions_arrive_on_the_next_read": (
            "events are append-only: the spec has no call that deletes one, and forgetting a "
            "person is the store's job"
        ),
        "test_refused_credentials_are_not_retried": (
            "the spool lives in the profile store, opened with the store's URL; a refused "
            "store login fails the store before any source runs"
        ),
    }

    @pytest.fixture
    def source_harness(self, engine: Engine, append: Append, make_source: SourceFactory) -> Any:
        harness = SpoolHarness(engine, append, make_source)
        yield harness
        harness.close()


def test_the_harness_is_a_source_harness(
    engine: Engine, append: Append, make_source: SourceFactory
) -> None:
    harness: SourceHarness = SpoolHarness(engine, append, make_source)
    assert len(harness.live_ids()) == MESSAGES
    assert isinstance(harness.make_source(lambda _: None), IngestSource)
