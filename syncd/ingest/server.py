"""Serving the ingest app with uvicorn, in the foreground or in a background thread."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from starlette.types import ASGIApp

from syncd.httpserver import BackgroundServer


def _server(app: ASGIApp, host: str, port: int) -> BackgroundServer:
    # The app starts and stops its writer in its lifespan; no start timeout, as that may be slow.
    return BackgroundServer(
        app, host, port, name="ingest server", lifespan="on", start_timeout=None, stop_timeout=None
    )


def serve(
    app: ASGIApp,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    ready: Callable[[int], None] | None = None,
) -> None:
    """Serve `app` until SIGINT/SIGTERM; `ready` gets the bound port once it accepts."""
    server = _server(app, host, port)
    server.bind()
    if ready is not None:
        ready(server.port)
    server.run()


@contextmanager
def running(app: ASGIApp, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve `app` from a background thread; yields its base URL, stops it on exit."""
    with _server(app, host, port) as server:
        yield server.url
