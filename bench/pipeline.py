"""Benchmark: map + store + unify of N synthetic records from a drop folder, on SQLite.

    .venv/bin/python bench/pipeline.py --records 100000 --runs 3

For each run, on a fresh store, in a child process (`syncd run-once`):
- records/s for the whole pass (pull → map → store → unify → profiles),
- peak RSS of the largest process (the run or one of its mapping workers), and the peak of
  the run and its workers together (sampled from /proc every 0.2 s, on Linux),
- then a `run-once --full` over the unchanged files: its time and the rows it rewrote.
In this process, on the same machine and in the same run: the raw rate of SQLite
`executemany` upserting the very same source_record rows in one transaction, so the
pipeline's rate can be read as a ratio that does not drift with the machine's load.
Figures are medians over the runs. Results go to stdout as a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from syncd.demo.sample_files import write_sample_files  # noqa: E402
from syncd.store.db import open_store  # noqa: E402

RECORDS_PER_PERSON = 1.118  # customers (0.6 + 3% duplicates) and CRM export (0.5) rows

CONFIG = """
workers = {workers}
[store]
url = "sqlite:///{db}"
[logging]
file = "syncd.log"
level = "info"
[identity.kinds.loyalty_number]
normalize = "id"
priority = 5
limit = 1
[identity.kinds.name_dob]
normalize = "lower"
priority = 40
limit = 1
[sources.inbox]
type = "files"
[sources.inbox.options]
folder = "data/inbox"
settle_seconds = 0
batch_size = {batch}
[sources.inbox.options.streams]
customers = {{ pattern = "customers*.csv" }}
crm_export = {{ pattern = "crm_export*.csv" }}
"""


def prepare(workdir: Path, records: int, workers: int, batch: int) -> Path:
    inbox = workdir / "data" / "inbox"
    marker = workdir / f".generated-{records}"
    if not marker.exists():
        shutil.rmtree(workdir, ignore_errors=True)
        people = int(records / RECORDS_PER_PERSON)
        write_sample_files(inbox, people, seed=11, files=max(2, records // 100_000))
        for orders in inbox.glob("orders_*"):
            orders.unlink()
        marker.touch()
    mappings = workdir / "mappings"
    shutil.rmtree(mappings, ignore_errors=True)
    mappings.mkdir()
    for name in ("inbox_customers.toml", "inbox_crm_export.toml"):
        shutil.copy(ROOT / "mappings" / name, mappings / name)
    (mappings / "profile.toml").write_text(
        '[traits.lifetime_value]\nrule = "max"\n\n[computed.sources]\nop = "sources"\nover = "records"\n'
    )
    db = workdir / "store.db"
    config = workdir / "syncd.toml"
    config.write_text(CONFIG.format(db=db, workers=workers, batch=batch))
    return config


def _tree_rss_mb(root: int) -> float:
    """RSS of a process and all its descendants, from /proc (0 where /proc lacks them)."""
    total, pending = 0, [root]
    while pending:
        pid = pending.pop()
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            continue  # gone since its parent listed it
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
        pending.extend(int(child) for child in children)
    return total / 1024


class TreePeak(threading.Thread):
    """Samples the RSS of a process tree until stopped; `peak` is the largest sum seen."""

    def __init__(self, root: int) -> None:
        super().__init__(daemon=True)
        self.root = root
        self.peak = 0.0
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(0.2):
            self.peak = max(self.peak, _tree_rss_mb(self.root))


def run_once(
    config: Path, stages: list[dict[str, float]], *extra: str
) -> tuple[float, dict[str, int], float, float]:
    """(wall time, counts, peak RSS in MB of the run's largest process, and of the run and its
    workers together)."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "syncd", "run-once", "--config", str(config), *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    together = TreePeak(process.pid)
    together.start()
    # The usage of this child alone (and its workers): the peak of all children would keep
    # the largest of any earlier one.
    _, status, usage = os.wait4(process.pid, 0)
    together.stopped.set()
    together.join()
    process.returncode = os.waitstatus_to_exitcode(status)
    elapsed = time.perf_counter() - started
    if process.returncode:
        raise SystemExit(f"syncd run-once failed with exit code {process.returncode}")
    log = (config.parent / "syncd.log").read_text().splitlines()
    finished = [json.loads(line) for line in log if '"run finished"' in line][-1]
    stages.append(finished["seconds"])
    db = sqlite3.connect(config.parent / "store.db")
    counts = json.loads(
        db.execute("SELECT counts FROM sync_run ORDER BY started_at DESC LIMIT 1").fetchone()[0]
    )
    db.close()
    return elapsed, counts, usage.ru_maxrss / 1024, together.peak


def raw_upsert_rate_apart(source_db: Path, scratch: Path) -> float:
    """raw_upsert_rate in a process of its own: the rows it holds (1.4 GB for 1M records)
    would otherwise stay in this process, and a child started from it counts them in its
    peak RSS."""
    done = subprocess.run(
        [sys.executable, __file__, "--raw-upsert", str(source_db), str(scratch)],
        check=True,
        capture_output=True,
        text=True,
    )
    return float(done.stdout)


