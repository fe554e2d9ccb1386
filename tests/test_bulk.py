"""Bulk statements of the store that the hot paths build on."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import Engine, event, inspect

from syncd.store.db import CACHE_KIB, SMALL_CACHE_KIB, SQLITE_PAGE_SIZE, open_store, transaction
from syncd.store.writer import PageWriter, load_cursor

TABLE = "merge_log"
INDEXES = ("ix_merge_log_record_a", "ix_merge_log_record_b")


def _index_columns(engine: Engine) -> dict[str, list[str | None]]:
    return {
        index["name"]: index["column_names"]
        for index in inspect(engine).get_indexes(TABLE)
        if index["name"]
    }


def test_indexes_set_aside_are_built_again_as_they_were(engine: Engine) -> None:
    before = _index_columns(engine)
    with transaction(engine) as bulk, bulk.indexes_set_aside(TABLE, INDEXES):
        present = {
            row[0]
            for row in bulk.connection.exec_driver_sql(
                f"SELECT indexname FROM pg_indexes WHERE tablename = '{TABLE}'"
                if bulk.dialect == "postgresql"
                else f"SELECT name FROM sqlite_master WHERE tbl_name = '{TABLE}'"
            )
        }
        # SQLite builds them again afterwards; PostgreSQL keeps them all along.
        assert bool(present & set(INDEXES)) == (bulk.dialect == "postgresql")
    assert _index_columns(engine) == before
    assert set(INDEXES) <= set(before)


def test_a_new_sqlite_store_has_large_pages_and_an_existing_one_keeps_its_own(
    tmp_path: Path,
) -> None:
    fresh = tmp_path / "fresh.db"
    open_store(f"sqlite:///{fresh}").dispose()
    older = tmp_path / "older.db"
    sqlite3.connect(older).execute("CREATE TABLE kept (x)").connection.close()
    open_store(f"sqlite:///{older}").dispose()

    def page_size(path: Path) -> int:
        return int(sqlite3.connect(path).execute("PRAGMA page_size").fetchone()[0])

    assert page_size(fresh) == SQLITE_PAGE_SIZE != 4096
    assert page_size(older) == 4096


def test_count_up_to_stops_at_its_limit(engine: Engine) -> None:
    with transaction(engine, commit=False) as bulk:
        bulk.executemany(
            bulk.sql("INSERT INTO cursor (source, stream, value, updated_at) VALUES (?, ?, ?, ?)"),
            [("s", f"stream{n}", "null", "2026-01-01T00:00:00.000Z") for n in range(5)],
        )
        assert bulk.count_up_to("cursor", 3) == 3
        assert bulk.count_up_to("cursor", 10) == 5
        assert bulk.count_up_to("profile", 10) == 0


def test_indexes_are_built_with_a_small_cache_and_the_cache_is_restored(
    tmp_path: Path,
) -> None:
    # The sort of an index build takes as much memory as the cache may: keep it small.
    engine = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    statements: list[str] = []

    def seen(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        if statement.startswith(("PRAGMA cache_size", "CREATE INDEX")):
            statements.append(statement.split(" ON ")[0])

    event.listen(engine, "before_cursor_execute", seen)
    with transaction(engine) as bulk, bulk.indexes_set_aside(TABLE, INDEXES):
        pass
    assert statements == [
        "PRAGMA cache_size",
        f"PRAGMA cache_size={SMALL_CACHE_KIB}",
        "CREATE INDEX ix_merge_log_record_a",
        "CREATE INDEX ix_merge_log_record_b",
        f"PRAGMA cache_size={CACHE_KIB}",
    ]
    engine.dispose()


def test_indexes_set_aside_come_back_when_the_transaction_fails(engine: Engine) -> None:
    # Set aside before anything else was written: a failure rolls the drop back too.
    before = _index_columns(engine)
    with (
        pytest.raises(RuntimeError),
        transaction(engine) as bulk,
        bulk.indexes_set_aside(TABLE, INDEXES),
    ):
        raise RuntimeError("the write-back failed")
    assert _index_columns(engine) == before


@pytest.mark.parametrize("value", ["12345", "null", "2024-01-01T00:00:00Z", 7, [1, "a"], None])
def test_a_stored_cursor_comes_back_as_it_was(engine: Engine, value: object) -> None:
    # PostgreSQL hands JSON values over decoded: a string is the value itself.
    with transaction(engine) as bulk:
        PageWriter(bulk, "r1").set_cursor("src", "stream", value)
    with transaction(engine) as bulk:
        assert load_cursor(bulk, "src", "stream") == value
