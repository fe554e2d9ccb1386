"""Kill -9 the ingest server under load: every acknowledged event must be in the file."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

KEY = "wk_durability"


@contextmanager
def ingest_server(
    db: Path, target: tuple[str, str] | None = None
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """`python -m syncd.ingest` as a child process on a free port (the reference sink on `db`,
    or `target` = ("--store-url", URL) for a profile store's spool)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "syncd.ingest", *(target or ("--db", str(db))), "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "SYNCD_INGEST_WRITE_KEY": KEY},
    )
    assert process.stdout is not None
    try:
        line = process.stdout.readline()
        assert line.startswith("listening "), line
        yield process, line.split()[1]
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)
        process.stdout.close()


async def load_until_killed(
    url: str, process: subprocess.Popen[str], acknowledged: set[str], kill_after: int
) -> None:
    """Send batches from 32 connections, kill -9 the server mid-stream; record every 200."""

    async def sender(worker: int) -> None:
        n = 0
        while True:
            ids = [f"w{worker}-{n}-{i}" for i in range(5)]
            n += 1
            batch = [{"type": "track", "userId": "u", "event": "E", "messageId": m} for m in ids]
            try:
                answer = await client.post(f"{url}/v1/batch", json={"batch": batch})
            except httpx.TransportError:
                return
            if answer.status_code == 200:
                acknowledged.update(ids)
                if len(acknowledged) >= kill_after:
                    enough.set()

    enough = asyncio.Event()
    limits = httpx.Limits(max_connections=32)
    async with httpx.AsyncClient(auth=(KEY, ""), limits=limits, timeout=10) as client:
        tasks = [asyncio.create_task(sender(w)) for w in range(32)]
        await asyncio.wait_for(enough.wait(), 30)
        process.send_signal(signal.SIGKILL)
        await asyncio.gather(*tasks)


def stored_ids(db: Path) -> set[str]:
    with sqlite3.connect(db) as connection:
        rows = connection.execute("SELECT message_id FROM ingest_event").fetchall()
    connection.close()
    return {row[0] for row in rows}


def test_every_acknowledged_event_survives_kill_9(tmp_path: Path) -> None:
    db = tmp_path / "events.sqlite"
    acknowledged: set[str] = set()
    with ingest_server(db) as (process, url):
        asyncio.run(load_until_killed(url, process, acknowledged, kill_after=1500))
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
