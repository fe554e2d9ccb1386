"""Opening the store (SQLite in WAL mode, or PostgreSQL), migrating it, and bulk statements.

The bulk helpers speak `INSERT … ON CONFLICT`, which SQLite and PostgreSQL write alike, straight
through the driver's executemany: the ORM is far too slow for the hot path (see
docs/BENCHMARKS.md), and Core adds a third on top of the driver.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import URL, Connection, Engine, create_engine, event, inspect, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import ConnectionPoolEntry

from syncd.errors import StoreError
from syncd.jsontext import canonical_json, storable
from syncd.store import tables

MIGRATIONS = Path(__file__).parent / "migrations"
JSON_COLUMNS = {
    (t.__tablename__, c.name)
    for t in (
        tables.SourceRecord,
        tables.Event,
        tables.Profile,
        tables.Cursor,
        tables.Quarantine,
        tables.SyncRun,
        tables.MergeLog,
    )
    for c in t.__table__.columns  # type: ignore[union-attr]
    if isinstance(c.type, type(tables.JsonColumn))
}
CHUNK = 500
BATCH_ROWS = 20_000
"""Rows per round trip of a large read or write."""
CACHE_KIB = -65536
"""SQLite's page cache (negative: KiB): the hash-keyed indexes a pull looks up and inserts into
at random places."""
SMALL_CACHE_KIB = -8192
"""SQLite's page cache for work that reads most pages once: an index build (the cache bounds
its sort's memory) or a scan of the store by a mapping worker."""
_STREAMS = itertools.count()


SQLITE_PAGE_SIZE = 16384
"""Four times SQLite's default: inserts at random places of the hash-keyed indexes walk
shallower trees and split pages less often (a fifth faster for identifiers, measured)."""


