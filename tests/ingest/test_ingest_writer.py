"""The group-commit writer: many requests per commit, answers only after the commit."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from datetime import UTC, datetime

import pytest
from structlog.testing import capture_logs

from syncd.ingest.spec import IngestMessage, parse_message
from syncd.ingest.writer import CommitFailed, GroupCommitWriter, Overloaded

NOW = datetime(2024, 5, 1, tzinfo=UTC)


def message(n: int) -> IngestMessage:
    return parse_message(
        {"userId": "u", "event": "E", "messageId": f"m{n}"}, kind="track", received_at=NOW
    )


class SlowSink:
    """Records each commit; each takes a while, as an fsync does."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.commits: list[list[str]] = []
        self.gate = gate or threading.Event()
        if gate is None:
            self.gate.set()

    def write(self, messages: Sequence[IngestMessage]) -> None:
        self.gate.wait(5)
        threading.Event().wait(0.01)
        self.commits.append([m.message_id for m in messages])


def test_concurrent_requests_share_commits_and_all_are_committed() -> None:
    sink = SlowSink()
    writer = GroupCommitWriter(sink)
    writer.start()
    with ThreadPoolExecutor(16) as pool:
        futures = list(pool.map(lambda n: writer.submit([message(n)]), range(64)))
        done, _ = wait(futures, timeout=10)
    writer.stop()
    assert len(done) == 64
    assert all(f.exception() is None for f in futures)
    assert sorted(m for commit in sink.commits for m in commit) == sorted(
        f"m{n}" for n in range(64)
    )
    assert len(sink.commits) < 64


def test_a_commit_holds_at_most_max_messages() -> None:
    gate = threading.Event()
    sink = SlowSink(gate)
    writer = GroupCommitWriter(sink, max_messages=10)
    writer.start()
    futures = [writer.submit([message(n), message(n + 100)]) for n in range(20)]
    gate.set()
    wait(futures, timeout=10)
    writer.stop()
    assert max(len(commit) for commit in sink.commits) <= 10
    assert sum(len(commit) for commit in sink.commits) == 40


def test_a_future_settles_only_after_its_commit() -> None:
    gate = threading.Event()
    sink = SlowSink(gate)
    writer = GroupCommitWriter(sink)
    writer.start()
    future = writer.submit([message(1)])
    assert not future.done()
    gate.set()
    future.result(timeout=5)
    writer.stop()
    assert sink.commits == [["m1"]]


def test_stop_commits_what_is_queued() -> None:
    gate = threading.Event()
    sink = SlowSink(gate)
    writer = GroupCommitWriter(sink)
    writer.start()
    futures = [writer.submit([message(n)]) for n in range(5)]
    gate.set()
    writer.stop()
    assert all(f.done() and f.exception() is None for f in futures)
    with pytest.raises(Overloaded):
        writer.submit([message(9)])


def test_too_many_waiting_requests_are_refused() -> None:
    gate = threading.Event()
    writer = GroupCommitWriter(SlowSink(gate), max_pending=2)
    writer.start()
    first = writer.submit([message(0)])
    # The writer holds the first request in its commit; two more may wait.
    while not first.running():
        threading.Event().wait(0.001)
    writer.submit([message(1)])
    writer.submit([message(2)])
    with pytest.raises(Overloaded):
        writer.submit([message(3)])
    gate.set()
    writer.stop()


def test_a_failed_commit_fails_every_request_in_it() -> None:
    class Broken:
        def write(self, messages: Sequence[IngestMessage]) -> None:
            raise OSError("fsync failed")

    writer = GroupCommitWriter(Broken())
    writer.start()
    futures: list[Future[None]] = [writer.submit([message(n)]) for n in range(3)]
    wait(futures, timeout=5)
    writer.stop()
    for future in futures:
        assert isinstance(future.exception(), CommitFailed)


class PickySink:
    """Refuses every write holding a refused message id (all of them when `down`); the first
    write waits for the gate, so that the requests sent meanwhile form the next commit."""

    def __init__(self, refused: set[str], down: bool = False) -> None:
        self.refused, self.down = refused, down
        self.gate = threading.Event()
        self.writes: list[list[str]] = []
        self.stored: list[str] = []

    def write(self, messages: Sequence[IngestMessage]) -> None:
        if not self.writes:
            self.gate.wait(5)
        ids = [m.message_id for m in messages]
        self.writes.append(ids)
        if self.down or self.refused & set(ids):
            raise OSError("refused")
        self.stored += ids


def commit_behind_a_gate(sink: PickySink, requests: int) -> list[Future[None]]:
    """Futures of `requests` requests committed together, after a first one of their own."""
    writer = GroupCommitWriter(sink)
    writer.start()
    first = writer.submit([message(0)])
    while not first.running():
        threading.Event().wait(0.001)
    futures = [writer.submit([message(n), message(n + 100)]) for n in range(1, requests + 1)]
    sink.gate.set()
    wait(futures, timeout=5)
    writer.stop()
    return futures


def test_a_request_the_sink_refuses_fails_alone() -> None:
    sink = PickySink(refused={"m102"})
    futures = commit_behind_a_gate(sink, 4)
    assert [f.exception() is None for f in futures] == [True, False, True, True]
    assert isinstance(futures[1].exception(), CommitFailed)
    assert sink.writes[1] == ["m1", "m101", "m2", "m102", "m3", "m103", "m4", "m104"]
    # Retried alone, the other requests are stored; of the refused one, nothing.
    assert sorted(sink.stored) == ["m0", "m1", "m101", "m103", "m104", "m3", "m4"]


def test_a_sink_that_refuses_requests_alone_in_a_row_fails_the_rest_without_writes() -> None:
    sink = PickySink(refused=set(), down=True)
    futures = commit_behind_a_gate(sink, 10)
    assert all(isinstance(f.exception(), CommitFailed) for f in futures)
    # The first request alone, the group, then the first two of the group alone.
    assert [len(ids) for ids in sink.writes] == [1, 20, 2, 2]


def test_a_failed_commit_is_logged_without_the_text_of_its_error() -> None:
    class Quoting:
        def write(self, messages: Sequence[IngestMessage]) -> None:
            raise UnicodeEncodeError("utf-8", '{"email":"ann@example.com"}', 0, 1, "no")

    writer = GroupCommitWriter(Quoting())
    writer.start()
    with capture_logs() as lines:
        failed = writer.submit([message(1), message(2)])
        wait([failed], timeout=5)
        writer.stop()
    assert str(failed.exception()) == "the commit failed"
    assert lines == [
        {
            "event": "ingest_commit_failed",
            "log_level": "error",
            "messages": 2,
            "error": "UnicodeEncodeError",
        }
    ]


def test_a_cancelled_request_is_not_committed() -> None:
    gate = threading.Event()
    sink = SlowSink(gate)
    writer = GroupCommitWriter(sink)
    writer.start()
    first = writer.submit([message(0)])
    while not first.running():
        threading.Event().wait(0.001)
    abandoned = writer.submit([message(1)])
    assert abandoned.cancel()
    gate.set()
    writer.stop()
    assert sink.commits == [["m0"]]
