"""The emulator's HTTP surface: login, REST v59.0 and Bulk 2.0, with Salesforce's error shapes.

`EmulatorApp` is an ASGI application. Its outer layer consults the fault plan and the request
budget for each call and adds the `Sforce-Limit-Info` header; the routes below it (emulator_login,
emulator_rest, emulator_bulk) answer as Salesforce does, including its refusals (bad session,
unknown field, oversized collection, malformed JSON or SOQL), so a connector that works here
does not lean on leniency.
"""

from __future__ import annotations

import asyncio
import re
import socket
import struct

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from connectors.salesforce.emulator_bulk import BulkApi
from connectors.salesforce.emulator_login import LoginApi
from connectors.salesforce.emulator_rest import RestApi
from connectors.salesforce.emulator_state import PARTIAL_FLAG, EmulatorState
from connectors.salesforce.emulator_wire import NOT_FOUND, Handler, sf_error
from connectors.salesforce.faults import Endpoint, FaultKind, RequestBudget, endpoint_of

_VERSION = re.compile(r"^v(\d{2})\.0$")


class EmulatorApp:
    """The ASGI application over one EmulatorState."""

    def __init__(
        self, state: EmulatorState, budget: RequestBudget | None = None, daily_limit: int = 15000
    ) -> None:
        self.state = state
        self.budget = budget
        self.daily_limit = daily_limit
        self.login = LoginApi(state)
        self.rest = RestApi(state)
        self.bulk = BulkApi(state)
        self._router = Starlette(routes=self._routes())

    # -- the outer layer: faults, budget, limit header ----------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._router(scope, receive, send)
            return
        endpoint = endpoint_of(scope["path"])
        fault = self.state.faults.take(endpoint) if endpoint else None
        if fault is FaultKind.RESET:
            await _reset_connection(send)
            return
        refusal = self._refusal(endpoint, fault)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        if fault is FaultKind.EXPIRED_SESSION:
            self.state.sessions.clear()
        if fault is FaultKind.PARTIAL:
            scope[PARTIAL_FLAG] = True
        usage = f"api-usage={self.state.calls}/{self.daily_limit}".encode()

        async def with_usage(message: Message) -> None:
            if message["type"] == "http.response.start" and endpoint is not Endpoint.LOGIN:
                message = {
                    **message,
                    "headers": [*message["headers"], (b"sforce-limit-info", usage)],
                }
            await send(message)

        if fault is not FaultKind.SLOW:
            await self._router(scope, receive, with_usage)
            return
        # The work is done at once but the answer comes too late, as when a response is lost.
        held: list[Message] = []

        async def hold(message: Message) -> None:
            held.append(message)

        await self._router(scope, receive, hold)
        await asyncio.sleep(self.state.faults.slow_seconds)
        for message in held:
            await with_usage(message)

    def _refusal(self, endpoint: Endpoint | None, fault: FaultKind | None) -> Response | None:
        if fault is FaultKind.REQUEST_LIMIT:
            return sf_error(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")
        if fault is FaultKind.SERVER_ERROR:
            return sf_error(
                503, "SERVER_UNAVAILABLE", "Server is temporarily unavailable. Try again later."
            )
        if endpoint is None or endpoint is Endpoint.LOGIN:
            return None
        self.state.calls += 1
        if self.budget is not None:
            allowed, _ = self.budget.spend()
            if not allowed:
                return sf_error(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")
        return None

    # -- routing ------------------------------------------------------------------------
    def _routes(self) -> list[Route]:
        data = "/services/data/{version}"
        table: list[tuple[str, Handler, list[str], bool]] = [
            ("/services/Soap/u/{version}", self.login.soap_login, ["POST"], False),
            ("/services/oauth2/token", self.login.oauth_token, ["POST"], False),
            (f"{data}/query", self.rest.query, ["GET"], True),
            (f"{data}/queryAll", self.rest.query_all, ["GET"], True),
            (f"{data}/query/{{locator}}", self.rest.query_more, ["GET"], True),
            (f"{data}/queryAll/{{locator}}", self.rest.query_more, ["GET"], True),
            (f"{data}/sobjects", self.rest.list_objects, ["GET"], True),
            (f"{data}/sobjects/{{sobject}}/describe", self.rest.describe, ["GET"], True),
            (f"{data}/sobjects/{{sobject}}/deleted", self.rest.get_deleted, ["GET"], True),
            (f"{data}/sobjects/{{sobject}}/updated", self.rest.get_updated, ["GET"], True),
            (
                f"{data}/composite/sobjects/{{sobject}}/{{ext}}",
                self.rest.collection_upsert,
                ["PATCH"],
                True,
            ),
            (f"{data}/jobs/query", self.bulk.create_query_job, ["POST"], True),
            (f"{data}/jobs/query/{{job}}", self.bulk.get_job, ["GET"], True),
            (f"{data}/jobs/query/{{job}}/results", self.bulk.query_results, ["GET"], True),
            (f"{data}/jobs/ingest", self.bulk.create_ingest_job, ["POST"], True),
            (f"{data}/jobs/ingest/{{job}}", self.bulk.get_job, ["GET"], True),
            (f"{data}/jobs/ingest/{{job}}", self.bulk.set_job_state, ["PATCH"], True),
            (f"{data}/jobs/ingest/{{job}}/batches", self.bulk.upload_batch, ["PUT"], True),
            (f"{data}/jobs/ingest/{{job}}/{{results}}", self.bulk.ingest_results, ["GET"], True),
        ]
        routes = []
        for path, handler, methods, guarded in table:
            endpoint = self._guard(handler) if guarded else handler
            # Salesforce answers with and without the trailing slash; no redirects.
            routes.append(Route(path, endpoint, methods=methods))
            routes.append(Route(path + "/", endpoint, methods=methods))
        return routes

    def _guard(self, handler: Handler) -> Handler:
        async def guarded(request: Request) -> Response:
            match = _VERSION.match(request.path_params["version"])
            if match is None or not 20 <= int(match.group(1)) <= 62:
                return sf_error(404, "NOT_FOUND", NOT_FOUND)
            token = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
            if token not in self.state.sessions:
                return sf_error(401, "INVALID_SESSION_ID", "Session expired or invalid")
            return await handler(request)

        return guarded


async def _reset_connection(send: Send) -> None:
    """Reset the TCP connection (RST, not FIN), reaching the transport through uvicorn's send."""
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is None:
        raise RuntimeError("connection resets need uvicorn's h11 protocol")
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
    # Let uvicorn see the connection lost, so it does not report a request left unanswered.
    await asyncio.sleep(0)
