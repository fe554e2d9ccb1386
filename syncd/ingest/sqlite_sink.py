"""A reference EventSink on one SQLite file, for the tests and the ingest benchmark.

Not the production sink: the engine's store-backed sink writes into the profile store. This
one shows the contract in a few lines: one transaction per write, WAL with synchronous=FULL
(so a commit is fsync'd before `write` returns), and de-duplication by messageId through
the primary key and INSERT OR IGNORE.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

from syncd.ingest.spec import IngestMessage

_SCHEMA = """
CREATE TABLE IF NOT EXISTS ingest_event (
    message_id   TEXT PRIMARY KEY,
    type         TEXT NOT NULL,
    user_id      TEXT,
    anonymous_id TEXT,
    timestamp    TEXT NOT NULL,
    received_at  TEXT NOT NULL,
    payload      TEXT NOT NULL
)
"""


class SqliteEventSink:
    """Stores messages in the `ingest_event` table of the SQLite file at `path`."""

    def __init__(self, path: str | Path) -> None:
        # autocommit mode: transactions are opened explicitly, one per write.
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(_SCHEMA)

    def write(self, messages: Sequence[IngestMessage]) -> None:
        """Insert `messages` in one fsync'd transaction; known message ids are skipped."""
        rows = [
            (
                m.message_id,
                m.type,
                m.user_id,
                m.anonymous_id,
                m.timestamp.isoformat(),
                m.received_at.isoformat(),
                json.dumps(m.payload, separators=(",", ":"), ensure_ascii=False),
            )
            for m in messages
        ]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT OR IGNORE INTO ingest_event VALUES (?, ?, ?, ?, ?, ?, ?)", rows
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def message_ids(self) -> set[str]:
        """Every stored message id."""
        with self._lock:
            return {row[0] for row in self._db.execute("SELECT message_id FROM ingest_event")}

    def count(self) -> int:
        """How many messages are stored."""
        with self._lock:
            (total,) = self._db.execute("SELECT count(*) FROM ingest_event").fetchone()
        return int(total)

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._db.close()
