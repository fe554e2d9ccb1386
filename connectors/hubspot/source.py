"""The HubSpot source: contacts, companies or any CRM object type, full and incremental.

A full read (cursor None) lists every live record by id, 100 per page, then reports every
archived record as deleted. An incremental read is a keyset walk over the last-modified
property with CRM search: `GTE since`, sorted ascending, dropping ids already delivered at
exactly `since`. Each query starts again from the newest timestamp delivered instead of
paging with `after`, so it never reaches search's 10,000-result cap however many records
changed, and a record edited while we page cannot shift the others out of view (offset
paging would skip one for each record that moves). When more records share one
millisecond than a search page holds, they are walked by id (see `cursor`). Every read
ends by listing archived records: those archived since the last read become
`Page.deleted_ids`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog

from connectors.hubspot.client import HubSpotClient
from connectors.hubspot.cursor import ReadCursor
from syncd.connector import JsonValue, Page, RawRecord
from syncd.errors import FatalConnectorError

log = structlog.get_logger(__name__)

DEFAULT_PROPERTIES: Mapping[str, tuple[str, ...]] = {
    "contacts": (
        "email",
        "firstname",
        "lastname",
        "phone",
        "company",
        "city",
        "lifecyclestage",
        "createdate",
    ),
    "companies": ("name", "domain", "city", "phone", "industry", "createdate"),
}
CLOCK_SKEW_MS = 5 * 60 * 1000
"""How far HubSpot's clock may be ahead of ours: windows start this much earlier."""


def modified_property(object_type: str) -> str:
    """The last-modified property search can filter on (contacts are the odd one out)."""
    return "lastmodifieddate" if object_type == "contacts" else "hs_lastmodifieddate"


def to_ms(value: str) -> int:
    """HubSpot's ISO-8601 datetime (`...Z`) or epoch-milliseconds string as epoch ms."""
    if value.isdigit():
        return int(value)
    return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000)


@dataclass(frozen=True)
class _Step:
    records: Sequence[Mapping[str, Any]]
    cursor: ReadCursor
    deleted: Sequence[str] = ()
    finished: bool = False