def raw_upsert_rate(source_db: Path, scratch: Path) -> float:
    """Rows/s of one executemany upsert of the same source_record rows into a fresh store."""
    rows = (
        sqlite3.connect(source_db)
        .execute(
            "SELECT id, source, stream, external_id, node_kind, updated_at, deleted, content_hash, "
            "payload, traits, notes, unify_generation, last_run, identifier_ids FROM source_record"
        )
        .fetchall()
    )
    scratch.unlink(missing_ok=True)
    open_store(f"sqlite:///{scratch}").dispose()
    db = sqlite3.connect(scratch, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    started = time.perf_counter()
    db.execute("BEGIN")
    db.executemany(
        "INSERT INTO source_record (id, source, stream, external_id, node_kind, updated_at, "
        "deleted, content_hash, payload, traits, notes, unify_generation, last_run, identifier_ids) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
        "content_hash = excluded.content_hash, payload = excluded.payload, traits = excluded.traits",
        rows,
    )
    db.execute("COMMIT")
    elapsed = time.perf_counter() - started
    db.close()
    return len(rows) / elapsed


def machine() -> str:
    cpu = "unknown cpu"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--workdir", type=Path, default=ROOT / "bench" / "out")
    parser.add_argument("--raw-upsert", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.raw_upsert:
        print(raw_upsert_rate(*args.raw_upsert))
        return
    workdir = args.workdir / f"pipeline-{args.records}"
    config = prepare(workdir, args.records, args.workers, args.batch)

    firsts, reruns, rates, raw_rates, peaks, rewritten = [], [], [], [], [], []
    combined: list[float] = []
    stages: list[dict[str, float]] = []
    rerun_stages: list[dict[str, float]] = []
    rerun_peaks: list[float] = []
    for _ in range(args.runs):
        (workdir / "store.db").unlink(missing_ok=True)
        for suffix in ("-wal", "-shm"):
            Path(f"{workdir / 'store.db'}{suffix}").unlink(missing_ok=True)
        elapsed, counts, peak, all_processes = run_once(config, stages)
        peaks.append(peak)
        combined.append(all_processes)
        loaded = counts.get("new", 0)
        firsts.append(elapsed)
        rates.append(loaded / elapsed)
        again, again_counts, again_peak, _ = run_once(config, rerun_stages, "--full")
        reruns.append(again)
        rerun_peaks.append(again_peak)
        rewritten.append(again_counts.get("new", 0) + again_counts.get("changed", 0))
        raw_rates.append(raw_upsert_rate_apart(workdir / "store.db", workdir / "raw.db"))

    rate = statistics.median(rates)
    raw = statistics.median(raw_rates)
    print(
        f"command: .venv/bin/python bench/pipeline.py --records {args.records} --runs {args.runs}"
    )
    print(f"machine: {machine()}")
    print(f"records loaded: {loaded}")
    print()
    print("| figure | median | runs |")
    print("|---|---|---|")
    print(
        f"| map+store+unify wall time | {statistics.median(firsts):.1f} s | {', '.join(f'{x:.1f}' for x in firsts)} |"
    )
    print(f"| records/s | {rate:,.0f} | {', '.join(f'{x:,.0f}' for x in rates)} |")
    print(
        f"| raw executemany upsert, same rows | {raw:,.0f} rows/s | {', '.join(f'{x:,.0f}' for x in raw_rates)} |"
    )
    print(f"| pipeline / raw upsert | {rate / raw:.1%} | |")
    print(
        f"| peak RSS (largest process) | {max(peaks):.0f} MB | {', '.join(f'{x:.0f}' for x in peaks)} |"
    )
    print(f"| peak RSS per 1k records | {max(peaks) / (loaded / 1000):.2f} MB | |")
    print(
        f"| peak RSS, run and workers together (sampled) | {max(combined):.0f} MB | {', '.join(f'{x:.0f}' for x in combined)} |"
    )
    print(
        f"| no-change `--full` re-run | {statistics.median(reruns):.1f} s | {', '.join(f'{x:.1f}' for x in reruns)} |"
    )
    print(f"| rows rewritten by the re-run | {max(rewritten)} | |")
    print(
        f"| peak RSS of the re-run | {max(rerun_peaks):.0f} MB | {', '.join(f'{x:.0f}' for x in rerun_peaks)} |"
    )
    for name, runs in (("first run", stages), ("re-run", rerun_stages)):
        for stage in sorted(runs[0], key=["pull", "unify", "profiles", "push"].index):
            spent = [run[stage] for run in runs]
            print(
                f"| {name}: {stage} | {statistics.median(spent):.1f} s | {', '.join(f'{x:.1f}' for x in spent)} |"
            )


if __name__ == "__main__":
    main()
