"""The emulator's HTTP surface: HubSpot CRM v3 objects, search, batch and list memberships.

Each endpoint runs behind one guard that does what HubSpot does before any handler: check the
Bearer token, count the request against the budget and a search against the search limit (429
when spent), apply an injected fault, parse the JSON body. Every write is recorded in the write
log with the status it got.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from connectors.hubspot.emulator_data import WriteLogEntry
from connectors.hubspot.emulator_errors import (
    ApiError,
    rate_limited_body,
    unauthorized,
    validation_error,
)
from connectors.hubspot.emulator_faults import (
    SEARCH,
    WRITE_ENDPOINTS,
    Fault,
    FaultKind,
    policy_of,
)
from connectors.hubspot.emulator_lists import ListHandlers
from connectors.hubspot.emulator_objects import ObjectHandlers
from connectors.hubspot.emulator_state import Body, EmulatorState

ABORT_KEY = "hubspot_emulator.abort"


Handler = Callable[[Request, Any], Awaitable[Response]]


def build_app(state: EmulatorState) -> ASGIApp:
    """The ASGI application serving `state`."""

    def guarded(endpoint: str, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            # Counted until logged, so that a reset never sees half a request.
            state.in_flight += 1
            try:
                response = await _guard(state, endpoint, handler, request)
                state.requests.append((endpoint, response.status_code))
                if endpoint in WRITE_ENDPOINTS:
                    state.data.write_log.append(
                        _log_entry(request, await request.body(), response.status_code)
                    )
                return response
            finally:
                state.in_flight -= 1

        return run

    crm = ObjectHandlers(state)
    members = ListHandlers(state)
    objects = "/crm/v3/objects/{object_type}"
    lists = "/crm/v3/lists/{list_id}/memberships"
    table: list[tuple[str, str, str, Handler]] = [
        ("GET", objects, "objects.list", crm.list_page),
        ("POST", f"{objects}/search", SEARCH, crm.search),
        ("POST", f"{objects}/batch/read", "objects.batch_read", crm.batch_read),
        ("POST", f"{objects}/batch/create", "objects.batch_create", crm.batch_create),
        ("POST", f"{objects}/batch/update", "objects.batch_update", crm.batch_update),
        ("POST", f"{objects}/batch/upsert", "objects.batch_upsert", crm.batch_upsert),
        ("POST", f"{objects}/batch/archive", "objects.batch_archive", crm.batch_archive),
        ("GET", f"{objects}/{{object_id}}", "objects.get", crm.get_one),
        ("DELETE", f"{objects}/{{object_id}}", "objects.archive", crm.archive_one),
        ("GET", lists, "lists.memberships", members.memberships),
        ("PUT", f"{lists}/add", "lists.add", members.members_add),
        ("PUT", f"{lists}/remove", "lists.remove", members.members_remove),
        (
            "PUT",
            f"{lists}/add-and-remove",
            "lists.add_and_remove",
            members.members_add_and_remove,
        ),
    ]
    routes = [
        Route(path, guarded(name, handler), methods=[method])
        for method, path, name, handler in table
    ]
    return _ConnectionAborter(Starlette(routes=routes))


async def _guard(
    state: EmulatorState, endpoint: str, handler: Handler, request: Request
) -> Response:
    headers: dict[str, str] = {}
    # Read the body before any injected delay: a client that times out is gone afterwards.
    raw = await request.body()
    try:
        _authenticate(state, request)
        if state.budget is not None:
            decision = state.budget.take()
            headers = state.budget.headers(decision.remaining)
            if not decision.allowed:
                return _rate_limited(decision.retry_after, decision.policy, headers)
        if endpoint == SEARCH and state.search_limit is not None:
            decision = state.search_limit.take()
            if not decision.allowed:
                return _rate_limited(decision.retry_after, decision.policy, headers)
        fault = state.faults.draw(endpoint)
        if fault is not None:
            early = await _apply_fault(fault, endpoint, request, headers)
            if early is not None:
                return early
        body = _json_body(request.method, raw)
        with state.data.lock:
            response = await handler(request, _with_fault(body, fault))
    except ApiError as error:
        response = JSONResponse(error.body(), status_code=error.status, headers=error.headers)
    response.headers.update(headers)
    return response


def _authenticate(state: EmulatorState, request: Request) -> None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if not header:
        raise unauthorized(token_given=False)
    if scheme.lower() != "bearer" or token not in state.tokens:
        raise unauthorized(token_given=True)


def _rate_limited(retry_after: float, policy: str, headers: Mapping[str, str]) -> Response:
    wait = max(1, round(retry_after + 0.499))
    return JSONResponse(
        rate_limited_body(policy),
        status_code=429,
        headers={**headers, "Retry-After": str(wait)},
    )


async def _apply_fault(
    fault: Fault, endpoint: str, request: Request, headers: Mapping[str, str]
) -> Response | None:
    """Answer with the fault, or None when the request goes on (slow or partial)."""
    if fault.kind is FaultKind.RATE_LIMIT:
        return JSONResponse(
            rate_limited_body(policy_of(endpoint)),
            status_code=429,
            headers={**headers, "Retry-After": f"{fault.retry_after:g}"},
        )
    if fault.kind is FaultKind.SERVER_ERROR:
        error = ApiError(fault.status, "INTERNAL_ERROR", "internal error")
        return JSONResponse(error.body(), status_code=fault.status)
    if fault.kind is FaultKind.AUTH:
        raise unauthorized(token_given=True)
    if fault.kind is FaultKind.TIMEOUT:
        await asyncio.sleep(fault.delay)
        return None
    if fault.kind is FaultKind.RESET:
        abort = request.scope.get(ABORT_KEY)
        if abort is None:
            raise ApiError(500, "INTERNAL_ERROR", "connection reset requested")
        abort()
        return Response(status_code=500)
    return None


def _with_fault(body: Any, fault: Fault | None) -> Body:
    return Body(body, fault if fault is not None and fault.kind is FaultKind.PARTIAL else None)


def _json_body(method: str, raw: bytes) -> Any:
    if method in {"GET", "DELETE"} or not raw:
        return None
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        line = getattr(error, "lineno", 1)
        column = getattr(error, "colno", 1)
        raise validation_error(
            f"Invalid input JSON on line {line}, column {column}: {error}"
        ) from None


def _log_entry(request: Request, raw: bytes, status: int) -> WriteLogEntry:
    try:
        body: Any = json.loads(raw) if raw else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = raw.decode("utf-8", "replace")
    return WriteLogEntry(request.method, request.url.path, body, status)


class _ConnectionAborter:
    """Lets a handler reset its TCP connection (RST, no answer), as a flaky network does."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        transport = getattr(getattr(send, "__self__", None), "transport", None)
        if scope["type"] == "http" and transport is not None:

            def abort() -> None:
                sock = transport.get_extra_info("socket")
                if sock is not None:
                    # Linger 0 turns the close into an RST instead of an orderly FIN.
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                transport.abort()

            scope = {**scope, ABORT_KEY: abort}
        await self.app(scope, receive, send)
