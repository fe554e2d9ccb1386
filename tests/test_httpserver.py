"""BackgroundServer: serves on a free port, answers, releases the port, reports a failed start;
ServedInBackground: what an emulator gets from holding one."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from syncd.httpserver import BackgroundServer, ServedInBackground


async def hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse("hello")


def app_with_startup(startup: float | Exception) -> Starlette:
    """An app whose lifespan startup sleeps `startup` seconds, or raises it."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if isinstance(startup, Exception):
            raise startup
        await asyncio.sleep(startup)
        yield

    return Starlette(routes=[Route("/", hello)], lifespan=lifespan)


APP = Starlette(routes=[Route("/", hello)])


def test_serves_on_a_free_port_and_releases_it_on_stop() -> None:
    server = BackgroundServer(APP, configure_logging=False)
    url = server.start()
    port = server.port
    assert port != 0
    assert url == server.url == f"http://127.0.0.1:{port}"
    assert server.start() == url  # already serving: nothing new
    assert httpx.get(url + "/").text == "hello"

    server.stop()
    assert not server.bound
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/")
    # Nothing listens there any more: the port can be listened on again at once.
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen()


def test_restarts_on_the_same_fixed_port_as_a_context_manager() -> None:
    with BackgroundServer(APP, configure_logging=False) as first:
        assert httpx.get(first.url).text == "hello"
        port = first.port
    with BackgroundServer(APP, port=port, configure_logging=False) as again:
        assert again.url == f"http://127.0.0.1:{port}"
        assert httpx.get(again.url).text == "hello"


def test_bind_reports_the_url_before_serving() -> None:
    server = BackgroundServer(APP, configure_logging=False)
    with pytest.raises(RuntimeError, match="not started"):
        _ = server.url
    url = server.bind()
    try:
        assert server.bound
        assert server.start() == url
        assert httpx.get(url).text == "hello"
    finally:
        server.stop()


def test_a_failed_startup_raises_and_releases_the_port() -> None:
    server = BackgroundServer(
        app_with_startup(ValueError("no store")),
        name="test server",
        lifespan="on",
        configure_logging=False,
    )
    with pytest.raises(RuntimeError, match="the test server did not start"):
        server.start()
    assert not server.bound


def test_a_slow_startup_raises_after_the_start_timeout() -> None:
    server = BackgroundServer(
        app_with_startup(0.5),
        name="test server",
        lifespan="on",
        configure_logging=False,
        start_timeout=0.05,
    )
    with pytest.raises(RuntimeError, match="the test server did not start"):
        server.start()
    assert not server.bound


class Greeter(ServedInBackground):
    def __init__(self) -> None:
        self._http = BackgroundServer(APP, name="greeter", configure_logging=False)


def test_served_in_background_names_itself_until_started_and_serves_as_a_context_manager() -> None:
    greeter = Greeter()
    with pytest.raises(RuntimeError, match="the greeter is not started; call start"):
        _ = greeter.url
    with greeter as started:
        assert started is greeter
        assert httpx.get(greeter.url).text == "hello"
        url = greeter.url
    with pytest.raises(RuntimeError, match="not started"):
        _ = greeter.url
    with pytest.raises(httpx.ConnectError):
        httpx.get(url)
