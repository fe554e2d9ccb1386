"""The emulator's list membership endpoints (lists v3, ILS ids)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from connectors.hubspot.emulator_data import CrmData, CrmList, CrmObject, iso_ms
from connectors.hubspot.emulator_errors import ApiError, validation_error
from connectors.hubspot.emulator_state import Body, EmulatorState, query_int

MAX_MEMBERSHIP_PAGE = 250
MAX_MEMBERSHIP_CHANGE = 100_000
LIST_OBJECT_TYPES = {"0-1": "contacts", "0-2": "companies"}


class ListHandlers:
    """Membership reads and changes; only MANUAL and SNAPSHOT lists take changes."""

    def __init__(self, state: EmulatorState) -> None:
        self.state = state

    @property
    def data(self) -> CrmData:
        return self.state.data

    def _writable_list(self, request: Request) -> CrmList:
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

    async def members_add(self, request: Request, body: Body) -> Response:
        return self._change(request, body.json, [])

    async def members_remove(self, request: Request, body: Body) -> Response:
        return self._change(request, [], body.json)

    async def members_add_and_remove(self, request: Request, body: Body) -> Response:
        if not isinstance(body.json, dict):
            raise validation_error(
                "Invalid input JSON: expected {recordIdsToAdd, recordIdsToRemove}"
            )
        return self._change(
            request, body.json.get("recordIdsToAdd", []), body.json.get("recordIdsToRemove", [])
        )

    async def memberships(self, request: Request, _body: Body) -> Response:
        crm_list = self.data.lists.get(request.path_params["list_id"])
        if crm_list is None:
            raise ApiError(
                404, "OBJECT_NOT_FOUND", f"List {request.path_params['list_id']} does not exist."
            )
        limit = query_int(request, "limit", 100, MAX_MEMBERSHIP_PAGE)
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
