"""Bulk statements of the store that the hot paths build on."""

from __future__ import annotations

from sqlalchemy import Engine, inspect

from syncd.store.db import transaction

INDEXES = ("ix_source_record_profile", "ix_source_record_unify")


def _index_columns(engine: Engine) -> dict[str, list[str | None]]:
    return {
        index["name"]: index["column_names"]
        for index in inspect(engine).get_indexes("source_record")
        if index["name"]
    }


def test_indexes_set_aside_are_built_again_as_they_were(engine: Engine) -> None:
    before = _index_columns(engine)
    with transaction(engine) as bulk, bulk.indexes_set_aside("source_record", INDEXES):
        present = {
            row[0]
            for row in bulk.connection.exec_driver_sql(
                "SELECT indexname FROM pg_indexes WHERE tablename = 'source_record'"
                if bulk.dialect == "postgresql"
                else "SELECT name FROM sqlite_master WHERE tbl_name = 'source_record'"
            )
        }
        # SQLite builds them again afterwards; PostgreSQL keeps them all along.
        assert bool(present & set(INDEXES)) == (bulk.dialect == "postgresql")
    assert _index_columns(engine) == before
    assert set(INDEXES) <= set(before)
