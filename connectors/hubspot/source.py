"""The HubSpot source: contacts, companies or any CRM object type, full and incremental.

A full read (cursor None) lists every live record by id, 100 per page, then reports every
archived record as deleted. An incremental read is a keyset walk over the last-modified
property with CRM search: `GTE` the walk's position, sorted ascending, dropping ids this read
already delivered at exactly that millisecond. Each query starts again from the newest
timestamp delivered instead of paging with `after`, so it never reaches search's 10,000-result
cap however many records changed, and a record edited while we page cannot shift the others
out of view (offset paging would skip one for each record that moves). When more records
share one millisecond than a search page holds, they are walked by id.

The walk starts `lookback_seconds` before the previous read started (our clock less the clock
skew), or at the stored time if that is earlier (see `connectors.lookback`): HubSpot's search
index lags its writes, so a record modified just before a later-stamped one may be searchable
only after that one was delivered. Records inside the look-back come again; a stream gone quiet
reads only the records at its stored time.
Every read ends by listing archived records: those archived since the last read, with the same
look-back, become `Page.deleted_ids`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

import structlog

from connectors.hubspot.client import HubSpotClient
from connectors.hubspot.cursor import ReadCursor
from connectors.hubspot.options import DEFAULT_LOOKBACK_SECONDS
from connectors.lookback import CLOCK_SKEW_SECONDS, Walk, resume_at
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
CLOCK_SKEW_MS = CLOCK_SKEW_SECONDS * 1000
"""How far HubSpot's clock may be ahead of ours: windows start this much earlier."""


def modified_property(object_type: str) -> str:
    """The last-modified property search can filter on (contacts are the odd one out)."""
    return "lastmodifieddate" if object_type == "contacts" else "hs_lastmodifieddate"


def to_ms(value: str) -> int:
    """HubSpot's ISO-8601 datetime (`...Z`) or epoch-milliseconds string as epoch ms."""
    if value.isdigit():
        return int(value)
    return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000)


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
        lookback_seconds: float = DEFAULT_LOOKBACK_SECONDS,
    ) -> None:
        self._client = client
        self._objects = tuple(objects)
        self._properties = properties or {}
        self._page_size = page_size
        self._search_page_size = search_page_size
        self._clock = clock
        self._lookback_ms = int(lookback_seconds * 1000)

    def streams(self) -> Sequence[str]:
        """The configured object types."""
        return self._objects

    def read(self, stream: str, cursor: JsonValue | None) -> Iterator[Page]:
        """Pages after `cursor`; a read resumed from a page's cursor misses nothing after it."""
        if stream not in self._objects:
            raise FatalConnectorError(
                f"stream {stream!r} is not configured; add it to objects = {list(self._objects)}"
            )
        state = (
            ReadCursor.full(self._now() - CLOCK_SKEW_MS)
            if cursor is None
            else ReadCursor.from_json(cursor)
        )
        if state.phase == "full":
            state = yield from self._full(stream, state)
        elif state.phase == "search":
            state = yield from self._changes(stream, state)
        yield from self._archived(stream, state)

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

    def _page(self, stream: str, records: Sequence[Mapping[str, Any]], state: ReadCursor) -> Page:
        return Page(records=[self._raw(stream, r) for r in records], cursor=state.to_json())

    def _full(self, stream: str, state: ReadCursor) -> Generator[Page, None, ReadCursor]:
        while True:
            body = self._client.get_page(stream, self._page_size, state.after, self._wanted(stream))
            following = _next_after(body)
            if following is None:
                # Everything archived is a deletion after a full read: the store may hold any.
                state = ReadCursor(phase="archived", since=state.started, started=state.started)
            else:
                state = state.with_phase("full", after=following)
            if body["results"]:
                yield self._page(stream, body["results"], state)
            if following is None:
                return state

    def _changes(self, stream: str, state: ReadCursor) -> Generator[Page, None, ReadCursor]:
        begun = self._now() - CLOCK_SKEW_MS
        # From the previous read's start: what it could not see yet is stamped after that, less
        # the look-back. Cursors stored without it (started 0) look back from the stored time.
        started = state.started if state.started > 0 else None
        start = resume_at(state.since, started, lambda time: time - self._lookback_ms)
        walk: Walk[int, str] = Walk(state.since, start)

        def here() -> ReadCursor:
            return ReadCursor(
                phase="search",
                since=_known(walk.mark),
                archived_since=state.archived_since,
                started=begun,
            )

        prop = modified_property(stream)
        while True:
            results = self._search(
                stream, [{"propertyName": prop, "operator": "GTE", "value": str(walk.at)}], prop
            )
            stamped = [(str(r["id"]), self._stamp(stream, r), r) for r in results]
            fresh = [r for key, stamp, r in stamped if walk.fresh(key, stamp)]
            walk.took((key, stamp) for key, stamp, _ in stamped)
            if len(results) < self._search_page_size:
                # The deletions window looks back too, from where the last read's scan began.
                done = ReadCursor(
                    phase="archived",
                    since=_known(walk.mark),
                    archived_since=(
                        None
                        if state.archived_since is None
                        else state.archived_since - self._lookback_ms
                    ),
                    started=begun,
                )
                if fresh:
                    yield self._page(stream, fresh, done)
                return done
            if fresh:
                yield self._page(stream, fresh, here())
            if len(walk.taken_at) > self._search_page_size // 2:
                log.info("hubspot records share one timestamp; walking them by id", stream=stream)
                for tied in self._tie(stream, walk):
                    yield self._page(stream, tied, here())

    def _tie(self, stream: str, walk: Walk[int, str]) -> Iterator[list[dict[str, Any]]]:
        """The records modified at exactly the walk's time it has not taken, walked by id."""
        at, after = _known(walk.at), "0"
        while True:
            filters = [
                {"propertyName": modified_property(stream), "operator": "EQ", "value": str(at)},
                {"propertyName": "hs_object_id", "operator": "GT", "value": after},
            ]
            results = self._search(stream, filters, "hs_object_id")
            fresh = [r for r in results if walk.fresh(str(r["id"]), at)]
            walk.took((str(r["id"]), at) for r in results)
            last = len(results) < self._search_page_size
            if last:
                walk.jump(at + 1)
            if fresh:
                yield fresh
            if last:
                return
            after = str(results[-1]["id"])

    def _archived(self, stream: str, state: ReadCursor) -> Iterator[Page]:
        while True:
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
            if following is None:
                rest = ReadCursor(
                    phase="search",
                    since=state.since,
                    archived_since=state.started,
                    started=state.started,
                )
                yield Page(records=[], cursor=rest.to_json(), deleted_ids=tuple(deleted))
                return
            state = state.with_phase("archived", after=following)
            if deleted:
                yield Page(records=[], cursor=state.to_json(), deleted_ids=tuple(deleted))

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


def _known(stamp: int | None) -> int:
    """A time of a walk that started from a stored time, as every HubSpot search walk does."""
    if stamp is None:
        raise TypeError("a HubSpot search walk always starts from a stored time")
    return stamp


def _next_after(body: Mapping[str, Any]) -> str | None:
    paging = body.get("paging") or {}
    following = (paging.get("next") or {}).get("after")
    return None if following is None else str(following)
