"""The ingest source: messages from the store's ingest spool, one stream per message type.

Streams: identify, track, page, screen, group, alias. Each record is the message as the SDK
sent it (with `messageId`, `timestamp` and `receivedAt` filled in by the endpoint), so each
type maps through its own mapping file like any source's stream.

The spool's ids grow in commit order, so the cursor is simply `{"after_id": N}`: every
message of the stream with an id up to N has been read. Messages are never changed, so no
record ever comes back and no deletion is reported.

Once every stored ingest cursor of its type covers a message and it is older than the
retention, the next read of that stream deletes it: the spool holds what is unread plus a
window of what was read, not every message ever sent. A reader whose cursors live in another
store is not seen: give such a spool a retention longer than that reader's pauses. A retry
that arrives later is stored and read again, and the store skips it as an event it has (by
messageId). The newest row of the spool always stays, because SQLite would hand out the
ids of deleted newest rows again and a cursor would then skip new messages.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from syncd.connector import JsonValue, Page, RawRecord
from syncd.errors import FatalConnectorError, RetryableError
from syncd.mapping.transforms import format_timestamp
from syncd.retry import RetryPolicy, call_with_retry
from syncd.store.db import Bulk
from syncd.timeutil import utcnow

Row = Sequence[Any]
T = TypeVar("T")


def cursor_after_id(cursor: JsonValue | None) -> int:
    """The last spool id a stored cursor covers (0: nothing read yet)."""
    if cursor is None:
        return 0
    after = cursor.get("after_id") if isinstance(cursor, dict) else None
    if isinstance(after, bool) or not isinstance(after, int) or after < 0:
        raise FatalConnectorError(f"not an ingest spool cursor: {cursor!r}")
    return after


def _stored_positions(bulk: Bulk, stream: str) -> list[int]:
    """The spool ids that the ingest cursors stored for a message type have reached."""
    positions = []
    for (value,) in bulk.connection.exec_driver_sql(
        bulk.sql("SELECT value FROM cursor WHERE stream = ?"), (stream,)
    ):
        cursor = bulk.decode_any(value)
        if isinstance(cursor, dict) and set(cursor) == {"after_id"}:
            positions.append(cursor_after_id(cursor))
    return positions


def _record(row: Row) -> RawRecord:
    spool_id, message = int(row[0]), row[1]
    location = f"ingest_spool/{spool_id}"
    try:
        payload = json.loads(message)
    except json.JSONDecodeError as error:
        return RawRecord({}, location, f"message is not JSON: {error.msg}")
    if not isinstance(payload, dict):
        return RawRecord({}, location, "message is not a JSON object")
    return RawRecord(payload, location)


class IngestSource:
    """Reads the spool of the store behind `engine`, `page_size` messages per page.

    `retention`: how long a message read and stored stays; None keeps everything (a dry run
    changes nothing). The engine is disposed on `close` only when `owns_engine` is true.
    """

    def __init__(
        self,
        engine: Engine,
        streams: Sequence[str],
        page_size: int,
        *,
        retention: timedelta | None = None,
        owns_engine: bool = False,
        policy: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._engine = engine
        self._streams = list(streams)
        self._page_size = page_size
        self._retention = retention
        self._owns_engine = owns_engine
        self._policy = policy or RetryPolicy()
        self._sleep = sleep
        self._clock = clock

    def streams(self) -> Sequence[str]:
        """The message types this source reads."""
        return list(self._streams)

    def read(self, stream: str, cursor: JsonValue | None) -> Iterator[Page]:
        """Pages of messages of type `stream` with a spool id after the cursor's."""
        if stream not in self._streams:
            raise FatalConnectorError(f"the ingest source has no stream {stream!r}")
        after = cursor_after_id(cursor)
        if after and self._retention is not None:
            self._prune(stream, after, self._clock() - self._retention)
        while True:
            rows = self._fetch(stream, after)
            if not rows:
                return
            after = int(rows[-1][0])
            yield Page([_record(row) for row in rows], {"after_id": after})
            if len(rows) < self._page_size:
                return

    def _fetch(self, stream: str, after: int) -> list[Row]:
        def query(connection: Connection) -> list[Row]:
            return list(
                connection.exec_driver_sql(
                    Bulk(connection).sql(
                        "SELECT id, message FROM ingest_spool "
                        "WHERE type = ? AND id > ? ORDER BY id LIMIT ?"
                    ),
                    (stream, after, self._page_size),
                ).all()
            )

        return self._retried("spool read", query)

    def _prune(self, stream: str, read_up_to: int, received_before: datetime) -> None:
        """Delete messages of the stream that every reader has stored, received before a time.

        Every reader: each ingest cursor the spool's store holds for this message type (two
        sources may read one spool), and this one's. The scan stops at the type's first
        message young enough to stay, so a pass reads only what it deletes.
        """

        def delete(connection: Connection) -> None:
            bulk = Bulk(connection)
            with connection.begin():
                bound = min([read_up_to, *_stored_positions(bulk, stream)])
                connection.exec_driver_sql(
                    bulk.sql(
                        "DELETE FROM ingest_spool WHERE type = ? AND id <= ? "
                        "AND id < (SELECT MAX(id) FROM ingest_spool) "
                        "AND id < COALESCE((SELECT id FROM ingest_spool "
                        "WHERE type = ? AND received_at >= ? ORDER BY id LIMIT 1), ?)"
                    ),
                    (stream, bound, stream, format_timestamp(received_before), bound + 1),
                )

        self._retried("spool prune", delete)

    def _retried(self, what: str, work: Callable[[Connection], T]) -> T:
        def attempt() -> T:
            try:
                with self._engine.connect() as connection:
                    return work(connection)
            except (OperationalError, PoolTimeout) as error:
                # A locked SQLite file, a dropped or timed-out PostgreSQL connection.
                raise RetryableError(f"{what} failed: {_reason(error)}") from error
            except DBAPIError as error:
                raise FatalConnectorError(f"{what} refused: {_reason(error)}") from error

        return call_with_retry(attempt, self._policy, self._sleep)

    def close(self) -> None:
        """Release the store connections when this source opened them."""
        if self._owns_engine:
            self._engine.dispose()


def _reason(error: Exception) -> str:
    if isinstance(error, DBAPIError):
        return str(error.orig).strip().splitlines()[0] if error.orig is not None else str(error)
    return str(error).splitlines()[0]
