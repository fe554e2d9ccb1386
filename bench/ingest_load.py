"""Ingest endpoint load benchmark: events/s and latency on loopback, then a kill -9 under load.

    .venv/bin/python bench/ingest_load.py [--runs 3] [--seconds 6] [--connections 16]
                                          [--batch 20] [--kill-seconds 3]

The server runs as its own process (`python -m syncd.ingest`, SQLite reference sink: WAL,
synchronous=FULL, so every answer 200 is fsync'd). The load generator holds `--connections`
kept-alive HTTP/1.1 connections on asyncio streams: httpx's async pool was measured as the
bottleneck (about 300 requests/s at 32 connections on 2 cores), a bare client is not. Two
workloads: one event per request (`/v1/track`) and `--batch` events per request
(`/v1/batch`). Each workload runs `--runs` times on a fresh database; the median run is
reported. Finally the server is killed with
SIGKILL in the middle of a batch load and the SQLite file is checked for every event that was
answered 200: acknowledged-but-lost must be 0.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

KEY = "bench-write-key"
AUTHORIZATION = "Basic " + base64.b64encode(f"{KEY}:".encode()).decode()


@dataclass
class Run:
    events: int
    seconds: float
    latencies: list[float]

    @property
    def rate(self) -> float:
        return self.events / self.seconds

    def percentile(self, share: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(share * len(ordered)))] * 1000


class Sink:
    """Where the server commits: the reference SQLite file, or a profile store's spool."""

    def __init__(self, kind: str, folder: Path) -> None:
        self.kind = kind
        self.folder = folder
        self.cluster = None
        if kind == "store-postgresql":
            # The throwaway cluster of the test suite: a bench is run from a checkout.
            sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
            from tests.support import postgres

            self.cluster = postgres.start()

    def close(self) -> None:
        if self.cluster is not None:
            self.cluster.stop()

    def target(self, name: str) -> list[str]:
        """The server arguments for a fresh database called `name`."""
        if self.kind == "reference":
            return ["--db", str(self.folder / f"{name}.sqlite")]
        if self.kind == "store-sqlite":
            return ["--store-url", f"sqlite:///{self.folder / f'{name}.db'}"]
        assert self.cluster is not None
        from sqlalchemy import create_engine, text

        admin = create_engine(self.cluster.url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        return ["--store-url", self.cluster.url_for(name)]

    def stored(self, arguments: list[str]) -> set[str]:
        """The message ids a server with these arguments committed."""
        if arguments[0] == "--db":
            with sqlite3.connect(arguments[1]) as connection:
                rows = connection.execute("SELECT message_id FROM ingest_event").fetchall()
            connection.close()
            return {row[0] for row in rows}
        from sqlalchemy import create_engine, text

        engine = create_engine(arguments[1])
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT message_id FROM ingest_spool")).fetchall()
        engine.dispose()
        return {row[0] for row in rows}


@contextmanager
def server(arguments: list[str]) -> Iterator[tuple[subprocess.Popen[str], str]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "syncd.ingest", *arguments, "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "SYNCD_INGEST_WRITE_KEY": KEY},
    )
    assert process.stdout is not None
    try:
        line = process.stdout.readline()
        if not line.startswith("listening "):
            raise RuntimeError(f"the ingest server did not start: {line!r}")
        yield process, line.split()[1]
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        process.wait(30)
        process.stdout.close()


def body(kind: str, worker: int, n: int, batch: int) -> tuple[str, object, list[str]]:
    """The path, the JSON payload and the message ids of request `n` of `worker`."""

    def message(i: int) -> dict[str, object]:
        return {
            "type": "track",
            "messageId": f"w{worker}-{n}-{i}",
            "userId": f"user-{worker}-{n % 500}",
            "event": "Product Viewed",
            "timestamp": "2024-05-01T10:00:00.000Z",
            "properties": {"sku": "SKU-ESP-01", "price": 349.0, "currency": "USD"},
            "context": {"library": {"name": "bench"}, "page": {"path": "/products"}},
        }

    if kind == "track":
        return "/v1/track", message(0), [f"w{worker}-{n}-0"]
    ids = [f"w{worker}-{n}-{i}" for i in range(batch)]
    return "/v1/batch", {"batch": [message(i) for i in range(batch)]}, ids


class Connection:
    """One kept-alive HTTP/1.1 connection that posts JSON and reads the answer."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, url: str) -> Connection:
        host, _, port = url.removeprefix("http://").partition(":")
        return cls(*await asyncio.open_connection(host, int(port)))

    async def post(self, path: str, payload: object) -> tuple[int, bytes]:
        data = json.dumps(payload).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: {AUTHORIZATION}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
        )
        self.writer.write(head.encode() + data)
        answer = await self.reader.readuntil(b"\r\n\r\n")
        lines = answer.decode().split("\r\n")
        length = next(
            int(line.split(":", 1)[1])
            for line in lines
            if line.lower().startswith("content-length")
        )
        return int(lines[0].split()[1]), await self.reader.readexactly(length)

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


async def load(
    url: str,
    kind: str,
    connections: int,
    batch: int,
    seconds: float,
    acknowledged: set[str] | None = None,
) -> Run:
    per_request = 1 if kind == "track" else batch
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker(index: int) -> None:
        connection = await Connection.open(url)
        n = 0
        try:
            while time.perf_counter() < deadline:
                path, payload, ids = body(kind, index, n, batch)
                n += 1
                started = time.perf_counter()
                status, answer = await connection.post(path, payload)
                if status != 200:
                    raise RuntimeError(f"{path}: HTTP {status} {answer[:200]!r}")
                latencies.append(time.perf_counter() - started)
                if acknowledged is not None:
                    acknowledged.update(ids)
        except (ConnectionError, asyncio.IncompleteReadError):
            if acknowledged is None:
                raise
            return  # the server was killed: what was answered 200 before counts
        await connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(connections)))
    return Run(len(latencies) * per_request, time.perf_counter() - started, latencies)


def measure(args: argparse.Namespace, kind: str, sink: Sink) -> list[Run]:
    runs = []
    for number in range(args.runs):
        with server(sink.target(f"{kind}_{number}")) as (_, url):
            runs.append(asyncio.run(load(url, kind, args.connections, args.batch, args.seconds)))
    return runs


def kill_under_load(args: argparse.Namespace, sink: Sink) -> tuple[int, int]:
    arguments = sink.target("kill")
    acknowledged: set[str] = set()
    with server(arguments) as (process, url):

        async def scenario() -> None:
            task = asyncio.create_task(
                load(url, "batch", args.connections, args.batch, 60, acknowledged)
            )
            await asyncio.sleep(args.kill_seconds)
            process.send_signal(signal.SIGKILL)
            await task

        asyncio.run(scenario())
    return len(acknowledged), len(acknowledged - sink.stored(arguments))


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--kill-seconds", type=float, default=3.0)
    parser.add_argument(
        "--sink",
        choices=("reference", "store-sqlite", "store-postgresql"),
        default="reference",
        help="the reference SQLite sink, or the profile store's spool on SQLite or PostgreSQL",
    )
    args = parser.parse_args()

    print("command:", " ".join([Path(sys.executable).name, *sys.argv]))
    print(f"machine: nproc={os.cpu_count()} cpu={cpu_model()!r}")
    print(f"python:  {platform.python_version()} on {platform.platform()}")
    print(f"server:  python -m syncd.ingest, sink {args.sink}; {args.connections} conns")
    print()
    with tempfile.TemporaryDirectory(prefix="ingest-bench-") as tmp:
        sink = Sink(args.sink, Path(tmp))
        for kind, label in (
            ("track", "1 event/request"),
            ("batch", f"{args.batch} events/request"),
        ):
            runs = measure(args, kind, sink)
            median = sorted(runs, key=lambda run: run.rate)[len(runs) // 2]
            rates = ", ".join(f"{run.rate:,.0f}" for run in runs)
            print(
                f"{label:>20}: {median.rate:>8,.0f} events/s (median of {rates}); "
                f"p50 {median.percentile(0.50):.1f} ms, p99 {median.percentile(0.99):.1f} ms, "
                f"{len(median.latencies) / median.seconds:,.0f} requests/s"
            )
        acknowledged, lost = kill_under_load(args, sink)
        print(f"{'kill -9 under load':>20}: {acknowledged:,} events acknowledged, {lost} lost")
        sink.close()
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
