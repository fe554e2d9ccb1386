"""Shared fixtures: a store on SQLite and on a real PostgreSQL server.

The `store_url` fixture runs a test once per backend. PostgreSQL comes from
SYNCD_TEST_PG_URL when set, else from a throwaway cluster started for the session. When
PostgreSQL is not installed the PostgreSQL half is skipped with that reason, except in CI
(CI=true), where a missing server fails the suite instead of hiding untested code.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text

from syncd.store.db import open_store
from tests.support import postgres

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """A URL of a PostgreSQL server database the session may create databases in."""
    given = os.environ.get("SYNCD_TEST_PG_URL")
    if given:
        yield given
        return
    try:
        cluster = postgres.start()
    except (RuntimeError, OSError) as error:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is required in CI: {error}")
        pytest.skip(f"PostgreSQL not available here: {error}")
    try:
        yield cluster.url
    finally:
        cluster.stop()


def _fresh_pg_database(server_url: str) -> str:
    name = f"syncd_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return server_url.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new, empty store URL on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    server = request.getfixturevalue("pg_server")
    return _fresh_pg_database(server)


@pytest.fixture
def engine(store_url: str) -> Iterator[Engine]:
    """A migrated store on each backend."""
    engine = open_store(store_url)
    try:
        yield engine
    finally:
        engine.dispose()
