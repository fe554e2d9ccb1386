"""A store made by an earlier version upgrades at open, with every row kept."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import inspect

from syncd.errors import StoreError
from syncd.store.db import MIGRATIONS, open_engine, open_store, transaction
from syncd.store.marks import count_waiting, profiles_as_of
from syncd.store.tables import decode_ids

BEFORE_APPEND_ORDER = ("0002", "0003")


def _store_at(url: str, revisions: tuple[str, ...], down: bool = False) -> None:
    """Upgrade the store at `url` through `revisions` in turn (with `down`, downgrade)."""
    engine = open_engine(url)
    alembic = AlembicConfig()
    alembic.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        alembic.attributes["connection"] = connection
        for revision in revisions:
            (command.downgrade if down else command.upgrade)(alembic, revision)
    engine.dispose()


def test_an_sqlite_store_of_the_previous_schema_keeps_its_rows_and_gets_append_order_keys(
    tmp_path: Path,
) -> None:
    path = tmp_path / "store.db"
    _store_at(f"sqlite:///{path}", BEFORE_APPEND_ORDER)
    db = sqlite3.connect(path)
    assert "INTEGER" in _id_type(db, "source_record")
    db.execute(
        "INSERT INTO source_record (id, source, stream, external_id, node_kind, deleted, "
        "content_hash, payload, traits, needs_unify, last_run) "
        "VALUES (-5, 'crm', 'people', '1', 'record', 0, 'h', '{}', '{\"a\": 1}', 1, 'r')"
    )
    db.execute("INSERT INTO identifier (id, kind, value) VALUES (7, 'email', 'a@example.com')")
    db.execute("INSERT INTO record_identifier (record_id, identifier_id) VALUES (-5, 7)")
    db.commit()
    db.close()

    open_store(f"sqlite:///{path}").dispose()

    db = sqlite3.connect(path)
    for table in ("source_record", "identifier", "event"):
        assert _id_type(db, table) == "BIGINT"
    assert db.execute("SELECT id, traits FROM source_record").fetchall() == [(-5, '{"a": 1}')]
    assert db.execute("SELECT id, kind, value FROM identifier").fetchall() == [
        (7, "email", "a@example.com")
    ]
    indexes = {row[1] for row in db.execute("PRAGMA index_list('identifier')")}
    assert not indexes & {"ix_identifier_value", "ix_identifier_kind_id"}
    assert {row[1] for row in db.execute("PRAGMA index_list('source_record')")} >= {
        "ix_source_record_generation",
        "ix_source_record_stream",
    }
    assert db.execute("SELECT unify_generation FROM source_record").fetchall() == [(1,)]
    db.close()


def _id_type(db: sqlite3.Connection, table: str) -> str:
    columns = {row[1]: row[2] for row in db.execute(f"PRAGMA table_info('{table}')")}
    return str(columns["id"])


def test_edges_of_a_store_before_identifier_keyed_edges_are_kept_and_listed_on_records(
    store_url: str,
) -> None:
    _store_at(store_url, (*BEFORE_APPEND_ORDER, "0004"))
    engine = open_engine(store_url)
    with engine.begin() as connection:
        connection.exec_driver_sql(
            "INSERT INTO source_record (id, source, stream, external_id, node_kind, deleted, "
            "content_hash, payload, traits, needs_unify, last_run) VALUES "
            "(-5, 'crm', 'people', '1', 'record', false, 'h', '{}', '{}', true, 'r'), "
            "(6, 'crm', 'people', '2', 'record', false, 'h', '{}', '{}', true, 'r')"
        )
        connection.exec_driver_sql(
            "INSERT INTO record_identifier (record_id, identifier_id) VALUES (-5, 7), (-5, -9)"
        )
    engine.dispose()

    engine = open_store(store_url)
    with engine.begin() as connection:
        listed = dict(
            connection.exec_driver_sql("SELECT id, identifier_ids FROM source_record").all()
        )
        edges = connection.exec_driver_sql(
            "SELECT identifier_id, record_id FROM record_identifier"
        ).all()
    key = inspect(engine).get_pk_constraint("record_identifier")["constrained_columns"]
    indexes = inspect(engine).get_indexes("record_identifier")
    engine.dispose()
    assert sorted(decode_ids(listed[-5])) == [-9, 7] and listed[6] is None
    assert sorted(edges) == [(-9, -5), (7, -5)]
    assert key == ["identifier_id", "record_id"]
    assert indexes == []


def test_indexes_a_failed_write_back_left_out_are_built_again(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    _store_at(url, (*BEFORE_APPEND_ORDER, "0004", "0005"))
    engine = open_engine(url)
    with engine.begin() as connection:
        connection.exec_driver_sql("DROP INDEX ix_source_record_profile")
        connection.exec_driver_sql("DROP INDEX ix_merge_log_record_a")
    engine.dispose()

    _store_at(url, ("0006",))
    engine = open_engine(url)
    source_record = {index["name"] for index in inspect(engine).get_indexes("source_record")}
    merge_log = {index["name"] for index in inspect(engine).get_indexes("merge_log")}
    engine.dispose()
    assert {"ix_source_record_profile", "ix_source_record_unify"} <= source_record
    assert {"ix_merge_log_record_a", "ix_merge_log_record_b"} <= merge_log


def test_profiles_and_marks_of_a_store_move_beside_its_records(store_url: str) -> None:
    _store_at(store_url, (*BEFORE_APPEND_ORDER, "0004", "0005", "0006"))
    engine = open_engine(store_url)
    with engine.begin() as connection:
        connection.exec_driver_sql(
            "INSERT INTO source_record (id, source, stream, external_id, node_kind, deleted, "
            "content_hash, payload, traits, profile_id, needs_unify, last_run) VALUES "
            "(-5, 'crm', 'people', '1', 'record', false, 'h', '{}', '{}', 'p_1', false, 'r'), "
            "(6, 'crm', 'people', '2', 'record', false, 'h', '{}', '{}', 'p_1', true, 'r'), "
            "(7, 'crm', 'people', '3', 'record', false, 'h', '{}', '{}', NULL, true, 'r'), "
            "(8, 'crm', 'people', '4', 'record', true, 'h', '{}', '{}', NULL, false, 'r')"
        )
    engine.dispose()

    engine = open_store(store_url)
    with transaction(engine, commit=False) as bulk:
        profiles = bulk.connection.exec_driver_sql(
            "SELECT record_id, profile_id FROM record_profile ORDER BY record_id"
        ).all()
        generations = bulk.connection.exec_driver_sql(
            "SELECT id, unify_generation FROM source_record ORDER BY id"
        ).all()
        waiting = count_waiting(bulk)
    columns = {column["name"] for column in inspect(engine).get_columns("source_record")}
    engine.dispose()
    assert [tuple(row) for row in profiles] == [(-5, "p_1"), (6, "p_1")]
    assert [tuple(row) for row in generations] == [(-5, 0), (6, 1), (7, 1), (8, 0)]
    assert waiting == 2
    assert not columns & {"profile_id", "needs_unify"}


def test_a_store_goes_back_to_profiles_and_marks_on_its_records(store_url: str) -> None:
    engine = open_store(store_url)
    with transaction(engine) as bulk:
        bulk.connection.exec_driver_sql(
            "INSERT INTO source_record (id, source, stream, external_id, node_kind, deleted, "
            "content_hash, payload, traits, unify_generation, last_run) VALUES "
            "(-5, 'crm', 'people', '1', 'record', false, 'h', '{}', '{}', 3, 'r'), "
            "(6, 'crm', 'people', '2', 'record', false, 'h', '{}', '{}', 4, 'r')"
        )
        bulk.connection.exec_driver_sql(
            "INSERT INTO record_profile (record_id, profile_id) VALUES (-5, 'p_1')"
        )
        bulk.connection.exec_driver_sql("UPDATE unify_state SET resolved = 3")
    engine.dispose()

    _store_at(store_url, ("0006",), down=True)
    engine = open_engine(store_url)
    with engine.begin() as connection:
        rows = connection.exec_driver_sql(
            "SELECT id, profile_id, needs_unify FROM source_record ORDER BY id"
        ).all()
    engine.dispose()
    assert [(key, profile, bool(waits)) for key, profile, waits in rows] == [
        (-5, "p_1", False),
        (6, None, True),
    ]


def test_profiles_are_as_of_the_last_successful_run_after_the_upgrade_and_back(
    store_url: str,
) -> None:
    _store_at(store_url, (*BEFORE_APPEND_ORDER, "0004", "0005", "0006", "0007"))
    engine = open_engine(store_url)
    with engine.begin() as connection:
        connection.exec_driver_sql(
            "INSERT INTO sync_run (id, kind, started_at, status, counts) VALUES "
            "('a', 'full', '2026-01-01T00:00:00.000Z', 'ok', '{}'), "
            "('b', 'incremental', '2026-01-02T00:00:00.000Z', 'ok', '{}'), "
            "('c', 'incremental', '2026-01-03T00:00:00.000Z', 'failed', '{}')"
        )
    engine.dispose()

    engine = open_store(store_url)
    with transaction(engine, commit=False) as bulk:
        assert profiles_as_of(bulk) == "2026-01-02T00:00:00.000Z"
    engine.dispose()

    _store_at(store_url, ("0007",), down=True)
    engine = open_engine(store_url)
    columns = {column["name"] for column in inspect(engine).get_columns("unify_state")}
    engine.dispose()
    assert columns == {"id", "resolved"}


def test_ledger_entries_get_an_empty_match_value_after_the_upgrade_and_keep_the_rest_back(
    store_url: str,
) -> None:
    _store_at(store_url, BEFORE_APPEND_ORDER)
    engine = open_engine(store_url)
    with engine.begin() as connection:
        connection.exec_driver_sql(
            "INSERT INTO push_ledger (destination, target, profile_id, state_hash, attempts, "
            "last_outcome, updated_at, run_id) VALUES "
            "('crm', 'contacts', 'p_1', 'h', 0, 'ok', '2026-01-01T00:00:00.000Z', 'r')"
        )
    engine.dispose()

    engine = open_store(store_url)
    with engine.begin() as connection:
        upgraded = connection.exec_driver_sql(
            "SELECT profile_id, state_hash, match_value FROM push_ledger"
        ).all()
    engine.dispose()
    assert [tuple(row) for row in upgraded] == [("p_1", "h", None)]

    _store_at(store_url, ("0002",), down=True)
    engine = open_engine(store_url)
    with engine.begin() as connection:
        kept = connection.exec_driver_sql("SELECT profile_id, state_hash FROM push_ledger").all()
    columns = {column["name"] for column in inspect(engine).get_columns("push_ledger")}
    engine.dispose()
    assert [tuple(row) for row in kept] == [("p_1", "h")]
    assert "match_value" not in columns


def test_an_upgrade_that_fails_half_way_leaves_the_store_as_it_was(tmp_path: Path) -> None:
    # A view on a column the upgrade drops makes its last step fail, after its first
    # steps created tables: on SQLite those would commit at once without a transaction.
    url = f"sqlite:///{tmp_path / 'store.db'}"
    _store_at(url, (*BEFORE_APPEND_ORDER, "0004", "0005", "0006"))
    db = sqlite3.connect(tmp_path / "store.db")
    db.execute("CREATE VIEW resolved AS SELECT id, profile_id FROM source_record")
    db.commit()

    with pytest.raises(StoreError, match="left it as it was"):
        open_store(url)
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
    assert "record_profile" not in tables and "unify_state" not in tables
    assert _revisions(db) >= {"0006"} and "0007" not in _revisions(db)

    db.execute("DROP VIEW resolved")
    db.commit()
    db.close()
    open_store(url).dispose()  # upgrades this time
    db = sqlite3.connect(tmp_path / "store.db")
    assert "0006" not in _revisions(db) and max(_revisions(db)) > "0006"
    db.close()


def _revisions(db: sqlite3.Connection) -> set[str]:
    return {row[0] for row in db.execute("SELECT version_num FROM alembic_version")}