def _sqlite_pragmas(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    cursor = dbapi_connection.cursor()
    # Only a new store takes it (an existing one keeps its page size until a VACUUM).
    cursor.execute(f"PRAGMA page_size={SQLITE_PAGE_SIZE}")
    # WAL lets readers (status, explain) run beside a writer; NORMAL is durable at checkpoints
    # and still safe against corruption in WAL mode.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute(f"PRAGMA cache_size={CACHE_KIB}")
    cursor.close()


def in_memory(url: str | URL) -> bool:
    """A SQLite store that lives in the memory of the process that opened it."""
    parsed = make_url(url)
    return parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:")


def open_engine(url: str) -> Engine:
    """An engine for `url`; SQLite files get their folder created and WAL mode."""
    if url.startswith("sqlite:///") and ":memory:" not in url:
        database = Path(url.removeprefix("sqlite:///"))
        try:
            database.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StoreError(
                f"cannot create the folder of the SQLite store {database}: {error.strerror} — "
                "give [store] url a path in a folder syncd may create or write"
            ) from None
    try:
        # hide_parameters: a failed statement's message must not carry payloads (PII) to logs.
        engine = create_engine(url, future=True, hide_parameters=True)
    except Exception as error:  # noqa: BLE001 - any driver or URL error means the same to a user
        raise StoreError(
            f"cannot use store URL: {error} — check [store] url in the config"
        ) from None
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest version; an upgrade never needs a manual step."""
    alembic = AlembicConfig()
    alembic.set_main_option("script_location", str(MIGRATIONS))
    try:
        with engine.begin() as connection:
            # One transaction for the whole upgrade: a store whose upgrade failed half-way
            # (killed, out of disk) is left as it was, and the next open upgrades it again.
            begin_for_schema_changes(connection)
            alembic.attributes["connection"] = connection
            # "heads": independent migrations (one per feature) may each branch off the base.
            command.upgrade(alembic, "heads")
    except OperationalError as error:
        raise StoreError(
            f"cannot open the store: {error.orig} — check that the database is reachable "
            "(an upgrade of its schema that failed has left it as it was)"
        ) from None


def begin_for_schema_changes(connection: Connection) -> None:
    """Open the transaction now on SQLite: its driver opens one only at the first INSERT,
    UPDATE or DELETE, so a schema change (a DROP, a CREATE) before it would commit at once
    and stay, whatever became of the rest."""
    driver = connection.connection.dbapi_connection
    if connection.dialect.name == "sqlite" and driver is not None and not driver.in_transaction:
        connection.exec_driver_sql("BEGIN")


def schema_tables(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names())


def to_json(value: Any) -> str:
    """The one JSON text of a value: sorted keys, so equal values hash alike (see
    `storable_json`)."""
    return storable_json(value)[1]


def storable_json(value: Any) -> tuple[Any, str]:
    """`value` as the store keeps it, and its JSON text: NUL characters dropped and lone
    surrogates replaced (`jsontext.storable`), as PostgreSQL refuses both in JSON and text and
    one stray character in a browser event must not stop a stream. The value itself when it
    holds neither, which its text says by their escapes ("\\ud" also starts a valid pair's).
    """
    text = canonical_json(value)
    if "\\u0000" in text or "\\ud" in text:
        value = storable(value)
        text = canonical_json(value)
    return value, text


class Bulk:
    """Bulk statements over one connection, written once per dialect."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.dialect = connection.dialect.name
        self._placeholder = "?" if connection.dialect.paramstyle == "qmark" else "%s"

    def _values(self, table: str, columns: Sequence[str]) -> str:
        marks = []
        for column in columns:
            json_column = (table, column) in JSON_COLUMNS
            if json_column and self.dialect == "postgresql":
                marks.append(f"CAST({self._placeholder} AS jsonb)")
            else:
                marks.append(self._placeholder)
        return ", ".join(marks)

    @staticmethod
    def encode(value: Any) -> Any:
        """JSON columns take their text; other values go as they are."""
        if isinstance(value, dict | list):
            return to_json(value)
        return value

    @staticmethod
    def decode(value: Any) -> Any:
        """A JSON column's object or list: SQLite gives its text, PostgreSQL the value decoded.
        A column that may hold a bare string (a cursor) needs `decode_any`."""
        return json.loads(value) if isinstance(value, str) else value

    def decode_any(self, value: Any) -> Any:
        """A JSON column's value whatever it is: on PostgreSQL a string is the value itself,
        which decoding again would turn "12345" into a number and "null" into nothing."""
        return Bulk.decode(value) if self.dialect == "sqlite" else value

    def executemany(
        self,
        sql: str,
        rows: Iterable[Sequence[Any]],
        between: Callable[[], None] | None = None,
    ) -> None:
        """Sent in slices, so rows from a generator (a first load's million) are never all
        built at once; `between` runs after each slice."""
        iterator = iter(rows)
        while chunk := list(itertools.islice(iterator, BATCH_ROWS)):
            self.connection.exec_driver_sql(sql, chunk)
            if between is not None:
                between()

    def upsert(
        self,
        table: str,
        columns: Sequence[str],
        rows: Iterable[Sequence[Any]],
        key: Sequence[str],
        update: Sequence[str] | None = None,
        between: Callable[[], None] | None = None,
    ) -> None:
        """INSERT … ON CONFLICT (key) DO UPDATE the `update` columns (all but key by default);
        `between` as `executemany` has it."""
        update = [c for c in columns if c not in key] if update is None else update
        action = (
            "DO UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in update)
            if update
            else "DO NOTHING"
        )
        sql = (
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({self._values(table, columns)}) "
            f"ON CONFLICT ({', '.join(key)}) {action}"
        )
        self.executemany(sql, rows, between)

    def insert_ignore(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], key: Sequence[str]
    ) -> None:
        self.upsert(table, columns, rows, key, update=[])

    def _chunks(
        self, sql: str, values: Iterable[Any], before: Sequence[Any], after: Sequence[Any]
    ) -> Iterator[tuple[str, tuple[Any, ...]]]:
        pending = list(values)
        for start in range(0, len(pending), CHUNK):
            chunk = pending[start : start + CHUNK]
            marks = ", ".join([self._placeholder] * len(chunk))
            yield self.sql(sql).replace("{in}", marks), (*before, *chunk, *after)

    def select_in(
        self,
        sql: str,
        values: Iterable[Any],
        before: Sequence[Any] = (),
        after: Sequence[Any] = (),
    ) -> Iterator[Sequence[Any]]:
        """Run `sql` (`?` placeholders, one `{in}` for the list) over `values` in chunks.

        `before` and `after` are the parameters written before and after the `{in}` list.
        """
        for statement, params in self._chunks(sql, values, before, after):
            yield from self.connection.exec_driver_sql(statement, params).all()

    def execute_in(
        self,
        sql: str,
        values: Iterable[Any],
        before: Sequence[Any] = (),
        after: Sequence[Any] = (),
    ) -> None:
        """Like select_in, for statements that return nothing."""
        for statement, params in self._chunks(sql, values, before, after):
            self.connection.exec_driver_sql(statement, params)

    def count_up_to(self, table: str, limit: int) -> int:
        """How many rows `table` holds, counted no further than `limit`: never costs more
        than reading `limit` rows, whatever the table's size."""
        return int(
            self.connection.exec_driver_sql(
                self.sql(f"SELECT COUNT(*) FROM (SELECT 1 FROM {table} LIMIT ?) AS counted"),
                (limit,),
            ).scalar_one()
        )

    @contextmanager
    def indexes_set_aside(self, table: str, names: Sequence[str]) -> Iterator[None]:
        """On SQLite, drop some indexes of `table` and build them again afterwards, in this
        transaction: for a statement that updates most rows, one sorted build costs less than
        an insert at a random place of the index for every row. PostgreSQL keeps them."""
        if self.dialect != "sqlite" or not names:
            yield
            return
        definitions = self.connection.exec_driver_sql(
            f"SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? "
            f"AND name IN ({', '.join('?' for _ in names)}) ORDER BY name",
            (table, *names),
        ).all()
        # A failure before the build must not lose the index.
        begin_for_schema_changes(self.connection)
        for name, _ in definitions:
            self.connection.exec_driver_sql(f'DROP INDEX "{name}"')
        yield
        # SQLite sorts an index's entries in as much memory as the page cache may take, on
        # top of the cache: building one over 1M records took 70 MB more at its peak. With
        # a small cache for the builds the sort goes by temporary files, as fast here.
        cache = self.connection.exec_driver_sql("PRAGMA cache_size").scalar_one()
        self.connection.exec_driver_sql(f"PRAGMA cache_size={SMALL_CACHE_KIB}")
        try:
            for _, definition in definitions:
                self.connection.exec_driver_sql(definition)
        finally:
            self.connection.exec_driver_sql(f"PRAGMA cache_size={int(cache)}")

    def stream(self, sql: str, params: Sequence[Any] = ()) -> Generator[Sequence[Any], None, None]:
        """The rows of a large read, a fetch at a time, as the driver's plain tuples.

        On PostgreSQL a server-side cursor, so memory holds one fetch; rows skip SQLAlchemy's
        row objects, which cost more than the database's own work on a million-row scan.
        """
        dbapi = self.connection.connection.dbapi_connection
        assert dbapi is not None, "a Bulk always wraps an open connection"
        cursor = (
            dbapi.cursor(name=f"syncd_stream_{next(_STREAMS)}")
            if self.dialect == "postgresql"
            else dbapi.cursor()
        )
        try:
            cursor.execute(self.sql(sql), tuple(params))
            while rows := cursor.fetchmany(BATCH_ROWS):
                yield from rows
        finally:
            cursor.close()

    def sql(self, text: str) -> str:
        """`text` written with `?` placeholders, in this driver's style."""
        return text if self._placeholder == "?" else text.replace("?", "%s")

    @property
    def true(self) -> str:
        """The boolean literal for this dialect (PostgreSQL will not compare bool with 1)."""
        return "true" if self.dialect == "postgresql" else "1"

    @property
    def false(self) -> str:
        return "false" if self.dialect == "postgresql" else "0"


@contextmanager
def transaction(engine: Engine, commit: bool = True) -> Iterator[Bulk]:
    """One transaction with bulk helpers; committed on success (unless `commit` is false),
    rolled back on error."""
    with engine.connect() as connection, connection.begin() as active:
        yield Bulk(connection)
        if not commit:
            active.rollback()


class PageGroups:
    """Consecutive pages of one stream written in shared transactions.

    A commit per page would rewrite the same index pages over and over on a large pull; a
    commit per group of pages writes each of them once per group. Every page leaves its cursor
    in the transaction, so a crash loses at most one group, which the next run reads again.
    A group ends after `records` records or `seconds` seconds, whichever comes first, so other
    writers (the ingest endpoint) never wait long; that holds only for pages that come without
    waiting, so `grouped=False` (a remote source) commits every page alone.
    """

    def __init__(
        self,
        engine: Engine,
        commit: bool = True,
        grouped: bool = True,
        records: int = 100_000,
        seconds: float = 5.0,
    ) -> None:
        self._engine = engine
        self._commit = commit
        self._grouped = grouped
        self._records = records
        self._seconds = seconds
        self._connection: Connection | None = None
        self._written = 0
        self._started = 0.0
        self._in_page = False

    def page(self) -> Bulk:
        """The bulk helper for the next page, in the open group (a new one if none)."""
        if self._connection is None:
            self._connection = self._engine.connect()
            self._connection.begin()
            self._written = 0
            self._started = time.monotonic()
        self._in_page = True
        return Bulk(self._connection)

    def page_done(self, records: int) -> None:
        """The page is written whole; end the group if it is large or old enough."""
        self._in_page = False
        self._written += records
        if (
            not self._grouped
            or self._written >= self._records
            or time.monotonic() - self._started >= self._seconds
        ):
            self._end(keep=True)

    def _end(self, keep: bool) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        try:
            if keep and self._commit:
                connection.commit()
            else:
                connection.rollback()
        finally:
            connection.close()

    def __enter__(self) -> PageGroups:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        # Pages written whole stay even when the source fails on the next one; a page cut
        # short by an error goes with its group.
        self._end(keep=kind is None or not self._in_page)


def open_store(url: str) -> Engine:
    """An engine on a store migrated to the newest schema."""
    engine = open_engine(url)
    migrate(engine)
    return engine
