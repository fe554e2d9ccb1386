"""Serving an ASGI app with uvicorn on a socket we bind ourselves, in a background thread.

    with BackgroundServer(app) as server:     # 127.0.0.1, a free port
        httpx.get(server.url + "/health")

Binding here rather than in uvicorn lets port 0 pick a free port and report it (`bind()`)
before the first request can arrive, and lets `start()` return only once uvicorn accepts
calls. The emulators, the ingest endpoint and their tests all serve this way; `run()` serves
the same way in the calling thread, for the commands that serve until interrupted.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from abc import ABC, abstractmethod
from types import TracebackType
from typing import Self

import uvicorn
from starlette.types import ASGIApp
from uvicorn.config import LOGGING_CONFIG, HTTPProtocolType, LifespanType

__all__ = ["BackgroundServer", "ServedInBackground"]


class _StartedWhileInside(ABC):
    """Use as a context manager: `start()` on entering, `stop()` on leaving."""

    @abstractmethod
    def start(self) -> object: ...

    @abstractmethod
    def stop(self) -> None: ...

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class BackgroundServer(_StartedWhileInside):
    """One uvicorn server for `app` on `host`:`port` (0: a free port); restartable.

    `start()` serves from a daemon thread and returns the base URL once it accepts calls;
    `stop()` ends it and releases the port; as a context manager it does both. The uvicorn
    settings the callers differ in are keywords: `lifespan`, `http` (the protocol
    implementation), `configure_logging` (False leaves the process's logging config alone)
    and `timeout_graceful_shutdown` (seconds; None waits for every open request).
    `start_timeout` and `stop_timeout` bound the waits for uvicorn (None: wait forever);
    `name` appears in errors and, hyphenated, names the thread.
    """

    def __init__(
        self,
        app: ASGIApp,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        name: str = "http server",
        lifespan: LifespanType = "off",
        http: HTTPProtocolType = "auto",
        configure_logging: bool = True,
        timeout_graceful_shutdown: int | None = None,
        start_timeout: float | None = 10.0,
        stop_timeout: float | None = 10.0,
    ) -> None:
        self.app = app
        self.host = host
        self.name = name
        self._port = port
        self._lifespan: LifespanType = lifespan
        self._http: HTTPProtocolType = http
        self._configure_logging = configure_logging
        self._timeout_graceful_shutdown = timeout_graceful_shutdown
        self._start_timeout = start_timeout
        self._stop_timeout = stop_timeout
        self._socket: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    # -- where ------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        """The bound port; the server must be bound (`bind()` or `start()`)."""
        if self._socket is None:
            raise RuntimeError(f"the {self.name} is not started")
        port: int = self._socket.getsockname()[1]
        return port

    @property
    def url(self) -> str:
        """The base URL, http://<host>:<port> with no trailing slash; the server must be bound."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def bound(self) -> bool:
        """Whether the listening socket is open (between `bind()`/`start()` and `stop()`)."""
        return self._socket is not None

    def bind(self) -> str:
        """Open the listening socket now, so the URL is known before serving; returns it.

        Connections made before `start()` wait in the backlog. Does nothing when bound.
        """
        self._listening()
        return self.url

    # -- serving ----------------------------------------------------------------------------
    def start(self) -> str:
        """Serve in a background thread; returns the base URL once uvicorn accepts calls.

        Raises RuntimeError (and releases the port) when uvicorn stops before it has started,
        as when the app's lifespan startup fails, or is not started within `start_timeout`.
        Does nothing but return the URL when already serving.
        """
        if self._server is not None:
            return self.url
        sock = self._listening()
        server = self._server = self._uvicorn()
        thread = self._thread = threading.Thread(
            target=_run_in_thread,
            args=(server, sock),
            name=self.name.lower().replace(" ", "-"),
            daemon=True,
        )
        thread.start()
        deadline = None if self._start_timeout is None else time.monotonic() + self._start_timeout
        while not server.started:
            if not thread.is_alive() or (deadline is not None and time.monotonic() > deadline):
                self.stop()
                raise RuntimeError(f"the {self.name} did not start")
            # A join rather than a sleep: a failed startup is noticed at once.
            thread.join(0.005)
        return self.url

    def stop(self) -> None:
        """Stop serving and release the port; does nothing when not started."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            # After a stop_timeout the thread is abandoned (it is a daemon): a wedged request
            # must not hang whoever is stopping the server.
            self._thread.join(self._stop_timeout)
        if self._socket is not None:
            self._socket.close()
        self._server = self._thread = self._socket = None

    def run(self) -> None:
        """Serve in the calling thread until SIGINT/SIGTERM, then release the port.

        From the main thread uvicorn re-raises the signal once it has shut down gracefully
        (a KeyboardInterrupt for Ctrl-C). `bind()` first to learn the URL beforehand.
        """
        sock = self._listening()
        try:
            self._uvicorn().run(sockets=[sock])
        finally:
            sock.close()
            self._socket = None

    def _listening(self) -> socket.socket:
        if self._socket is None:
            self._socket = _listen(self.host, self._port)
        return self._socket

    def _uvicorn(self) -> uvicorn.Server:
        # A fresh Server per run: uvicorn's keeps state (started, should_exit) from the last.
        config = uvicorn.Config(
            self.app,
            http=self._http,
            lifespan=self._lifespan,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=self._timeout_graceful_shutdown,
            # Building the Config applies it: uvicorn's default replaces the loggers' handlers.
            log_config=LOGGING_CONFIG if self._configure_logging else None,
        )
        return uvicorn.Server(config)


class ServedInBackground(_StartedWhileInside):
    """For what serves its app through a `BackgroundServer` kept in `_http` (the emulators):
    its URL, `start()` and `stop()`, and use as a context manager that does both."""

    _http: BackgroundServer

    @property
    def url(self) -> str:
        """The base URL, http://127.0.0.1:<port> with no trailing slash; it must be started."""
        if not self._http.bound:
            raise RuntimeError(f"the {self._http.name} is not started; call start() first")
        return self._http.url

    def start(self) -> Self:
        """Serve in a background thread; returns once it accepts calls."""
        self._http.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port."""
        self._http.stop()


def _run_in_thread(server: uvicorn.Server, sock: socket.socket) -> None:
    # uvicorn raises SystemExit when the app's startup fails; it has logged why, and start()
    # raises for it. Threads ignore a SystemExit anyway, but pytest's thread hook does not.
    with contextlib.suppress(SystemExit):
        server.run(sockets=[sock])


def _listen(host: str, port: int) -> socket.socket:
    # getaddrinfo resolves names and IPv6 literals alike, and gives proto=IPPROTO_TCP, which
    # asyncio needs before it sets TCP_NODELAY on the sockets it accepts.
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    try:
        # A fixed port can be taken again at once after a stop, despite TIME_WAIT connections.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Accepted sockets inherit it. Without it uvicorn's separate header and body writes
        # wait on the client's delayed ACK: 40 ms per answer instead of about one.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(address)
        # Listening now, not when uvicorn starts: a client told the port early is queued,
        # not refused.
        sock.listen(2048)
    except BaseException:
        sock.close()
        raise
    return sock
