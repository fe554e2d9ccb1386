"""The emulator's HTTP surface: login, REST v59.0 and Bulk 2.0, with Salesforce's error shapes.

`EmulatorApp` is an ASGI application. Its outer layer consults the fault plan and the request
budget for each call and adds the `Sforce-Limit-Info` header; the routes below it answer as
Salesforce does, including its refusals (bad session, unknown field, oversized collection,
malformed JSON or SOQL), so a connector that works here does not lean on leniency.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import csv
import html
import io
import json
import re
import secrets
import socket
import struct
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from connectors.salesforce import soql
from connectors.salesforce.faults import Endpoint, FaultKind, FaultPlan, RequestBudget, endpoint_of
from connectors.salesforce.org import OBJECTS, Org, RecordError, UpsertOutcome

MAX_COLLECTION = 200
DEFAULT_BATCH = 2000
ORG_ID = "00D5g000000SyNcDAE"
REPLICATION_WINDOW = timedelta(days=30)
"""How far back getDeleted / getUpdated reach."""
_VERSION = re.compile(r"^v(\d{2})\.0$")

Handler = Callable[[Request], Awaitable[Response]]


def sf_error(status: int, code: str, message: str) -> JSONResponse:
    """An error the way the REST API sends it: a JSON list of {message, errorCode}."""
    return JSONResponse([{"message": message, "errorCode": code}], status_code=status)


def rest_datetime(value: datetime) -> str:
    """2024-01-02T03:04:05.000+0000, the REST API's dateTime format."""
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}+0000"


def bulk_datetime(value: datetime) -> str:
    """2024-01-02T03:04:05.000Z, the Bulk API's dateTime format."""
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


@dataclass(frozen=True)
class Credentials:
    """Who may log in: a user with password and security token, and one connected app."""

    username: str
    password: str
    security_token: str
    client_id: str
    client_secret: str


@dataclass
class QueryCursor:
    """The rest of a REST query's results, served page by page through nextRecordsUrl."""

    records: list[dict[str, Any]]
    page_size: int


@dataclass
class BulkJob:
    """One Bulk 2.0 job and what it produced."""

    id: str
    kind: str  # "query" or "ingest"
    body: dict[str, Any]
    state: str
    rows: list[Mapping[str, Any]] = field(default_factory=list)
    fields: tuple[str, ...] = ()
    csv_data: str = ""
    successful: list[dict[str, str]] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)
    polls: int = 0
    error_message: str | None = None

    def info(self, version: str) -> dict[str, Any]:
        data = {
            "id": self.id,
            "operation": self.body.get("operation"),
            "object": self.body.get("object"),
            "createdById": "0055g00000SyNcDAAV",
            "state": self.state,
            "concurrencyMode": "Parallel",
            "contentType": "CSV",
            "apiVersion": float(version.lstrip("v")),
            "lineEnding": self.body.get("lineEnding", "LF"),
            "columnDelimiter": self.body.get("columnDelimiter", "COMMA"),
        }
        if self.kind == "ingest":
            data |= {
                "externalIdFieldName": self.body.get("externalIdFieldName"),
                "numberRecordsProcessed": len(self.successful) + len(self.failed),
                "numberRecordsFailed": len(self.failed),
            }
        else:
            data["numberRecordsProcessed"] = len(self.rows) if self.state == "JobComplete" else 0
        if self.error_message:
            data["errorMessage"] = self.error_message
        return data


