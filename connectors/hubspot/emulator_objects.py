"""The emulator's CRM object endpoints: list, get, archive, search and the batch writes."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from connectors.hubspot.emulator_data import (
    CrmData,
    ObjectSchema,
    UpsertOutcome,
    iso_ms,
    require_schema,
)
from connectors.hubspot.emulator_errors import (
    ApiError,
    PropertyProblem,
    property_values_error,
    validation_error,
)
from connectors.hubspot.emulator_faults import Fault
from connectors.hubspot.emulator_search import parse_query, run_query
from connectors.hubspot.emulator_state import Body, EmulatorState, query_int, query_list

MAX_BATCH_INPUTS = 100
MAX_LIST_LIMIT = 100


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


class ObjectHandlers:
    """The objects, search and batch endpoints; each runs with the data lock held."""

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

    async def list_page(self, request: Request, _body: Body) -> Response:
        schema = require_schema(request.path_params["object_type"])
        limit = query_int(request, "limit", 10, MAX_LIST_LIMIT)
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
        properties = query_list(request, "properties")
        body: dict[str, Any] = {"results": [obj.as_json(schema, properties) for obj in page]}
        if len(rows) > limit:
            token = page[-1].id
            body["paging"] = {"next": {"after": token, "link": f"{request.url.path}?after={token}"}}
        return JSONResponse(body)

    async def get_one(self, request: Request, _body: Body) -> Response:
        schema = require_schema(request.path_params["object_type"])
        id_property = request.query_params.get("idProperty", "hs_object_id")
        obj = self.data.find(schema, id_property, request.path_params["object_id"])
        if obj is None:
            raise ApiError(404, "OBJECT_NOT_FOUND", "resource not found")
        return JSONResponse(obj.as_json(schema, query_list(request, "properties")))

    async def archive_one(self, request: Request, _body: Body) -> Response:
        schema = require_schema(request.path_params["object_type"])
        self.data.archive(schema.name, [request.path_params["object_id"]])
        return Response(status_code=204)

    async def search(self, request: Request, body: Body) -> Response:
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

    async def batch_read(self, request: Request, body: Body) -> Response:
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

    async def batch_upsert(self, request: Request, body: Body) -> Response:
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

    async def batch_create(self, request: Request, body: Body) -> Response:
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

    async def batch_update(self, request: Request, body: Body) -> Response:
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

    async def batch_archive(self, request: Request, body: Body) -> Response:
        schema = require_schema(request.path_params["object_type"])
        inputs = _inputs(body.json)
        self.data.archive(schema.name, [str(item.get("id", "")) for item in inputs])
        return Response(status_code=204)
