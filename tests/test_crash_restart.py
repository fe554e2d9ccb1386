"""A run killed with SIGKILL at any point, then run again, ends in the state of one clean run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from syncd.demo.sample_files import write_sample_files
from syncd.inspect import export_profiles
from syncd.store.db import open_store, transaction

MAPPINGS = Path("mappings")


def make_project(folder: Path, store_url: str) -> Path:
    folder.mkdir(parents=True)
    shutil.copytree(MAPPINGS, folder / "mappings")
    config = Path("syncd.toml").read_text()
    config = config.replace('url = "sqlite:///var/syncd.db"', f'url = "{store_url}"')
    config = config.replace("settle_seconds = 2", "settle_seconds = 0\nbatch_size = 150")
    (folder / "syncd.toml").write_text(config)
    write_sample_files(folder / "data" / "inbox", people=1500, files=2)
    return folder / "syncd.toml"


def run_once(config: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "syncd", "run-once", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def snapshot(store_url: str) -> list[str]:
    engine = open_store(store_url)
    try:
        with transaction(engine) as bulk:
            return [json.dumps(p, sort_keys=True) for p in export_profiles(bulk)]
    finally:
        engine.dispose()


def kill_after(process: subprocess.Popen[bytes], log: Path, marker: str, count: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if log.exists() and log.read_text().count(marker) >= count:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
            return
        if process.poll() is not None:
            pytest.fail("the run ended before it could be killed")
        time.sleep(0.005)
    pytest.fail("the run never reached the kill point")


@pytest.mark.parametrize(
    ("marker", "count"),
    [("page stored", 2), ("page stored", 9), ('"event": "run started"', 1)],
    ids=["after-two-pages", "mid-orders", "at-start"],
)
def test_killed_run_then_rerun_equals_a_clean_run(tmp_path: Path, marker: str, count: int) -> None:
    killed = make_project(tmp_path / "killed", f"sqlite:///{tmp_path / 'killed.db'}")
    clean = make_project(tmp_path / "clean", f"sqlite:///{tmp_path / 'clean.db'}")

    kill_after(run_once(killed), killed.parent / "var" / "syncd.log", marker, count)
    assert run_once(killed).wait(timeout=120) == 0
    assert run_once(clean).wait(timeout=120) == 0

    after_kill = snapshot(f"sqlite:///{tmp_path / 'killed.db'}")
    assert after_kill
    assert after_kill == snapshot(f"sqlite:///{tmp_path / 'clean.db'}")
    # The killed run is not left "running" for ever: the run after it says what became of it.
    assert run_statuses(f"sqlite:///{tmp_path / 'killed.db'}") == ["interrupted", "ok"]


def run_statuses(store_url: str) -> list[str]:
    engine = open_store(store_url)
    try:
        with transaction(engine) as bulk:
            return [
                str(row[0])
                for row in bulk.connection.exec_driver_sql(
                    "SELECT status FROM sync_run ORDER BY started_at"
                )
            ]
    finally:
        engine.dispose()
