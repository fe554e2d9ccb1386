"""The daemon: scheduled passes per source, the ingest endpoint beside them, clean stops."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine

from syncd import log
from syncd.config import load_config
from syncd.daemon import ingest_app, run_daemon, serve_ingest
from syncd.errors import ConfigError
from syncd.mapping.compiler import compile_mappings
from syncd.store.db import open_store, transaction

KEY = "wk_daemon"
RUN = """
import sys
from pathlib import Path
from syncd import log
from syncd.config import load_config
from syncd.daemon import run_daemon
from syncd.mapping.compiler import compile_mappings
from syncd.store.db import open_store
log.configure("warning")
config = load_config(Path(sys.argv[1]))
engine = open_store(config.store_url)
run_daemon(config, compile_mappings(config), engine,
           ready=lambda url: print("ready", url, flush=True))
engine.dispose()
print("stopped", flush=True)
"""
TRACK = (
    'source = "web"\nstream = "track"\ntype = "events"\nevent_id = "messageId"\n'
    'event_name = "event"\ntimestamp = "timestamp | datetime"\n'
    '[identifiers]\nuser_id = { from = "userId", kind = "user_id" }\n'
)


def write_config(folder: Path, schedule: str = "{ every_seconds = 1 }", port: int = 0) -> Path:
    (folder / "mappings").mkdir(exist_ok=True)
    (folder / "mappings" / "track.toml").write_text(TRACK, encoding="utf-8")
    path = folder / "syncd.toml"
    path.write_text(
        '[store]\nurl = { env = "SYNCD_STORE_URL" }\n[logging]\nfile = "var/syncd.log"\n'
        f'[sources.web]\ntype = "ingest"\nschedule = {schedule}\n'
        f'[sources.web.options]\nwrite_keys = [{{ env = "SYNCD_WEB_WRITE_KEY" }}]\nport = {port}\nstreams = ["track"]\n',
        encoding="utf-8",
    )
    return path


@pytest.fixture
def env(store_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("SYNCD_STORE_URL", store_url)
    monkeypatch.setenv("SYNCD_WEB_WRITE_KEY", KEY)
    return store_url


def stored_events(engine: Engine) -> list[str]:
    with transaction(engine) as bulk:
        return [
            str(row[0])
            for row in bulk.connection.exec_driver_sql("SELECT event_id FROM event ORDER BY 1")
        ]


def wait_for(condition: object, seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_the_daemon_stores_posted_events_on_schedule_and_stops_on_sigterm(
    tmp_path: Path, env: str
) -> None:
    config = write_config(tmp_path)
    process = subprocess.Popen(
        [sys.executable, "-c", RUN, str(config)], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    engine = open_store(env)
    try:
        line = process.stdout.readline()
        assert line.startswith("ready http://"), line
        url = line.split()[1]
        for n in range(3):
            answer = httpx.post(
                f"{url}/v1/track",
                json={"userId": f"u{n}", "event": "Signed Up", "messageId": f"m{n}"},
                auth=(KEY, ""),
            )
            assert answer.status_code == 200
        # A later scheduled pass (every second) reads the spool and stores the events.
        wait_for(lambda: stored_events(engine) == ["m0", "m1", "m2"])
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0
        assert process.stdout.read().strip() == "stopped"
        with transaction(engine) as bulk:
            statuses = {
                str(row[0])
                for row in bulk.connection.exec_driver_sql("SELECT status FROM sync_run")
            }
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        process.stdout.close()
        engine.dispose()
    assert statuses == {"ok"}, "a pass was cut short by the stop"


def test_run_daemon_runs_a_pass_at_start_and_returns_when_stopped(tmp_path: Path, env: str) -> None:
    config = load_config(write_config(tmp_path, schedule="{ every_seconds = 3600 }"))
    engine = open_store(config.store_url)
    stop = threading.Event()
    urls: list[str] = []
    worker = threading.Thread(
        target=run_daemon,
        args=(config, compile_mappings(config), engine),
        kwargs={"ready": urls.append, "stop": stop},
    )
    worker.start()
    try:

        def passes() -> int:
            with transaction(engine) as bulk:
                count = bulk.connection.exec_driver_sql(
                    "SELECT count(*) FROM sync_run WHERE finished_at IS NOT NULL"
                ).scalar()
            return int(count or 0)

        wait_for(lambda: passes() == 1)
        assert urls and urls[0].startswith("http://127.0.0.1:")
        assert httpx.get(f"{urls[0]}/health").json() == {"status": "ok"}
        stop.set()
        worker.join(15)
        assert not worker.is_alive()
        assert passes() == 1, "an hourly source ran more than once"
    finally:
        stop.set()
        worker.join(15)
        engine.dispose()


def test_serve_ingest_serves_the_endpoint_alone(tmp_path: Path, env: str) -> None:
    config = load_config(write_config(tmp_path))
    engine = open_store(config.store_url)
    stop = threading.Event()
    urls: list[str] = []
    worker = threading.Thread(
        target=serve_ingest,
        args=(config, engine),
        kwargs={"port": 0, "ready": urls.append, "stop": stop},
    )
    worker.start()
    try:
        wait_for(lambda: bool(urls))
        answer = httpx.post(
            f"{urls[0]}/v1/page", json={"anonymousId": "a", "messageId": "p1"}, auth=(KEY, "")
        )
        assert answer.status_code == 200
    finally:
        stop.set()
        worker.join(15)
    with transaction(engine) as bulk:
        spooled = bulk.connection.exec_driver_sql("SELECT message_id FROM ingest_spool").all()
    engine.dispose()
    assert [row[0] for row in spooled] == ["p1"]
    assert stored_events_never_written(config.store_url)


def stored_events_never_written(url: str) -> bool:
    engine = open_store(url)
    try:
        return stored_events(engine) == []
    finally:
        engine.dispose()


def test_a_bad_crontab_fails_before_anything_runs(tmp_path: Path, env: str) -> None:
    config = load_config(write_config(tmp_path, schedule='{ cron = "every day" }'))
    engine = open_store(config.store_url)
    try:
        with pytest.raises(ConfigError, match=r"sources\.web\.schedule\.cron"):
            run_daemon(config, compile_mappings(config), engine, stop=threading.Event())
    finally:
        engine.dispose()


def test_the_endpoint_needs_its_write_keys(
    tmp_path: Path, env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = load_config(write_config(tmp_path))
    engine = open_store(config.store_url)
    monkeypatch.delenv("SYNCD_WEB_WRITE_KEY")
    try:
        with pytest.raises(ConfigError, match="SYNCD_WEB_WRITE_KEY"):
            ingest_app(config, engine)
        (tmp_path / "mappings" / "track.toml").unlink()
        (tmp_path / "syncd.toml").write_text('[store]\nurl = "sqlite:///var/s.db"\n')
        with pytest.raises(ConfigError, match="ingest"):
            ingest_app(load_config(tmp_path / "syncd.toml"), engine)
    finally:
        engine.dispose()


def test_a_cron_source_waits_for_its_time(tmp_path: Path, env: str) -> None:
    path = write_config(tmp_path, schedule='{ cron = "0 3 * * *" }')
    config = load_config(path)
    engine = open_store(config.store_url)
    stop = threading.Event()
    stop.set()
    try:
        # A nightly cron source does not run at start: the stopped daemon ran no pass.
        run_daemon(config, compile_mappings(config), engine, stop=stop)
        with transaction(engine) as bulk:
            runs = bulk.connection.exec_driver_sql("SELECT count(*) FROM sync_run").scalar()
    finally:
        engine.dispose()
    assert runs == 0


def failed_runs(engine: Engine) -> list[tuple[str, str]]:
    with transaction(engine) as bulk:
        return [
            (str(row[0]), str(row[1]))
            for row in bulk.connection.exec_driver_sql(
                "SELECT id, error FROM sync_run WHERE status = 'failed'"
            )
        ]


def test_a_pass_whose_mapping_broke_is_recorded_failed_and_every_line_has_a_run_id(
    tmp_path: Path, env: str
) -> None:
    config = load_config(write_config(tmp_path, schedule="{ every_seconds = 3600 }"))
    mappings = compile_mappings(config)
    # Edited after start: the first pass compiles the mappings again and fails.
    (tmp_path / "mappings" / "track.toml").write_text("stream = ", encoding="utf-8")
    log_file = tmp_path / "daemon.log"
    log.configure("info", log_file, quiet_terminal=True)
    engine = open_store(config.store_url)
    stop = threading.Event()
    worker = threading.Thread(
        target=run_daemon, args=(config, mappings, engine), kwargs={"stop": stop}
    )
    worker.start()
    try:
        wait_for(lambda: bool(failed_runs(engine)))
        stop.set()
        worker.join(15)
        [(run_id, error)] = failed_runs(engine)
    finally:
        stop.set()
        worker.join(15)
        engine.dispose()
        log.configure("warning")
    assert error.startswith("web: ") and "track.toml" in error, error
    lines = [json.loads(line) for line in log_file.read_text(encoding="utf-8").splitlines()]
    assert all(line.get("run_id") for line in lines), lines
    by_event = {line["event"]: line["run_id"] for line in lines}
    assert by_event["scheduled pass failed"] == run_id
    assert by_event["daemon started"] == by_event["daemon stopped"] != run_id
