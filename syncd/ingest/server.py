"""Serving the ingest app with uvicorn."""

from __future__ import annotations

import socket
from collections.abc import Callable

import uvicorn
from starlette.types import ASGIApp


def serve(
    app: ASGIApp,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    ready: Callable[[int], None] | None = None,
) -> None:
    """Serve `app` until SIGINT/SIGTERM; `ready` gets the bound port once it accepts.

    Binding the socket here (rather than in uvicorn) lets port 0 pick a free port and tell
    the caller which one before the first request can arrive.
    """
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(address)
    sock.listen(2048)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    if ready is not None:
        ready(sock.getsockname()[1])
    with sock:
        uvicorn.Server(config).run(sockets=[sock])
