"""The emulator's HTTP surface: HubSpot CRM v3 objects, search, batch and list memberships.

Each endpoint runs behind one guard that does what HubSpot does before any handler: check the
Bearer token, count the request against the budget (429 when spent), apply an injected fault,
parse the JSON body. Every write is recorded in the write log with the status it got.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import struct
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from connectors.hubspot.emulator_data import (
    CrmData,
    CrmObject,
    ObjectSchema,
    UpsertOutcome,
    WriteLogEntry,
    iso_ms,
    require_schema,
)
from connectors.hubspot.emulator_errors import (
    ApiError,
    PropertyProblem,
    property_values_error,
    rate_limited_body,
    unauthorized,
    validation_error,
)
from connectors.hubspot.emulator_faults import (
    WRITE_ENDPOINTS,
    Fault,
    FaultInjector,
    FaultKind,
    RequestBudget,
)
from connectors.hubspot.emulator_search import parse_query, run_query

MAX_BATCH_INPUTS = 100
MAX_LIST_LIMIT = 100
MAX_MEMBERSHIP_PAGE = 250
MAX_MEMBERSHIP_CHANGE = 100_000
ABORT_KEY = "hubspot_emulator.abort"
LIST_OBJECT_TYPES = {"0-1": "contacts", "0-2": "companies"}


@dataclass
class EmulatorState:
    """Everything the endpoints share: the data, the faults, the budget, the valid tokens."""

    data: CrmData
    faults: FaultInjector
    budget: RequestBudget | None
    tokens: set[str] = field(default_factory=set)
    requests: list[tuple[str, int]] = field(default_factory=list)
    in_flight: int = 0


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

    crm = CrmHandlers(state)
    objects = "/crm/v3/objects/{object_type}"
    lists = "/crm/v3/lists/{list_id}/memberships"
    table: list[tuple[str, str, str, Handler]] = [
        ("GET", objects, "objects.list", crm.list_page),
        ("POST", f"{objects}/search", "objects.search", crm.search),
        ("POST", f"{objects}/batch/read", "objects.batch_read", crm.batch_read),
        ("POST", f"{objects}/batch/create", "objects.batch_create", crm.batch_create),
        ("POST", f"{objects}/batch/update", "objects.batch_update", crm.batch_update),
        ("POST", f"{objects}/batch/upsert", "objects.batch_upsert", crm.batch_upsert),
        ("POST", f"{objects}/batch/archive", "objects.batch_archive", crm.batch_archive),
        ("GET", f"{objects}/{{object_id}}", "objects.get", crm.get_one),
        ("DELETE", f"{objects}/{{object_id}}", "objects.archive", crm.archive_one),
        ("GET", lists, "lists.memberships", crm.memberships),
        ("PUT", f"{lists}/add", "lists.add", crm.members_add),
        ("PUT", f"{lists}/remove", "lists.remove", crm.members_remove),
        ("PUT", f"{lists}/add-and-remove", "lists.add_and_remove", crm.members_add_and_remove),
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
        fault = state.faults.draw(endpoint)
        if fault is not None:
            early = await _apply_fault(fault, request, headers)
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
    fault: Fault, request: Request, headers: Mapping[str, str]
) -> Response | None:
    """Answer with the fault, or None when the request goes on (slow or partial)."""
    if fault.kind is FaultKind.RATE_LIMIT:
        return JSONResponse(
            rate_limited_body("SECONDLY"),
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


@dataclass(frozen=True)
class _Body:
    """A parsed JSON body and the partial-failure fault to apply to it, if any."""

    json: Any
    partial: Fault | None


def _with_fault(body: Any, fault: Fault | None) -> _Body:
    return _Body(body, fault if fault is not None and fault.kind is FaultKind.PARTIAL else None)


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


def _inputs(body: Any) -> list[dict[str, Any]]:
    """The `inputs` of a batch body, checked for shape and HubSpot's 100-input limit."""
    inputs = body.get("inputs") if isinstance(body, dict) else None
    if not isinstance(inputs, list) or not all(isinstance(i, dict) for i in inputs):
        raise validation_error("Invalid input JSON: `inputs` must be a list of objects")
    if len(inputs) > MAX_BATCH_INPUTS:
        raise validation_error(
            f"Batch input size of {len(inputs)} exceeds the limit of {MAX_BATCH_INPUTS} inputs"
        )
    return inputs


def _properties(item: Mapping[str, Any]) -> dict[str, Any]:
    properties = item.get("properties", {})
    if not isinstance(properties, dict):
        raise validation_error("Invalid input JSON: `properties` must be an object")
    return properties


