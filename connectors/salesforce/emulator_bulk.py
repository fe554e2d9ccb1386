"""The emulator's Bulk 2.0 API: query jobs paged by locator, upsert ingest jobs from CSV."""

from __future__ import annotations

import base64
import csv
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Scope

from connectors.salesforce import soql
from connectors.salesforce.emulator_rest import plan_query
from connectors.salesforce.emulator_state import EmulatorState
from connectors.salesforce.emulator_wire import NOT_FOUND, bulk_datetime, find_sobject, sf_error
from connectors.salesforce.org import OBJECTS


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
        """The job as GET /jobs/{query|ingest}/{id} describes it."""
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
    """CSV as Salesforce writes it: every value quoted, nulls left bare, LF line ends."""

    def line(values: Sequence[str | None]) -> str:
        return ",".join("" if v is None else '"' + v.replace('"', '""') + '"' for v in values)

    return "".join(line(row) + "\n" for row in [header, *rows])


def _bulk_value(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return bulk_datetime(value)
    return str(value)


class BulkApi:
    """Bulk 2.0 jobs, run to completion as soon as they are asked to."""

    def __init__(self, state: EmulatorState) -> None:
        self.state = state
        self.jobs: dict[str, BulkJob] = {}
        """Every job by id."""

    def _new_job(self, kind: str, body: dict[str, Any], state: str) -> BulkJob:
        job = BulkJob(f"7505g{self.state.next_serial():010d}AAA", kind, body, state)
        self.jobs[job.id] = job
        return job

    def _job(self, request: Request, kind: str | None = None) -> BulkJob | Response:
        job = self.jobs.get(request.path_params["job"])
        if job is None or (kind is not None and job.kind != kind):
            return sf_error(404, "NOT_FOUND", NOT_FOUND)
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
        """POST /jobs/query: check the SOQL and snapshot its rows."""
        body = await self._json_body(request)
        if isinstance(body, Response):
            return body
        if body.get("operation") not in ("query", "queryAll"):
            return sf_error(400, "INVALIDJOB", f"Invalid operation: {body.get('operation')}")
        try:
            plan, sobject = plan_query(str(body.get("query", "")))
        except soql.SoqlError as error:
            return sf_error(400, error.code, error.message)
        if plan.query.is_count:
            return sf_error(400, "INVALIDJOB", "Aggregate queries are not supported")
        job = self._new_job("query", body | {"object": sobject}, "UploadComplete")
        job.fields = plan.fields
        job.rows = plan.run(self.state.org.rows(sobject, body["operation"] == "queryAll"))
        return JSONResponse(job.info(request.path_params["version"]))

    async def get_job(self, request: Request) -> Response:
        """GET /jobs/{query|ingest}/{id}: the job, a query job completing on the second look."""
        job = self._job(request)
        if isinstance(job, Response):
            return job
        job.polls += 1
        if job.kind == "query" and job.state in ("UploadComplete", "InProgress"):
            # One poll sees it running, the next sees it done, as with a real (fast) job.
            job.state = "InProgress" if job.polls == 1 else "JobComplete"
        return JSONResponse(job.info(request.path_params["version"]))

    async def query_results(self, request: Request) -> Response:
        """GET /jobs/query/{id}/results: one CSV page, with the locator of the next."""
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
        """POST /jobs/ingest: an Open upsert job."""
        body = await self._json_body(request)
        if isinstance(body, Response):
            return body
        sobject = find_sobject(str(body.get("object", "")))
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
        """PUT /jobs/ingest/{id}/batches: CSV data for an Open job."""
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
        """PATCH /jobs/ingest/{id}: UploadComplete runs the job, Aborted drops it."""
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
        outcomes = self.state.upsert(
            sobject, str(job.body["externalIdFieldName"]), records, "bulk", scope
        )
        for row, outcome in zip(rows, outcomes, strict=True):
            if outcome.error is None:
                created = "true" if outcome.created else "false"
                job.successful.append(
                    {"sf__Id": outcome.record_id or "", "sf__Created": created, **row}
                )
            else:
                # Salesforce ends the message with the fields it concerns: "Email --".
                fields = "".join(f"{name} " for name in outcome.error.fields)
                error = f"{outcome.error.status_code}:{outcome.error.message}:{fields}--"
                job.failed.append({"sf__Id": "", "sf__Error": error, **row})
        job.state = "JobComplete"

    async def ingest_results(self, request: Request) -> Response:
        """GET /jobs/ingest/{id}/successfulResults | failedResults | unprocessedrecords."""
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
            return sf_error(404, "NOT_FOUND", NOT_FOUND)
        return Response(
            _csv(header, [[row.get(h) for h in header] for row in rows]), media_type="text/csv"
        )
