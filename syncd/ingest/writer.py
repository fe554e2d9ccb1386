"""Group commit: one writer thread commits the messages of many concurrent requests at once.

An fsync costs the same for one message as for a thousand, so requests that arrive while a
commit is in progress wait in a queue and all go into the next commit together. Each request
holds a future that settles only when the commit holding its messages has finished, so an
answer of 200 always means "on disk".
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

import structlog

from syncd.ingest.sink import EventSink
from syncd.ingest.spec import IngestMessage

log = structlog.get_logger(__name__)

_DOWN_AFTER = 2
"""Requests retried alone that the sink refuses in a row, after which it is taken to be down."""


class Overloaded(Exception):
    """Too many requests are already waiting for a commit, or the writer is stopped."""


class CommitFailed(Exception):
    """The sink refused the commit that held these messages; none of them is acknowledged.

    It carries nothing of the sink's error, whose text may quote the messages (and their
    people's addresses) to every client of the commit.
    """

    def __init__(self) -> None:
        super().__init__("the commit failed")


@dataclass
class _Pending:
    messages: Sequence[IngestMessage]
    done: Future[None] = field(default_factory=Future)


class GroupCommitWriter:
    """Commits submitted messages through `sink` from a single background thread.

    A commit takes every request waiting when the previous commit finished, up to
    `max_messages` messages; at most `max_pending` requests may wait at once.
    """

    def __init__(
        self, sink: EventSink, max_messages: int = 5000, max_pending: int = 10_000
    ) -> None:
        self._sink = sink
        self._max_messages = max_messages
        # None is the stop signal, queued behind the requests already waiting.
        self._queue: queue.Queue[_Pending | None] = queue.Queue(maxsize=max_pending)
        self._thread = threading.Thread(target=self._run, name="ingest-writer", daemon=True)
        self._accepting = False

    def start(self) -> None:
        """Start the writer thread."""
        self._accepting = True
        self._thread.start()

    def submit(self, messages: Sequence[IngestMessage]) -> Future[None]:
        """Queue `messages` for the next commit; the future settles when it is done."""
        if not self._accepting:
            raise Overloaded("the ingest writer is not running")
        pending = _Pending(messages)
        try:
            self._queue.put_nowait(pending)
        except queue.Full:
            raise Overloaded("too many requests are waiting for a commit") from None
        return pending.done

    def stop(self) -> None:
        """Commit what is already queued, then stop the thread."""
        if not self._accepting:
            return
        self._accepting = False
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            group = [first]
            count = len(first.messages)
            stopping = False
            while count < self._max_messages:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                    break
                group.append(item)
                count += len(item.messages)
            self._commit(group)
            if stopping:
                return

    def _commit(self, group: list[_Pending]) -> None:
        # A request whose client went away before the commit started is dropped unanswered.
        live = [p for p in group if p.done.set_running_or_notify_cancel()]
        if not live or self._write(live):
            return
        if len(live) == 1:
            live[0].done.set_exception(CommitFailed())
            return
        # The sink may refuse the messages of one request only: alone, the others get stored.
        # A sink that refuses requests alone in a row is down, and the rest of the group fail
        # without a write each, which could take a timeout each.
        refused_in_a_row = 0
        for pending in live:
            if refused_in_a_row < _DOWN_AFTER and self._write([pending]):
                refused_in_a_row = 0
            else:
                refused_in_a_row += 1
                pending.done.set_exception(CommitFailed())

    def _write(self, requests: list[_Pending]) -> bool:
        """Commit the messages of `requests` in one write and answer them; False if refused."""
        messages = [m for p in requests for m in p.messages]
        try:
            self._sink.write(messages)
        except Exception as error:  # noqa: BLE001 - any sink failure fails requests (503), never the writer
            # The type only: the error's text and traceback may quote the messages (PII).
            log.error(  # noqa: TRY400
                "ingest_commit_failed", messages=len(messages), error=type(error).__name__
            )
            return False
        for p in requests:
            p.done.set_result(None)
        return True