def _csv(header: Sequence[str], rows: Sequence[Sequence[str | None]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow(["" if value is None else value for value in row])
    # csv quotes empty strings too; Salesforce leaves nulls bare.
    return out.getvalue().replace(',""', ",").replace('\n"",', "\n,")


def _bulk_value(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return bulk_datetime(value)
    return str(value)


def _soap_fault(code: str, message: str) -> Response:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope '
        'xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
        'xmlns:sf="urn:fault.partner.soap.sforce.com" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><soapenv:Fault>'
        f"<faultcode>sf:{code}</faultcode><faultstring>{code}: {html.escape(message)}"
        '</faultstring><detail><sf:LoginFault xsi:type="sf:LoginFault">'
        f"<sf:exceptionCode>{code}</sf:exceptionCode>"
        f"<sf:exceptionMessage>{html.escape(message)}</sf:exceptionMessage>"
        "</sf:LoginFault></detail></soapenv:Fault></soapenv:Body></soapenv:Envelope>"
    )
    return Response(body, status_code=500, media_type="text/xml")


def _soap_element(body: str, name: str) -> str | None:
    # A regex rather than an XML parser: the emulator must not parse untrusted XML with
    # the standard library, and the login envelope has one flat element of each name.
    match = re.search(rf"<(?:\w+:)?{name}>(.*?)</(?:\w+:)?{name}>", body, re.DOTALL)
    return html.unescape(match.group(1)) if match else None


class EmulatorApp:
    """The ASGI application; `base_url` is set by the server once its port is known."""

    def __init__(
        self,
        org: Org,
        faults: FaultPlan,
        credentials: Credentials,
        budget: RequestBudget | None = None,
        daily_limit: int = 15000,
    ) -> None:
        self.org = org
        self.faults = faults
        self.credentials = credentials
        self.budget = budget
        self.daily_limit = daily_limit
        self.base_url = "http://127.0.0.1"
        self.sessions: set[str] = set()
        self.refused_logins = 0
        self.calls = 0
        self._cursors: dict[str, QueryCursor] = {}
        self.jobs: dict[str, BulkJob] = {}
        self._serial = 0
        self._router = Starlette(routes=self._routes())

    # -- the outer layer: faults, budget, limit header ----------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._router(scope, receive, send)
            return
        endpoint = endpoint_of(scope["path"])
        fault = self.faults.take(endpoint) if endpoint else None
        if fault is FaultKind.RESET:
            await _reset_connection(send)
            return
        refusal = self._refusal(endpoint, fault)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        if fault is FaultKind.EXPIRED_SESSION:
            self.sessions.clear()
        if fault is FaultKind.PARTIAL:
            scope["syncd.partial"] = True
        usage = f"api-usage={self.calls}/{self.daily_limit}".encode()

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
        await asyncio.sleep(self.faults.slow_seconds)
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
        self.calls += 1
        if self.budget is not None:
            allowed, _ = self.budget.spend()
            if not allowed:
                return sf_error(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")
        return None

    # -- routing ------------------------------------------------------------------------
    def _routes(self) -> list[Route]:
        data = "/services/data/{version}"
        table: list[tuple[str, Handler, list[str], bool]] = [
            ("/services/Soap/u/{version}", self.soap_login, ["POST"], False),
            ("/services/oauth2/token", self.oauth_token, ["POST"], False),
            (f"{data}/query", self.query, ["GET"], True),
            (f"{data}/queryAll", self.query_all, ["GET"], True),
            (f"{data}/query/{{locator}}", self.query_more, ["GET"], True),
            (f"{data}/queryAll/{{locator}}", self.query_more, ["GET"], True),
            (f"{data}/sobjects", self.list_objects, ["GET"], True),
            (f"{data}/sobjects/{{sobject}}/describe", self.describe, ["GET"], True),
            (f"{data}/sobjects/{{sobject}}/deleted", self.get_deleted, ["GET"], True),
            (f"{data}/sobjects/{{sobject}}/updated", self.get_updated, ["GET"], True),
            (
                f"{data}/composite/sobjects/{{sobject}}/{{ext}}",
                self.collection_upsert,
                ["PATCH"],
                True,
            ),
            (f"{data}/jobs/query", self.create_query_job, ["POST"], True),
            (f"{data}/jobs/query/{{job}}", self.get_job, ["GET"], True),
            (f"{data}/jobs/query/{{job}}/results", self.query_results, ["GET"], True),
            (f"{data}/jobs/ingest", self.create_ingest_job, ["POST"], True),
            (f"{data}/jobs/ingest/{{job}}", self.get_job, ["GET"], True),
            (f"{data}/jobs/ingest/{{job}}", self.set_job_state, ["PATCH"], True),
            (f"{data}/jobs/ingest/{{job}}/batches", self.upload_batch, ["PUT"], True),
            (f"{data}/jobs/ingest/{{job}}/{{results}}", self.ingest_results, ["GET"], True),
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
                return sf_error(404, "NOT_FOUND", "The requested resource does not exist")
            token = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
            if token not in self.sessions:
                return sf_error(401, "INVALID_SESSION_ID", "Session expired or invalid")
            return await handler(request)

        return guarded

    # -- login --------------------------------------------------------------------------
    def _new_session(self) -> str:
        token = f"{ORG_ID[:15]}!{secrets.token_urlsafe(24)}"
        self.sessions.add(token)
        return token

    def _login_refused(self) -> bool:
        if self.refused_logins > 0:
            self.refused_logins -= 1
            return True
        return False

    async def soap_login(self, request: Request) -> Response:
        if request.headers.get("soapaction") != "login":
            return _soap_fault("INVALID_OPERATION", "SOAPAction header must be login")
        body = (await request.body()).decode()
        creds = self.credentials
        username = _soap_element(body, "username")
        password = _soap_element(body, "password")
        if (
            self._login_refused()
            or username != creds.username
            or password != creds.password + creds.security_token
        ):
            return _soap_fault(
                "INVALID_LOGIN", "Invalid username, password, security token; or user locked out."
            )
        version = request.path_params["version"]
        server_url = f"{self.base_url}/services/Soap/u/{version}/{ORG_ID[:15]}"
        token = self._new_session()
        xml = (
            '<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope '
            'xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
            'xmlns="urn:partner.soap.sforce.com"><soapenv:Body><loginResponse><result>'
            f"<metadataServerUrl>{self.base_url}/services/Soap/m/{version}/{ORG_ID[:15]}"
            "</metadataServerUrl><passwordExpired>false</passwordExpired><sandbox>false</sandbox>"
            f"<serverUrl>{server_url}</serverUrl><sessionId>{token}</sessionId>"
            f"<userId>0055g00000SyNcDAAV</userId><userInfo><organizationId>{ORG_ID}"
            f"</organizationId><userName>{html.escape(username or '')}</userName></userInfo>"
            "</result></loginResponse></soapenv:Body></soapenv:Envelope>"
        )
        return Response(xml, media_type="text/xml")

    async def oauth_token(self, request: Request) -> Response:
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
        grant = form.get("grant_type")
        creds = self.credentials
        if grant == "client_credentials":
            basic = request.headers.get("authorization", "").removeprefix("Basic ").strip()
            try:
                client_id, _, secret = base64.b64decode(basic).decode().partition(":")
            except ValueError:
                client_id, secret = "", ""
            ok = (client_id, secret) == (creds.client_id, creds.client_secret)
        elif grant == "password":
            ok = (
                form.get("client_id") == creds.client_id
                and form.get("client_secret") == creds.client_secret
                and form.get("username") == creds.username
                and form.get("password") in (creds.password, creds.password + creds.security_token)
            )
        else:
            return JSONResponse(
                {
                    "error": "unsupported_grant_type",
                    "error_description": "grant type not supported",
                },
                status_code=400,
            )
        if self._login_refused() or not ok:
            return JSONResponse(
                {"error": "invalid_grant", "error_description": "authentication failure"},
                status_code=400,
            )
        return JSONResponse(
            {
                "access_token": self._new_session(),
                "instance_url": self.base_url,
                "id": f"{self.base_url}/id/{ORG_ID}/0055g00000SyNcDAAV",
                "token_type": "Bearer",
                "issued_at": str(int(self.org.now.timestamp() * 1000)),
                "signature": base64.b64encode(secrets.token_bytes(32)).decode(),
            }
        )

    # -- queries ------------------------------------------------------------------------
    def _plan(self, text: str) -> tuple[soql.Plan, str]:
        query = soql.parse(text)
        sobject = next((name for name in OBJECTS if name.lower() == query.sobject.lower()), None)
        if sobject is None:
            raise soql.SoqlError(
                "INVALID_TYPE",
                f"\n{text}\n^\nERROR at Row:1:Column:1\nsObject type '{query.sobject}' is not "
                "supported. If you are attempting to use a custom object, be sure to append the "
                "'__c' after the entity name.",
            )
        return soql.plan(query, sobject, OBJECTS[sobject].field_types()), sobject

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
        text = request.query_params.get("q")
        if not text:
            return sf_error(400, "MALFORMED_QUERY", "A query string has to be specified")
        try:
            plan, sobject = self._plan(text)
        except soql.SoqlError as error:
            return sf_error(400, error.code, error.message)
        rows = plan.run(self.org.rows(sobject, include_deleted))
        if plan.query.is_count:
            return JSONResponse({"totalSize": len(rows), "done": True, "records": []})
        version = request.path_params["version"]
        size = DEFAULT_BATCH
        options = request.headers.get("sforce-query-options", "")
        if match := re.search(r"batchSize=(\d+)", options):
            size = min(max(int(match.group(1)), 200), DEFAULT_BATCH)
        self._serial += 1
        locator = f"01g5g{self._serial:010d}"
        self._cursors[locator] = QueryCursor(
            [self._rest_record(version, sobject, plan.fields, row) for row in rows], size
        )
        return JSONResponse(self._page(version, locator, 0))

    async def query_all(self, request: Request) -> Response:
        return await self.query(request, include_deleted=True)

    async def query_more(self, request: Request) -> Response:
        locator, _, offset = request.path_params["locator"].partition("-")
        if locator not in self._cursors or not offset.isdigit():
            return sf_error(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        return JSONResponse(self._page(request.path_params["version"], locator, int(offset)))

    # -- sobjects -----------------------------------------------------------------------
    def _sobject(self, name: str) -> str | None:
        return next((o for o in OBJECTS if o.lower() == name.lower()), None)

    async def list_objects(self, request: Request) -> Response:
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
        sobject = self._sobject(request.path_params["sobject"])
        if sobject is None:
            return sf_error(404, "NOT_FOUND", "The requested resource does not exist")
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
                    }
                    for f in spec.fields
                ],
            }
        )

    def _window(self, request: Request) -> tuple[datetime, datetime] | Response:
        try:
            start = soql.parse_datetime(request.query_params["start"])
            end = soql.parse_datetime(request.query_params["end"])
        except (KeyError, ValueError):
            return sf_error(
                400, "MALFORMED_QUERY", "start and end must be dateTimes with a time zone"
            )
        if end < start:
            return sf_error(400, "INVALID_REPLICATION_DATE", "end date cannot be before start date")
        if start < self.org.now - REPLICATION_WINDOW:
            return sf_error(
                400, "INVALID_REPLICATION_DATE", "startDate cannot be more than 30 days ago"
            )
        return start, end

    async def get_deleted(self, request: Request) -> Response:
        sobject = self._sobject(request.path_params["sobject"])
        window = self._window(request)
        if sobject is None:
            return sf_error(404, "NOT_FOUND", "The requested resource does not exist")
        if isinstance(window, Response):
            return window
        start, end = window
        rows = [
            row
            for row in self.org.rows(sobject, include_deleted=True)
            if row["IsDeleted"] and start <= row["SystemModstamp"] <= end
        ]
        return JSONResponse(
            {
                "deletedRecords": [
                    {"id": row["Id"], "deletedDate": rest_datetime(row["SystemModstamp"])}
                    for row in rows
                ],
                "earliestDateAvailable": rest_datetime(self.org.now - REPLICATION_WINDOW),
                "latestDateCovered": rest_datetime(min(self.org.now, end)),
            }
        )

    async def get_updated(self, request: Request) -> Response:
        sobject = self._sobject(request.path_params["sobject"])
        window = self._window(request)
        if sobject is None:
            return sf_error(404, "NOT_FOUND", "The requested resource does not exist")
        if isinstance(window, Response):
            return window
        start, end = window
        ids = [
            row["Id"]
            for row in self.org.rows(sobject, include_deleted=False)
            if start <= row["SystemModstamp"] <= end
        ]
        return JSONResponse(
            {"ids": ids, "latestDateCovered": rest_datetime(min(self.org.now, end))}
        )

    # -- sObject Collections ------------------------------------------------------------
    async def collection_upsert(self, request: Request) -> Response:
        sobject = self._sobject(request.path_params["sobject"])
        if sobject is None:
            return sf_error(404, "NOT_FOUND", "The requested resource does not exist")
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
        outcomes = self._upsert(sobject, ext.name, clean, "collections", request.scope, all_or_none)
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

    def _upsert(
        self,
        sobject: str,
        ext: str,
        records: list[dict[str, Any]],
        api: str,
        scope: Scope,
        all_or_none: bool = False,
    ) -> list[UpsertOutcome]:
        """Upsert with the PARTIAL fault and allOrNone rollback applied."""
        rejected = (
            self.faults.rejected_positions(len(records), self._serial)
            if scope.get("syncd.partial")
            else set()
        )
        with self.org.lock:
            before = copy.deepcopy(self.org.records[sobject])
            kept = [r for i, r in enumerate(records) if i not in rejected]
            applied = iter(self.org.upsert(sobject, ext, kept, api))
            validation = RecordError(
                "FIELD_CUSTOM_VALIDATION_EXCEPTION",
                "Record blocked by a validation rule: Syncd_Check",
            )
            outcomes = [
                UpsertOutcome(None, error=validation) if i in rejected else next(applied)
                for i in range(len(records))
            ]
            if all_or_none and any(o.error for o in outcomes):
                self.org.records[sobject] = before
                rolled_back = RecordError(
                    "ALL_OR_NONE_OPERATION_ROLLED_BACK",
                    "Record rolled back because not all records were valid and the request "
                    "was using AllOrNone header",
                )
                outcomes = [
                    o if o.error else UpsertOutcome(None, error=rolled_back) for o in outcomes
                ]
        return outcomes

    # -- Bulk 2.0 -----------------------------------------------------------------------
    def _new_job(self, kind: str, body: dict[str, Any], state: str) -> BulkJob:
        self._serial += 1
        job = BulkJob(f"7505g{self._serial:010d}AAA", kind, body, state)
        self.jobs[job.id] = job
        return job

    def _job(self, request: Request, kind: str | None = None) -> BulkJob | Response:
        job = self.jobs.get(request.path_params["job"])
        if job is None or (kind is not None and job.kind != kind):
            return sf_error(404, "NOT_FOUND", "The requested resource does not exist")
        return job

    async def _json_body(self, request: Request) -> dict[str, Any] | Response:
        try:
            body = json.loads(await request.body())
        except ValueError as error:
            return sf_error(400, "JSON_PARSER_ERROR", f"Unexpected character: {error}")
        if not isinstance(body, dict):
            return sf_error(400, "JSON_PARSER_ERROR", "Expected a JSON object")
        return body

    async def create_query_job(self, request: Request) -> Response:
        body = await self._json_body(request)
        if isinstance(body, Response):
            return body
        if body.get("operation") not in ("query", "queryAll"):
            return sf_error(400, "INVALIDJOB", f"Invalid operation: {body.get('operation')}")
        try:
            plan, sobject = self._plan(str(body.get("query", "")))
        except soql.SoqlError as error:
            return sf_error(400, error.code, error.message)
        if plan.query.is_count:
            return sf_error(400, "INVALIDJOB", "Aggregate queries are not supported")
        job = self._new_job("query", body | {"object": sobject}, "UploadComplete")
        job.fields = plan.fields
        job.rows = plan.run(self.org.rows(sobject, body["operation"] == "queryAll"))
        return JSONResponse(job.info(request.path_params["version"]))

    async def get_job(self, request: Request) -> Response:
        job = self._job(request)
        if isinstance(job, Response):
            return job
        job.polls += 1
        if job.kind == "query" and job.state in ("UploadComplete", "InProgress"):
            # One poll sees it running, the next sees it done, as with a real (fast) job.
            job.state = "InProgress" if job.polls == 1 else "JobComplete"
        return JSONResponse(job.info(request.path_params["version"]))

    async def query_results(self, request: Request) -> Response:
        job = self._job(request, "query")
        if isinstance(job, Response):
            return job
        if job.state != "JobComplete":
            return sf_error(400, "INVALIDJOBSTATE", f"Job is not complete: {job.state}")
        try:
            size = int(request.query_params.get("maxRecords", "50000"))
            locator = request.query_params.get("locator")
            offset = int(base64.b64decode(locator + "==").decode()) if locator else 0
        except ValueError:
            return sf_error(400, "INVALIDLOCATOR", "invalid locator or maxRecords")
        if size < 1:
            return sf_error(400, "INVALIDLOCATOR", "maxRecords must be positive")
        page = job.rows[offset : offset + size]
        following = offset + size
        next_locator = (
            base64.b64encode(str(following).encode()).decode().rstrip("=")
            if following < len(job.rows)
            else "null"
        )
        body = _csv(job.fields, [[_bulk_value(row.get(f)) for f in job.fields] for row in page])
        return Response(
            body,
            media_type="text/csv",
            headers={"Sforce-Locator": next_locator, "Sforce-NumberOfRecords": str(len(page))},
        )

    async def create_ingest_job(self, request: Request) -> Response:
        body = await self._json_body(request)
        if isinstance(body, Response):
            return body
        sobject = self._sobject(str(body.get("object", "")))
        if sobject is None:
            return sf_error(400, "INVALIDJOB", f"Unable to find object: {body.get('object')}")
        if body.get("operation") != "upsert":
            return sf_error(400, "INVALIDJOB", "The emulator supports the upsert operation only")
        ext = OBJECTS[sobject].field(str(body.get("externalIdFieldName", "")))
        if ext is None or not ext.external_id:
            return sf_error(
                400,
                "INVALIDJOB",
                f"External ID was blank or not an external id field for {sobject}: "
                f"{body.get('externalIdFieldName')}",
            )
        if body.get("contentType", "CSV") != "CSV":
            return sf_error(400, "INVALIDJOB", "contentType must be CSV")
        job = self._new_job(
            "ingest", body | {"object": sobject, "externalIdFieldName": ext.name}, "Open"
        )
        return JSONResponse(job.info(request.path_params["version"]))

    async def upload_batch(self, request: Request) -> Response:
        job = self._job(request, "ingest")
        if isinstance(job, Response):
            return job
        if not request.headers.get("content-type", "").startswith("text/csv"):
            return sf_error(400, "INVALIDCONTENTTYPE", "Content-Type must be text/csv")
        if job.state != "Open":
            return sf_error(409, "INVALIDJOBSTATE", f"Job is not open for upload: {job.state}")
        job.csv_data += (await request.body()).decode()
        return Response(status_code=201)

    async def set_job_state(self, request: Request) -> Response:
        job = self._job(request, "ingest")
        if isinstance(job, Response):
            return job
        body = await self._json_body(request)
        if isinstance(body, Response):
            return body
        state = body.get("state")
        if state == "Aborted" and job.state in ("Open", "UploadComplete"):
            job.state = "Aborted"
        elif state == "UploadComplete" and job.state == "Open":
            self._process_ingest(job, request.scope)
        else:
            return sf_error(409, "INVALIDJOBSTATE", f"Cannot move job from {job.state} to {state}")
        return JSONResponse(job.info(request.path_params["version"]))

    def _process_ingest(self, job: BulkJob, scope: Scope) -> None:
        sobject = str(job.body["object"])
        spec = OBJECTS[sobject]
        rows = list(csv.DictReader(io.StringIO(job.csv_data)))
        unknown = [name for name in (rows[0].keys() if rows else ()) if spec.field(name) is None]
        if not rows or unknown:
            job.state = "Failed"
            job.error_message = (
                f"InvalidBatch : Field name not found : {unknown[0]}" if unknown else "No data"
            )
            return
        # An empty cell leaves the field as it is in Bulk API; #N/A would clear it.
        records = [
            {spec.canonical(k): (None if v == "#N/A" else v) for k, v in row.items() if v != ""}
            for row in rows
        ]
        outcomes = self._upsert(
            sobject, str(job.body["externalIdFieldName"]), records, "bulk", scope
        )
        for row, outcome in zip(rows, outcomes, strict=True):
            if outcome.error is None:
                created = "true" if outcome.created else "false"
                job.successful.append(
                    {"sf__Id": outcome.record_id or "", "sf__Created": created, **row}
                )
            else:
                error = f"{outcome.error.status_code}:{outcome.error.message}:--"
                job.failed.append({"sf__Id": "", "sf__Error": error, **row})
        job.state = "JobComplete"

    async def ingest_results(self, request: Request) -> Response:
        job = self._job(request, "ingest")
        if isinstance(job, Response):
            return job
        kind = request.path_params["results"].lower()
        columns = (
            list(next(csv.DictReader(io.StringIO(job.csv_data))).keys()) if job.csv_data else []
        )
        if kind == "successfulresults":
            header = ["sf__Id", "sf__Created", *columns]
            rows = job.successful
        elif kind == "failedresults":
            header = ["sf__Id", "sf__Error", *columns]
            rows = job.failed
        elif kind == "unprocessedrecords":
            header, rows = columns, []
        else:
            return sf_error(404, "NOT_FOUND", "The requested resource does not exist")
        return Response(
            _csv(header, [[row.get(h) for h in header] for row in rows]), media_type="text/csv"
        )


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
