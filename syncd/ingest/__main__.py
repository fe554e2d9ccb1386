"""Run the ingest endpoint alone: `python -m syncd.ingest --db events.sqlite` (the reference
SQLite sink) or `--store-url URL` (the spool of a profile store, as `syncd serve` does).

The write key comes from an environment variable (SYNCD_INGEST_WRITE_KEY by default), never
from the command line. Prints `listening http://HOST:PORT` once it accepts requests.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from types import FrameType

from syncd.ingest.app import create_app
from syncd.ingest.server import serve
from syncd.ingest.sqlite_sink import SqliteEventSink
from syncd.ingest.store_sink import StoreEventSink
from syncd.store.db import open_store


def _exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments and serve until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m syncd.ingest", description=__doc__)
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--db", help="SQLite file to commit events to (reference sink)")
    target.add_argument("--store-url", help="profile store whose spool takes the events")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8787, help="0 picks a free port")
    parser.add_argument("--write-key-env", default="SYNCD_INGEST_WRITE_KEY")
    args = parser.parse_args(argv)
    write_key = os.environ.get(args.write_key_env, "")
    if not write_key:
        print(f"error: export {args.write_key_env} (the write key SDKs send)", file=sys.stderr)
        return 2
    sink: SqliteEventSink | StoreEventSink
    engine = None
    if args.db:
        sink = SqliteEventSink(args.db)
    else:
        engine = open_store(args.store_url)
        sink = StoreEventSink(engine)
    # uvicorn shuts down gracefully, then re-raises the signal: end with status 0 and a
    # closed database instead of dying by it.
    signal.signal(signal.SIGTERM, _exit)
    try:
        serve(
            create_app(sink, [write_key]),
            args.host,
            args.port,
            ready=lambda port: print(f"listening http://{args.host}:{port}", flush=True),
        )
    except KeyboardInterrupt:
        pass
    finally:
        if isinstance(sink, SqliteEventSink):
            sink.close()
        if engine is not None:
            engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