def _query_list(request: Request, name: str) -> list[str]:
    """A repeated or comma-separated query parameter, as HubSpot accepts both."""
    return [part for value in request.query_params.getlist(name) for part in value.split(",")]


def _query_int(request: Request, name: str, default: int, maximum: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isdigit():
        raise validation_error(f"{name} must be an integer, but was {raw!r}")
    value = int(raw)
    if value > maximum:
        raise validation_error(f"{name} must be at most {maximum}, but was {value}")
    return value


def _batch_response(
    started: str,
    results: Sequence[dict[str, Any]],
    errors: Sequence[dict[str, Any]],
    ok_status: int = 200,
) -> Response:
    body: dict[str, Any] = {
        "status": "COMPLETE",
        "results": list(results),
        "startedAt": started,
        "completedAt": started,
    }
    if errors:
        body["numErrors"] = len(errors)
        body["errors"] = list(errors)
        return JSONResponse(body, status_code=207)
    return JSONResponse(body, status_code=ok_status)


def _record_error(
    category: str, message: str, ids: Sequence[str], details: Sequence[dict[str, Any]] = ()
) -> dict[str, Any]:
    """One entry of a 207's `errors`, naming the inputs it concerns in `context.ids`."""
    return {
        "status": "error",
        "category": category,
        "message": message,
        "context": {"ids": list(ids)},
        "links": {},
        "errors": list(details),
    }


def _partial_error(fault: Fault, key: str) -> dict[str, Any]:
    """The 207 entry an injected partial failure produces for the input `key`."""
    if fault.error == "PROPERTY_DOESNT_EXIST":
        problem = PropertyProblem(
            "favorite_color", fault.error, 'Property "favorite_color" does not exist'
        )
    elif fault.error == "INVALID_EMAIL":
        problem = PropertyProblem("email", fault.error, f"Email address {key} is invalid")
    else:
        problem = PropertyProblem("email", fault.error, f"{fault.error} for {key}")
    message = property_values_error([problem]).message
    detail = {
        "message": problem.message,
        "code": problem.error,
        "context": {"propertyName": [problem.name]},
    }
    return _record_error("VALIDATION_ERROR", message, [key], [detail])


class CrmHandlers:
    """The endpoint bodies; each runs with the data lock held."""

    def __init__(self, state: EmulatorState) -> None:
        self.state = state

    @property
    def data(self) -> CrmData:
        # Looked up per request: `HubSpotEmulator.reset()` swaps in fresh data.
        return self.state.data

    @property
    def rng(self) -> random.Random:
        return self.state.faults.rng

    def _failing(self, fault: Fault | None, count: int) -> set[int]:
        """Which input positions an injected partial failure hits (at least one)."""
        if fault is None or count == 0:
            return set()
        chosen = {i for i in range(count) if self.rng.random() < fault.share}
        return chosen or {self.rng.randrange(count)}

    async def list_page(self, request: Request, _body: _Body) -> Response:
        schema = require_schema(request.path_params["object_type"])
        limit = _query_int(request, "limit", 10, MAX_LIST_LIMIT)
        after_raw = request.query_params.get("after")
        if after_raw is not None and not after_raw.isdigit():
            raise validation_error(f"after must be a record id offset, but was {after_raw!r}")
        after = int(after_raw or 0)
        archived = request.query_params.get("archived", "false").lower() == "true"
        table = self.data.objects[schema.name]
        rows = sorted(
            (
                obj
                for obj in table.values()
                if (obj.archived_ms is not None) == archived and int(obj.id) > after
            ),
            key=lambda obj: int(obj.id),
        )
        page = rows[:limit]
        properties = _query_list(request, "properties")
        body: dict[str, Any] = {"results": [obj.as_json(schema, properties) for obj in page]}
        if len(rows) > limit:
            token = page[-1].id
            body["paging"] = {"next": {"after": token, "link": f"{request.url.path}?after={token}"}}
        return JSONResponse(body)

    async def get_one(self, request: Request, _body: _Body) -> Response:
        schema = require_schema(request.path_params["object_type"])
        id_property = request.query_params.get("idProperty", "hs_object_id")
        obj = self.data.find(schema, id_property, request.path_params["object_id"])
        if obj is None:
            raise ApiError(404, "OBJECT_NOT_FOUND", "resource not found")
        return JSONResponse(obj.as_json(schema, _query_list(request, "properties")))

    async def archive_one(self, request: Request, _body: _Body) -> Response:
        schema = require_schema(request.path_params["object_type"])
        self.data.archive(schema.name, [request.path_params["object_id"]])
        return Response(status_code=204)

    async def search(self, request: Request, body: _Body) -> Response:
        schema = require_schema(request.path_params["object_type"])
        query = parse_query(schema, body.json if body.json is not None else {})
        total, page = run_query(schema, self.data.live(schema.name), query)
        out: dict[str, Any] = {
            "total": total,
            "results": [obj.as_json(schema, query.properties) for obj in page],
        }
        following = query.after + len(page)
        if page and following < total:
            out["paging"] = {"next": {"after": str(following)}}
        return JSONResponse(out)

    async def batch_read(self, request: Request, body: _Body) -> Response:
        schema = require_schema(request.path_params["object_type"])
        started = iso_ms(self.data.now_ms())
        inputs = _inputs(body.json)
        id_property = body.json.get("idProperty") or "hs_object_id"
        if id_property != "hs_object_id" and id_property not in schema.unique:
            raise validation_error(f"{id_property} is not a unique property")
        properties = body.json.get("properties") or []
        results, missing = [], []
        for item in inputs:
            key = str(item.get("id", ""))
            obj = self.data.find(schema, id_property, key)
            if obj is None:
                missing.append(key)
            else:
                results.append(obj.as_json(schema, properties))
        errors = []
        if missing:
            kind = schema.name[:-1].upper()
            errors.append(
                _record_error(
                    "OBJECT_NOT_FOUND",
                    f"Could not get some {kind} objects, they may be deleted or not exist."
                    " Check that ids are valid.",
                    missing,
                )
            )
        return _batch_response(started, results, errors)

    def _result(self, schema: ObjectSchema, outcome: UpsertOutcome, upsert: bool) -> dict[str, Any]:
        shown = (*outcome.written, "hs_object_id", "createdate", schema.modified_property)
        result = outcome.record.as_json(schema, shown)
        if upsert:
            result["new"] = outcome.new
        return result

    async def batch_upsert(self, request: Request, body: _Body) -> Response:
        schema = require_schema(request.path_params["object_type"])
        started = iso_ms(self.data.now_ms())
        inputs = _inputs(body.json)
        keys: list[str] = []
        for item in inputs:
            id_property, key = item.get("idProperty"), item.get("id")
            if not isinstance(key, str) or not key:
                raise validation_error("Each upsert input needs an `id`")
            if id_property not in schema.unique:
                raise validation_error(
                    f"{id_property!r} is not a unique property of {schema.name};"
                    " upsert needs a property with unique values"
                )
            keys.append(f"{id_property}:{key.strip().lower() if id_property == 'email' else key}")
        duplicates = sorted({k.partition(":")[2] for k in keys if keys.count(k) > 1})
        if duplicates:
            raise validation_error(f"Duplicate IDs found in batch input: {duplicates}")
        self.data.check_properties(
            schema, [{**_properties(i), str(i["idProperty"]): i["id"]} for i in inputs]
        )
        failing = self._failing(body.partial, len(inputs))
        results, errors = [], []
        for position, item in enumerate(inputs):
            if position in failing and body.partial is not None:
                errors.append(_partial_error(body.partial, item["id"]))
                continue
            outcome = self.data.upsert(schema, item["idProperty"], item["id"], _properties(item))
            results.append(self._result(schema, outcome, upsert=True))
        return _batch_response(started, results, errors)

    async def batch_create(self, request: Request, body: _Body) -> Response:
        schema = require_schema(request.path_params["object_type"])
        started = iso_ms(self.data.now_ms())
        inputs = _inputs(body.json)
        self.data.check_properties(schema, [_properties(i) for i in inputs])
        failing = self._failing(body.partial, len(inputs))
        results, errors = [], []
        for position, item in enumerate(inputs):
            if position in failing and body.partial is not None:
                errors.append(_partial_error(body.partial, str(position)))
                continue
            results.append(
                self._result(schema, self.data.create(schema, _properties(item)), upsert=False)
            )
        return _batch_response(started, results, errors, ok_status=201)

    async def batch_update(self, request: Request, body: _Body) -> Response:
        schema = require_schema(request.path_params["object_type"])
        started = iso_ms(self.data.now_ms())
        inputs = _inputs(body.json)
        self.data.check_properties(schema, [_properties(i) for i in inputs])
        failing = self._failing(body.partial, len(inputs))
        results, errors, missing = [], [], []
        for position, item in enumerate(inputs):
            key = str(item.get("id", ""))
            if position in failing and body.partial is not None:
                errors.append(_partial_error(body.partial, key))
                continue
            obj = self.data.find(schema, str(item.get("idProperty") or "hs_object_id"), key)
            if obj is None:
                missing.append(key)
                continue
            results.append(
                self._result(schema, self.data.update(schema, obj, _properties(item)), False)
            )
        if missing:
            errors.append(
                _record_error("OBJECT_NOT_FOUND", "Could not find some objects to update", missing)
            )
        return _batch_response(started, results, errors)

    async def batch_archive(self, request: Request, body: _Body) -> Response:
        schema = require_schema(request.path_params["object_type"])
        inputs = _inputs(body.json)
        self.data.archive(schema.name, [str(item.get("id", "")) for item in inputs])
        return Response(status_code=204)

    # -- lists ---------------------------------------------------------------------------

    def _writable_list(self, request: Request) -> Any:
        crm_list = self.data.lists.get(request.path_params["list_id"])
        if crm_list is None:
            raise ApiError(
                404, "OBJECT_NOT_FOUND", f"List {request.path_params['list_id']} does not exist."
            )
        if crm_list.processing_type not in {"MANUAL", "SNAPSHOT"}:
            raise validation_error(
                f"List {crm_list.list_id} is a {crm_list.processing_type} list; memberships can"
                " only be changed on MANUAL or SNAPSHOT lists"
            )
        return crm_list

    def _change(self, request: Request, add: Any, remove: Any) -> Response:
        crm_list = self._writable_list(request)
        for ids in (add, remove):
            if not isinstance(ids, list) or not all(isinstance(i, str | int) for i in ids):
                raise validation_error("Invalid input JSON: record ids must be a list of strings")
        if len(add) + len(remove) > MAX_MEMBERSHIP_CHANGE:
            raise validation_error(
                f"At most {MAX_MEMBERSHIP_CHANGE} record ids can change in one request"
            )
        table = self.data.objects[LIST_OBJECT_TYPES.get(crm_list.object_type, "contacts")]

        def exists(record_id: str) -> bool:
            obj: CrmObject | None = table.get(record_id)
            return obj is not None and obj.archived_ms is None

        stamp = self.data.now_ms()
        added, removed, missing = [], [], []
        for record_id in map(str, add):
            if not exists(record_id):
                missing.append(record_id)
            elif record_id not in crm_list.members:
                crm_list.members[record_id] = stamp
                added.append(record_id)
        for record_id in map(str, remove):
            if not exists(record_id):
                missing.append(record_id)
            elif crm_list.members.pop(record_id, None) is not None:
                removed.append(record_id)
        return JSONResponse(
            {"recordsIdsAdded": added, "recordIdsRemoved": removed, "recordIdsMissing": missing}
        )

    async def members_add(self, request: Request, body: _Body) -> Response:
        return self._change(request, body.json, [])

    async def members_remove(self, request: Request, body: _Body) -> Response:
        return self._change(request, [], body.json)

    async def members_add_and_remove(self, request: Request, body: _Body) -> Response:
        if not isinstance(body.json, dict):
            raise validation_error(
                "Invalid input JSON: expected {recordIdsToAdd, recordIdsToRemove}"
            )
        return self._change(
            request, body.json.get("recordIdsToAdd", []), body.json.get("recordIdsToRemove", [])
        )

    async def memberships(self, request: Request, _body: _Body) -> Response:
        crm_list = self.data.lists.get(request.path_params["list_id"])
        if crm_list is None:
            raise ApiError(
                404, "OBJECT_NOT_FOUND", f"List {request.path_params['list_id']} does not exist."
            )
        limit = _query_int(request, "limit", 100, MAX_MEMBERSHIP_PAGE)
        after = request.query_params.get("after")
        if after is not None and not after.isdigit():
            raise validation_error(f"after must be a record id, but was {after!r}")
        ordered = sorted(crm_list.members.items(), key=lambda item: int(item[0]))
        rows = [item for item in ordered if after is None or int(item[0]) > int(after)]
        page = rows[:limit]
        out: dict[str, Any] = {
            "results": [
                {"recordId": record_id, "membershipTimestamp": iso_ms(stamp)}
                for record_id, stamp in page
            ],
            "total": len(crm_list.members),
        }
        if len(rows) > limit:
            out["paging"] = {"next": {"after": page[-1][0]}}
        return JSONResponse(out)
