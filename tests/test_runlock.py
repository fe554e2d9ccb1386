"""One run at a time per store: a second run waits for the first to end, on both backends."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine
from structlog.testing import capture_logs

from syncd.store import runlock
from syncd.store.runlock import run_lock
from tests.conftest import _fresh_pg_database
from tests.support.project import Project, records_page

ANN = {"id": "1", "email": "ann@example.com", "name": "ann", "score": "1"}


def test_a_run_waits_while_another_holds_the_store(tmp_path: Path, store_url: str) -> None:
    project = Project(tmp_path, store_url)
    finished: list[dict[str, int]] = []

    def second_run() -> None:
        finished.append(project.run({"people": [records_page([ANN])]}).counts)

    with run_lock(project.engine, lambda: None):  # the first run, as another process would
        worker = threading.Thread(target=second_run)
        worker.start()
        worker.join(timeout=3)
        assert worker.is_alive() and not finished  # it waits: nothing was pulled

    worker.join(timeout=60)
    assert not worker.is_alive()
    assert finished[0]["new"] == 1
    project.close()


def test_the_lock_is_free_again_after_a_run_and_after_a_failed_one(
    tmp_path: Path, store_url: str
) -> None:
    project = Project(tmp_path, store_url)
    project.run({"people": [records_page([ANN])]})
    try:
        with run_lock(project.engine, lambda: None):
            raise RuntimeError("the run broke")
    except RuntimeError:
        pass
    waits: list[bool] = []
    with run_lock(project.engine, lambda: waits.append(True)):
        pass
    assert waits == []
    project.close()


def test_a_postgresql_run_lock_outlives_the_servers_idle_session_limit(
    pg_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A server (or proxy) ends sessions idle for a second; the run lasts three.
    url = _fresh_pg_database(pg_server)
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    engine, other = create_engine(url), create_engine(url)
    try:
        with admin.connect() as connection:
            database = connection.exec_driver_sql("SELECT current_database()").scalar_one()
            connection.exec_driver_sql(
                f'ALTER DATABASE "{database}" SET idle_session_timeout = 1000'
            )
        monkeypatch.setattr(runlock, "KEEPALIVE_SECONDS", 0.2)
        with run_lock(engine, lambda: None):
            time.sleep(3)
            with other.connect() as connection:
                taken = connection.exec_driver_sql(
                    "SELECT pg_try_advisory_lock(%s)", (runlock.ADVISORY_KEY,)
                ).scalar_one()
        assert taken is False, "the lock went with its session while the run went on"
    finally:
        for each in (admin, engine, other):
            each.dispose()


def test_a_run_lock_whose_session_the_server_ended_is_said_and_the_run_ends_cleanly(
    pg_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = _fresh_pg_database(pg_server)
    engine, admin = create_engine(url), create_engine(url, isolation_level="AUTOCOMMIT")
    monkeypatch.setattr(runlock, "KEEPALIVE_SECONDS", 0.2)
    try:
        with capture_logs() as lines, run_lock(engine, lambda: None):
            with admin.connect() as connection:
                connection.exec_driver_sql(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            time.sleep(1)
    finally:
        engine.dispose()
        admin.dispose()
    said = [line["event"] for line in lines if line["log_level"] == "error"]
    assert len(said) == 1 and "ended the session holding the run lock" in said[0]
