"""The production EventSink: acknowledged messages go to the profile store's ingest spool.

Each group commit of the endpoint is one transaction appending its messages to
`ingest_spool`, with `INSERT … ON CONFLICT (message_id) DO NOTHING`, so an SDK retrying a
request stores nothing twice (while the spool holds the first: the ingest source deletes
what it has read once it is older than the retention; the store then skips a late retry as
an event it has). The ingest source (`connectors/ingest/`) reads the spool like
any other source reads its system, so events are mapped, stored and unified by the pipeline.

Durability: PostgreSQL fsyncs every commit (synchronous_commit's default). The store runs
SQLite with synchronous=NORMAL, which survives a killed process but not a power cut; the
sink raises it to FULL for its own commits, so an acknowledged event is on disk.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from sqlalchemy import Engine

from syncd.ingest.spec import IngestMessage
from syncd.mapping.transforms import format_timestamp
from syncd.store.db import Bulk

_COLUMNS = ("message_id", "type", "received_at", "message")


def _row(message: IngestMessage) -> tuple[str, str, str, str]:
    return (
        message.message_id,
        message.type,
        format_timestamp(message.received_at),
        json.dumps(message.payload, separators=(",", ":"), ensure_ascii=False),
    )


class StoreEventSink:
    """Appends committed messages to the `ingest_spool` table of the store behind `engine`.

    The store must be migrated (`syncd.store.db.open_store`).
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._sqlite = engine.dialect.name == "sqlite"

    def write(self, messages: Sequence[IngestMessage]) -> None:
        """Commit `messages` in one durable transaction; known message ids are skipped."""
        rows = [_row(message) for message in messages]
        with self._engine.connect() as connection:
            if self._sqlite:
                # Per connection, outside the transaction: SQLite ignores it inside one.
                connection.exec_driver_sql("PRAGMA synchronous=FULL")
                connection.commit()
            try:
                with connection.begin():
                    if not self._sqlite:
                        # The ingest source reads the spool by increasing id, so ids must
                        # commit in id order even with several endpoints on one store: one
                        # writer at a time (SQLite's single writer gives this for free).
                        connection.exec_driver_sql("SELECT pg_advisory_xact_lock(80731)")
                    Bulk(connection).insert_ignore("ingest_spool", _COLUMNS, rows, ("message_id",))
            finally:
                if self._sqlite:
                    # The connection returns to the pool the pipeline also draws from.
                    connection.exec_driver_sql("PRAGMA synchronous=NORMAL")
                    connection.commit()
