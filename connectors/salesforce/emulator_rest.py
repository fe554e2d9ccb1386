"""The emulator's REST resources: SOQL queries, sObject describe / deleted / updated, and
sObject Collections upserts."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from connectors.salesforce import soql
from connectors.salesforce.emulator_state import EmulatorState
from connectors.salesforce.emulator_wire import NOT_FOUND, find_sobject, rest_datetime, sf_error
from connectors.salesforce.org import OBJECTS

MAX_COLLECTION = 200
DEFAULT_BATCH = 2000
REPLICATION_WINDOW = timedelta(days=30)
"""How far back getDeleted / getUpdated reach."""


@dataclass
class QueryCursor:
    """The rest of a REST query's results, served page by page through nextRecordsUrl."""

    records: list[dict[str, Any]]
    page_size: int


def plan_query(text: str) -> tuple[soql.Plan, str]:
    """Parse and check a query against the org's objects; SoqlError as Salesforce refuses."""
    query = soql.parse(text)
    sobject = find_sobject(query.sobject)
    if sobject is None:
        raise soql.SoqlError(
            "INVALID_TYPE",
            f"\n{text}\n^\nERROR at Row:1:Column:1\nsObject type '{query.sobject}' is not "
            "supported. If you are attempting to use a custom object, be sure to append the "
            "'__c' after the entity name.",
        )
    return soql.plan(query, sobject, OBJECTS[sobject].field_types()), sobject


