"""The store-backed sink: acknowledged events survive kill -9, duplicates and bad requests don't.

Runs on SQLite and PostgreSQL (the `store_url` fixture). The durability test serves the
endpoint with `syncd.daemon.serve_ingest` in a child process, loads it from 32 connections and
kills it with SIGKILL mid-stream: every messageId that got a 200 must be in the spool.
"""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import subprocess
import sys
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine

from syncd.ingest.app import create_app
from syncd.ingest.server import running
from syncd.ingest.spec import parse_message
from syncd.ingest.store_sink import StoreEventSink
from syncd.store.db import transaction
from tests.support.ingest import child_server, load_until_killed

KEY = "wk_store_sink"
SERVE = """
import sys
from pathlib import Path
from syncd import log
from syncd.config import load_config
from syncd.daemon import serve_ingest
from syncd.store.db import open_store
log.configure("warning")
config = load_config(Path(sys.argv[1]))
engine = open_store(config.store_url)
serve_ingest(config, engine, port=0, ready=lambda url: print("listening", url, flush=True))
engine.dispose()
"""


def write_config(folder: Path) -> Path:
    (folder / "mappings").mkdir()
    (folder / "mappings" / "track.toml").write_text(
        'source = "web"\nstream = "track"\ntype = "events"\nevent_id = "messageId"\n'
        'event_name = "event"\ntimestamp = "timestamp | datetime"\n'
        '[identifiers]\nuser_id = { from = "userId", kind = "user_id" }\n',
        encoding="utf-8",
    )
    path = folder / "syncd.toml"
    path.write_text(
        '[store]\nurl = { env = "SYNCD_STORE_URL" }\n[logging]\nfile = "var/syncd.log"\n'
        '[sources.web]\ntype = "ingest"\n'
        '[sources.web.options]\nwrite_keys = [{ env = "SYNCD_WEB_WRITE_KEY" }]\n',
        encoding="utf-8",
    )
    return path


def served(
    config: Path, store_url: str
) -> AbstractContextManager[tuple[subprocess.Popen[str], str]]:
    """`serve_ingest` on the profile store, as a child process."""
    env = {"SYNCD_STORE_URL": store_url, "SYNCD_WEB_WRITE_KEY": KEY}
    return child_server([sys.executable, "-c", SERVE, str(config)], env)


def spooled(engine: Engine) -> list[str]:
    with transaction(engine) as bulk:
        return [
            str(row[0])
            for row in bulk.connection.exec_driver_sql(
                "SELECT message_id FROM ingest_spool ORDER BY id"
            )
        ]


def test_every_acknowledged_event_survives_kill_9(
    tmp_path: Path, store_url: str, engine: Engine
) -> None:
    config = write_config(tmp_path)
    acknowledged: set[str] = set()
    with served(config, store_url) as (process, url):
        asyncio.run(load_until_killed(url, KEY, process, acknowledged, kill_after=1500))
        assert process.wait(10) == -signal.SIGKILL
    assert len(acknowledged) >= 1500

    # Restarted, it goes on accepting; SIGTERM stops it cleanly.
    with served(config, store_url) as (process, url):
        answer = httpx.post(
            f"{url}/v1/track",
            json={"userId": "u", "event": "After", "messageId": "after-restart"},
            auth=(KEY, ""),
        )
        assert answer.status_code == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
    stored = spooled(engine)
    assert acknowledged - set(stored) == set()
    assert len(stored) == len(set(stored))
    assert stored[-1] == "after-restart"


def test_a_message_sent_twice_is_stored_once(engine: Engine) -> None:
    sink = StoreEventSink(engine)
    now = datetime.now(UTC)
    first = parse_message(
        {"userId": "u", "event": "A", "messageId": "m-1"}, kind="track", received_at=now
    )
    again = parse_message(
        {"userId": "u", "event": "Changed", "messageId": "m-1"}, kind="track", received_at=now
    )
    other = parse_message({"anonymousId": "a", "messageId": "m-2"}, kind="page", received_at=now)
    sink.write([first, other])
    sink.write([again, first])
    with transaction(engine) as bulk:
        rows = bulk.connection.exec_driver_sql(
            "SELECT message_id, type, message FROM ingest_spool ORDER BY id"
        ).all()
    assert [(r[0], r[1]) for r in rows] == [("m-1", "track"), ("m-2", "page")]
    assert '"event":"A"' in rows[0][2], "the first copy is kept"


def test_a_message_with_no_utf8_form_fails_before_the_store_sees_it(engine: Engine) -> None:
    # parse_message refuses such text; should a message get past it, nothing of the commit
    # may be stored in a form the pull cannot read.
    now = datetime.now(UTC)
    good = parse_message({"userId": "u", "messageId": "m-1"}, kind="identify", received_at=now)
    bad = dataclasses.replace(good, message_id="m-2", payload={**good.payload, "e": "\ud800"})
    with pytest.raises(UnicodeEncodeError):
        StoreEventSink(engine).write([good, bad])
    assert spooled(engine) == []


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        (
            "/v1/batch",
            b'{"batch": [{"type": "track", "userId": "u", "event": "ok"}, {"type": "track"}]}',
            400,
        ),
        ("/v1/track", b'{"userId": "u", "event": "E"', 400),
        ("/v1/identify", b'{"traits": {"email": "a@b.c"}}', 400),
        ("/v1/alias", b'{"previousId": "a", "anonymousId": "b"}', 400),
        ("/v1/track", b'{"userId": "u", "event": "' + b"x" * 40_000 + b'"}', 413),
    ],
    ids=[
        "one bad message in a batch",
        "broken JSON",
        "no user",
        "alias without userId",
        "too large",
    ],
)
def test_a_malformed_request_stores_nothing(
    engine: Engine, path: str, body: bytes, status: int
) -> None:
    with running(create_app(StoreEventSink(engine), [KEY])) as url:
        answer = httpx.post(f"{url}{path}", content=body, auth=(KEY, ""))
        refused = httpx.post(
            f"{url}/v1/track", json={"userId": "u", "event": "E"}, auth=("wrong", "")
        )
    assert answer.status_code == status
    assert answer.json()["success"] is False
    assert refused.status_code == 401
    assert spooled(engine) == []
