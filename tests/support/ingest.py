"""An ingest server as a child process, and a load that kills it with SIGKILL mid-stream."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import httpx


@contextmanager
def child_server(
    command: Sequence[str], env: dict[str, str]
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """Run `command` (which prints `listening URL` once it accepts); yields it and its URL."""
    process = subprocess.Popen(
        list(command), stdout=subprocess.PIPE, text=True, env={**os.environ, **env}
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
    url: str, key: str, process: subprocess.Popen[str], acknowledged: set[str], kill_after: int
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
    async with httpx.AsyncClient(auth=(key, ""), limits=limits, timeout=10) as client:
        tasks = [asyncio.create_task(sender(w)) for w in range(32)]
        await asyncio.wait_for(enough.wait(), 30)
        process.send_signal(signal.SIGKILL)
        await asyncio.gather(*tasks)