class HubSpotSource:
    """Reads `objects` (streams named after HubSpot object types) from one account."""

    def __init__(
        self,
        client: HubSpotClient,
        objects: Sequence[str],
        properties: Mapping[str, Sequence[str]] | None = None,
        page_size: int = 100,
        search_page_size: int = 200,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._objects = tuple(objects)
        self._properties = properties or {}
        self._page_size = page_size
        self._search_page_size = search_page_size
        self._clock = clock

    def streams(self) -> Sequence[str]:
        """The configured object types."""
        return self._objects

    def read(self, stream: str, cursor: JsonValue | None) -> Iterator[Page]:
        """Pages after `cursor`; each page's cursor resumes right after it."""
        if stream not in self._objects:
            raise FatalConnectorError(
                f"stream {stream!r} is not configured; add it to objects = {list(self._objects)}"
            )
        state = (
            ReadCursor.full(self._now() - CLOCK_SKEW_MS)
            if cursor is None
            else ReadCursor.from_json(cursor)
        )
        steps = {
            "full": self._full_step,
            "search": self._search_step,
            "tie": self._tie_step,
            "archived": self._archived_step,
        }
        while True:
            step = steps[state.phase](stream, state)
            state = step.cursor
            if step.records or step.deleted or step.finished:
                yield Page(
                    records=[self._raw(stream, record) for record in step.records],
                    cursor=state.to_json(),
                    deleted_ids=tuple(step.deleted),
                )
            if step.finished:
                return

    def close(self) -> None:
        """Release the client's connections."""
        self._client.close()

    # -- phases --------------------------------------------------------------------------

    def _now(self) -> int:
        return int(self._clock() * 1000)

    def _wanted(self, stream: str) -> list[str]:
        configured = self._properties.get(stream) or DEFAULT_PROPERTIES.get(stream, ())
        extra = [p for p in (modified_property(stream), "hs_object_id") if p not in configured]
        return [*configured, *extra]

    def _stamp(self, stream: str, record: Mapping[str, Any]) -> int:
        properties = record.get("properties") or {}
        value = properties.get(modified_property(stream)) or record.get("updatedAt")
        if not value:
            raise FatalConnectorError(
                f"HubSpot {stream} record {record.get('id')} has no last-modified time"
            )
        return to_ms(str(value))

    def _full_step(self, stream: str, state: ReadCursor) -> _Step:
        body = self._client.get_page(stream, self._page_size, state.after, self._wanted(stream))
        following = _next_after(body)
        if following is not None:
            return _Step(body["results"], state.with_phase("full", after=following))
        # Everything archived is a deletion after a full read: the store may hold any of it.
        archived = ReadCursor(
            phase="archived", since=state.started, archived_since=None, started=state.started
        )
        return _Step(body["results"], archived)

    def _search_step(self, stream: str, state: ReadCursor) -> _Step:
        prop = modified_property(stream)
        results = self._search(
            stream,
            [{"propertyName": prop, "operator": "GTE", "value": str(state.since)}],
            prop,
        )
        seen = set(state.seen)
        stamped = [(self._stamp(stream, r), r) for r in results]
        fresh = [r for stamp, r in stamped if not (stamp == state.since and r["id"] in seen)]
        since, held = state.since, list(state.seen)
        if stamped:
            newest = max(stamp for stamp, _ in stamped)
            if newest != since:
                since, held = newest, []
            held += [r["id"] for stamp, r in stamped if stamp == newest and r["id"] not in held]
        if len(results) < self._search_page_size:
            scan = ReadCursor(
                phase="archived",
                since=since,
                seen=tuple(held),
                archived_since=state.archived_since,
                started=self._now() - CLOCK_SKEW_MS,
            )
            return _Step(fresh, scan)
        if len(held) > self._search_page_size // 2:
            log.info("hubspot records share one timestamp; walking them by id", stream=stream)
            tie = ReadCursor(
                phase="tie",
                since=since,
                seen=tuple(held),
                after="0",
                archived_since=state.archived_since,
            )
            return _Step(fresh, tie)
        return _Step(fresh, state.with_phase("search", since=since, seen=tuple(held)))

    def _tie_step(self, stream: str, state: ReadCursor) -> _Step:
        filters = [
            {
                "propertyName": modified_property(stream),
                "operator": "EQ",
                "value": str(state.since),
            },
            {"propertyName": "hs_object_id", "operator": "GT", "value": state.after or "0"},
        ]
        results = self._search(stream, filters, "hs_object_id")
        fresh = [r for r in results if r["id"] not in state.seen]
        if len(results) < self._search_page_size:
            done = ReadCursor(
                phase="search", since=state.since + 1, archived_since=state.archived_since
            )
            return _Step(fresh, done)
        last = str(results[-1]["id"])
        # Ids at or below the walk's position cannot come back: keep the cursor small.
        seen = tuple(i for i in state.seen if int(i) > int(last))
        return _Step(fresh, state.with_phase("tie", after=last, seen=seen))

    def _archived_step(self, stream: str, state: ReadCursor) -> _Step:
        body = self._client.get_page(
            stream, self._page_size, state.after, ["hs_object_id"], archived=True
        )
        deleted = [
            str(record["id"])
            for record in body["results"]
            if state.archived_since is None
            or to_ms(str(record.get("archivedAt") or record.get("updatedAt")))
            >= state.archived_since
        ]
        following = _next_after(body)
        if following is not None:
            return _Step((), state.with_phase("archived", after=following), deleted)
        rest = ReadCursor(
            phase="search", since=state.since, seen=state.seen, archived_since=state.started
        )
        return _Step((), rest, deleted, finished=True)

    def _search(
        self, stream: str, filters: list[dict[str, str]], sort_by: str
    ) -> list[dict[str, Any]]:
        body = self._client.search(
            stream,
            {
                "filterGroups": [{"filters": filters}],
                "sorts": [{"propertyName": sort_by, "direction": "ASCENDING"}],
                "properties": self._wanted(stream),
                "limit": self._search_page_size,
            },
        )
        results: list[dict[str, Any]] = body["results"]
        return results

    def _raw(self, stream: str, record: Mapping[str, Any]) -> RawRecord:
        payload = {
            "id": str(record["id"]),
            "properties": dict(record.get("properties") or {}),
            "createdAt": record.get("createdAt"),
            "updatedAt": record.get("updatedAt"),
            "archived": bool(record.get("archived", False)),
        }
        return RawRecord(payload=payload, location=f"hubspot:{stream}/{payload['id']}")


def _next_after(body: Mapping[str, Any]) -> str | None:
    paging = body.get("paging") or {}
    following = (paging.get("next") or {}).get("after")
    return None if following is None else str(following)
