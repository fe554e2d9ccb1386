"""Kill -9 the ingest server under load: every acknowledged event must be in the file."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
from contextlib import AbstractContextManager
from pathlib import Path

import httpx

from tests.support.ingest import child_server, load_until_killed

KEY = "wk_durability"


def ingest_server(
    db: Path, target: tuple[str, str] | None = None
) -> AbstractContextManager[tuple[subprocess.Popen[str], str]]:
    """`python -m syncd.ingest` as a child process on a free port (the reference sink on `db`,
    or `target` = ("--store-url", URL) for a profile store's spool)."""
    command = [sys.executable, "-m", "syncd.ingest", *(target or ("--db", str(db))), "--port", "0"]
    return child_server(command, {"SYNCD_INGEST_WRITE_KEY": KEY})


def stored_ids(db: Path) -> set[str]:
    with sqlite3.connect(db) as connection:
        rows = connection.execute("SELECT message_id FROM ingest_event").fetchall()
    connection.close()
    return {row[0] for row in rows}


def test_every_acknowledged_event_survives_kill_9(tmp_path: Path) -> None:
    db = tmp_path / "events.sqlite"
    acknowledged: set[str] = set()
    with ingest_server(db) as (process, url):
        asyncio.run(load_until_killed(url, KEY, process, acknowledged, kill_after=1500))
        assert process.wait(10) == -signal.SIGKILL
    assert len(acknowledged) >= 1500

    # The restarted server recovers the file and goes on accepting events.
    with ingest_server(db) as (process, url):
        answer = httpx.post(
            f"{url}/v1/track",
            json={"userId": "u", "event": "After", "messageId": "after-restart"},
            auth=(KEY, ""),
        )
        assert answer.status_code == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
    stored = stored_ids(db)
    assert acknowledged - stored == set()
    assert "after-restart" in stored


def test_the_server_refuses_to_start_without_a_write_key(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SYNCD_INGEST_WRITE_KEY"}
    finished = subprocess.run(
        [sys.executable, "-m", "syncd.ingest", "--db", str(tmp_path / "e.sqlite")],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )
    assert finished.returncode == 2
    assert "SYNCD_INGEST_WRITE_KEY" in finished.stderr


def test_the_standalone_server_commits_to_a_profile_store_spool(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    with ingest_server(tmp_path / "unused", ("--store-url", url)) as (_, base):
        answer = httpx.post(
            f"{base}/v1/track",
            json={"userId": "u1", "event": "Signed Up", "messageId": "m-1"},
            auth=(KEY, ""),
        )
        assert answer.status_code == 200
    with sqlite3.connect(tmp_path / "store.db") as connection:
        rows = connection.execute("SELECT message_id, type FROM ingest_spool").fetchall()
    connection.close()
    assert rows == [("m-1", "track")]