class RestApi:
    """Queries, object metadata and collection writes."""

    def __init__(self, state: EmulatorState) -> None:
        self.state = state
        self._cursors: dict[str, QueryCursor] = {}

    # -- queries ------------------------------------------------------------------------
    def _rest_record(
        self, version: str, sobject: str, fields: Sequence[str], row: Mapping[str, Any]
    ) -> dict[str, Any]:
        record: dict[str, Any] = {
            "attributes": {
                "type": sobject,
                "url": f"/services/data/{version}/sobjects/{sobject}/{row['Id']}",
            }
        }
        for name in fields:
            value = row.get(name)
            record[name] = rest_datetime(value) if isinstance(value, datetime) else value
        return record

    def _page(self, version: str, locator: str, offset: int) -> dict[str, Any]:
        cursor = self._cursors[locator]
        records, size = cursor.records, cursor.page_size
        page = records[offset : offset + size]
        done = offset + size >= len(records)
        body: dict[str, Any] = {"totalSize": len(records), "done": done, "records": page}
        if done:
            self._cursors.pop(locator, None)
        else:
            body["nextRecordsUrl"] = f"/services/data/{version}/query/{locator}-{offset + size}"
        return body

    async def query(self, request: Request, include_deleted: bool = False) -> Response:
        """GET /query?q=: the first page of a SOQL query."""
        text = request.query_params.get("q")
        if not text:
            return sf_error(400, "MALFORMED_QUERY", "A query string has to be specified")
        try:
            plan, sobject = plan_query(text)
        except soql.SoqlError as error:
            return sf_error(400, error.code, error.message)
        rows = plan.run(self.state.org.rows(sobject, include_deleted))
        if plan.query.is_count:
            return JSONResponse({"totalSize": len(rows), "done": True, "records": []})
        version = request.path_params["version"]
        size = DEFAULT_BATCH
        options = request.headers.get("sforce-query-options", "")
        if match := re.search(r"batchSize=(\d+)", options):
            size = min(max(int(match.group(1)), 200), DEFAULT_BATCH)
        locator = f"01g5g{self.state.next_serial():010d}"
        self._cursors[locator] = QueryCursor(
            [self._rest_record(version, sobject, plan.fields, row) for row in rows], size
        )
        return JSONResponse(self._page(version, locator, 0))

    async def query_all(self, request: Request) -> Response:
        """GET /queryAll?q=: the same, deleted records included."""
        return await self.query(request, include_deleted=True)

    async def query_more(self, request: Request) -> Response:
        """GET /query/{locator}-{offset}: a following page (a nextRecordsUrl)."""
        locator, _, offset = request.path_params["locator"].partition("-")
        if locator not in self._cursors or not offset.isdigit():
            return sf_error(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        return JSONResponse(self._page(request.path_params["version"], locator, int(offset)))

    # -- sobjects -----------------------------------------------------------------------
    async def list_objects(self, request: Request) -> Response:
        """GET /sobjects: the objects of the org."""
        version = request.path_params["version"]
        return JSONResponse(
            {
                "encoding": "UTF-8",
                "maxBatchSize": MAX_COLLECTION,
                "sobjects": [
                    {
                        "name": spec.name,
                        "keyPrefix": spec.key_prefix,
                        "queryable": True,
                        "urls": {
                            "describe": f"/services/data/{version}/sobjects/{spec.name}/describe"
                        },
                    }
                    for spec in OBJECTS.values()
                ],
            }
        )

    async def describe(self, request: Request) -> Response:
        """GET /sobjects/{object}/describe: its fields."""
        sobject = find_sobject(request.path_params["sobject"])
        if sobject is None:
            return sf_error(404, "NOT_FOUND", NOT_FOUND)
        spec = OBJECTS[sobject]
        return JSONResponse(
            {
                "name": spec.name,
                "keyPrefix": spec.key_prefix,
                "queryable": True,
                "replicateable": True,
                "fields": [
                    {
                        "name": f.name,
                        "type": f.type,
                        "createable": f.updateable,
                        "updateable": f.updateable,
                        "nillable": not f.required and f.updateable,
                        "externalId": f.external_id,
                        "idLookup": f.external_id or f.name == "Id",
                        "length": f.length,
                    }
                    for f in spec.fields
                ],
            }
        )

    def _replicated(self, request: Request) -> tuple[str, datetime, datetime] | Response:
        """The object and the window of a replication call (`deleted`, `updated`), or the
        error Salesforce answers: an unknown object first, then a bad window."""
        sobject = find_sobject(request.path_params["sobject"])
        if sobject is None:
            return sf_error(404, "NOT_FOUND", NOT_FOUND)
        try:
            start = soql.parse_datetime(request.query_params["start"])
            end = soql.parse_datetime(request.query_params["end"])
        except (KeyError, ValueError):
            return sf_error(
                400, "MALFORMED_QUERY", "start and end must be dateTimes with a time zone"
            )
        if end < start:
            return sf_error(400, "INVALID_REPLICATION_DATE", "end date cannot be before start date")
        if start < self.state.org.now - REPLICATION_WINDOW:
            return sf_error(
                400, "INVALID_REPLICATION_DATE", "startDate cannot be more than 30 days ago"
            )
        return sobject, start, end

    async def get_deleted(self, request: Request) -> Response:
        """GET /sobjects/{object}/deleted?start=&end=: records deleted in the window."""
        replicated = self._replicated(request)
        if isinstance(replicated, Response):
            return replicated
        sobject, start, end = replicated
        rows = [
            row
            for row in self.state.org.rows(sobject, include_deleted=True)
            if row["IsDeleted"] and start <= row["SystemModstamp"] <= end
        ]
        return JSONResponse(
            {
                "deletedRecords": [
                    {"id": row["Id"], "deletedDate": rest_datetime(row["SystemModstamp"])}
                    for row in rows
                ],
                "earliestDateAvailable": rest_datetime(self.state.org.now - REPLICATION_WINDOW),
                "latestDateCovered": rest_datetime(min(self.state.org.now, end)),
            }
        )

    async def get_updated(self, request: Request) -> Response:
        """GET /sobjects/{object}/updated?start=&end=: ids of records changed in the window."""
        replicated = self._replicated(request)
        if isinstance(replicated, Response):
            return replicated
        sobject, start, end = replicated
        ids = [
            row["Id"]
            for row in self.state.org.rows(sobject, include_deleted=False)
            if start <= row["SystemModstamp"] <= end
        ]
        return JSONResponse(
            {"ids": ids, "latestDateCovered": rest_datetime(min(self.state.org.now, end))}
        )

    # -- sObject Collections ------------------------------------------------------------
    async def collection_upsert(self, request: Request) -> Response:
        """PATCH /composite/sobjects/{object}/{external id field}: up to 200 upserts."""
        sobject = find_sobject(request.path_params["sobject"])
        if sobject is None:
            return sf_error(404, "NOT_FOUND", NOT_FOUND)
        spec = OBJECTS[sobject]
        ext = spec.field(request.path_params["ext"])
        if ext is None or not ext.external_id:
            return sf_error(
                404,
                "NOT_FOUND",
                "Provided external ID field does not exist or is not accessible: "
                f"{request.path_params['ext']}",
            )
        try:
            body = json.loads(await request.body())
        except ValueError as error:
            return sf_error(400, "JSON_PARSER_ERROR", f"Unexpected character: {error}")
        if not isinstance(body, dict) or not isinstance(body.get("records"), list):
            return sf_error(400, "JSON_PARSER_ERROR", "Expected a JSON object with records")
        records: list[Any] = body["records"]
        if len(records) > MAX_COLLECTION:
            return sf_error(
                400,
                "EXCEEDED_ID_LIMIT",
                "record limit reached. cannot submit more than 200 records into this call",
            )
        clean: list[dict[str, Any]] = []
        for record in records:
            problem = self._collection_problem(sobject, record)
            if problem is not None:
                return problem
            clean.append({spec.canonical(k): v for k, v in record.items() if k != "attributes"})
        all_or_none = body.get("allOrNone", False) is True
        outcomes = self.state.upsert(
            sobject, ext.name, clean, "collections", request.scope, all_or_none
        )
        results: list[dict[str, Any]] = []
        for outcome in outcomes:
            if outcome.error is None:
                results.append(
                    {
                        "id": outcome.record_id,
                        "success": True,
                        "errors": [],
                        "created": outcome.created,
                    }
                )
            else:
                results.append({"success": False, "errors": [outcome.error.as_json()]})
        return JSONResponse(results)

    def _collection_problem(self, sobject: str, record: Any) -> Response | None:
        if not isinstance(record, dict):
            return sf_error(400, "JSON_PARSER_ERROR", "Each record must be a JSON object")
        attributes = record.get("attributes")
        if not isinstance(attributes, dict) or not attributes.get("type"):
            return sf_error(400, "INVALID_TYPE", "Must send a concrete entity type.")
        if str(attributes["type"]).lower() != sobject.lower():
            return sf_error(
                400,
                "INVALID_TYPE",
                f"The list can contain objects only of type {sobject}, not {attributes['type']}",
            )
        for name in record:
            if name != "attributes" and OBJECTS[sobject].field(name) is None:
                return sf_error(
                    400, "INVALID_FIELD", f"No such column '{name}' on sobject of type {sobject}"
                )
        return None
