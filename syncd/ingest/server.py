"""Serving the ingest app with uvicorn, in the foreground or in a background thread."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import uvicorn
from starlette.types import ASGIApp


def _listen(host: str, port: int) -> socket.socket:
    # Binding here (rather than in uvicorn) lets port 0 pick a free port and report it
    # before the first request can arrive.
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(address)
    sock.listen(2048)
    return sock


def _server(app: ASGIApp) -> uvicorn.Server:
    return uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))


def serve(
    app: ASGIApp,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    ready: Callable[[int], None] | None = None,
) -> None:
    """Serve `app` until SIGINT/SIGTERM; `ready` gets the bound port once it accepts."""
    with _listen(host, port) as sock:
        if ready is not None:
            ready(sock.getsockname()[1])
        _server(app).run(sockets=[sock])


@contextmanager
def running(app: ASGIApp, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve `app` from a background thread; yields its base URL, stops it on exit."""
    with _listen(host, port) as sock:
        server = _server(app)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="ingest-server", daemon=True
        )
        thread.start()
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the ingest server did not start")
            time.sleep(0.005)
        try:
            yield f"http://{host}:{sock.getsockname()[1]}"
        finally:
            server.should_exit = True
            thread.join()
