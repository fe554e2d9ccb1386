"""The Matomo source: visits and their actions from the Live API, incrementally.

Streams:
  visits   one record per visit (idVisit, visitorId, userId, timestamps, actionDetails...)
  actions  one record per action of those visits, carrying idVisit, visitorId, userId and a
           stable `actionId`, so that the store keeps each action once

Incremental by the visit's last action time. A visit changes while the visitor is still on
the site (new actions move its lastActionTimestamp forward), so a changed visit is read again
with all its actions; actions keep their `actionId`, which de-duplicates them downstream.

The cursor is `{"last_action": T, "started": S}`: T the newest last action read, S when the read
began (our clock less `CLOCK_SKEW_SECONDS`). Each read starts `lookback_seconds` before the
previous read's S, or at T if that is earlier (see `connectors.lookback`); a cursor without S
looks back from T. A site gone quiet reads only the visits at T again. Matomo writes a tracking
request when it processes it, not when it happened, so a queued request (QueuedTracking works
through its queue in batches, later after a peak), an app sending the events it held offline, or
a log import gives a visit a last action older than visits a read already delivered. Each page
asks Matomo for visits with a last action at or after the walk's time (`minTimestamp=T-1`,
ascending) and drops those this read already took at exactly that time, so a page boundary
inside a run of equal timestamps, or a visit moving forward between two requests, neither
loses nor repeats a visit within a read.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from connectors.lookback import CLOCK_SKEW_SECONDS, Walk, resume_at
from connectors.matomo.client import MatomoClient
from connectors.matomo.options import MatomoOptions
from syncd.budget import RequestBudget
from syncd.connector import JsonValue, Page, RawRecord
from syncd.errors import FatalConnectorError
from syncd.retry import RetryPolicy

STREAMS = ("visits", "actions")


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def stored_last_action(cursor: JsonValue | None) -> int | None:
    """The last action time the engine stored; None starts from the beginning.

    Cursors stored before reads looked back also list the visits read at that time; the
    look-back reads those again.
    """
    if cursor is None:
        return None
    last = _int(cursor.get("last_action")) if isinstance(cursor, dict) else None
    if last is None:
        raise FatalConnectorError(f"not a Matomo visits cursor: {cursor!r}")
    return last


def stored_start(cursor: JsonValue | None) -> int | None:
    """When the read that stored `cursor` began; None if the cursor does not tell (stored
    before reads kept it)."""
    if not isinstance(cursor, dict) or "started" not in cursor:
        return None
    started = _int(cursor["started"])
    if started is None:
        raise FatalConnectorError(f"not a Matomo visits cursor: {cursor!r}")
    return started


def read_start(stored: int | None, started: int | None, lookback_seconds: int) -> int | None:
    """Where a read starts after a cursor of last action `stored` stored by a read begun at
    `started`: what that read could not see yet has a last action after `started` less the
    look-back; a cursor without a start looks back from `stored` (None: from the beginning)."""
    if stored is None:
        return None
    return resume_at(stored, started, lambda time: time - lookback_seconds)


def action_ids(id_visit: int, actions: Sequence[Mapping[str, Any]]) -> list[str]:
    """A stable id for each action of a visit.

    Page views and events have Matomo's own idlink_va (`pageId`), orders their `orderId`;
    anything else is named by its type, time and rank among same-typed same-time actions,
    which stays stable because Matomo only ever appends actions to a visit.
    """
    ranks: Counter[tuple[str, Any]] = Counter()
    ids = []
    for action in actions:
        kind = str(action.get("type", "unknown"))
        if action.get("pageId") not in (None, ""):
            ids.append(f"{id_visit}:{action['pageId']}")
        elif action.get("orderId") not in (None, ""):
            ids.append(f"{id_visit}:order:{action['orderId']}")
        else:
            key = (kind, action.get("timestamp"))
            ids.append(f"{id_visit}:{kind}:{action.get('timestamp')}:{ranks[key]}")
            ranks[key] += 1
    return ids


class MatomoSource:
    """Reads one Matomo site's visits and actions."""

    def __init__(
        self,
        options: MatomoOptions,
        token: str,
        *,
        sleep: Callable[[float], None] = time.sleep,
        budget: RequestBudget | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._options = options
        self._clock = clock
        self._client = MatomoClient(
            options.url,
            token,
            budget=budget or RequestBudget(options.budget, options.budget_window),
            timeout=options.timeout,
            policy=RetryPolicy(attempts=options.retry_attempts),
            sleep=sleep,
        )

    def streams(self) -> Sequence[str]:
        """`visits` and `actions`."""
        return STREAMS

    def read(self, stream: str, cursor: JsonValue | None) -> Iterator[Page]:
        """Pages of visits (or of their actions) whose last action is after `cursor`."""
        if stream not in STREAMS:
            raise FatalConnectorError(f"Matomo has no stream {stream!r}; it has {STREAMS}")
        began = int(self._clock()) - CLOCK_SKEW_SECONDS
        stored = stored_last_action(cursor)
        start = read_start(stored, stored_start(cursor), self._options.lookback_seconds)
        walk: Walk[int, int] = Walk(stored, start)
        for visits in self._visit_pages(walk):
            records = self._visit_records(visits) if stream == "visits" else self._actions(visits)
            yield Page(records=records, cursor={"last_action": walk.mark, "started": began})

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

    def _location(self, id_visit: int) -> str:
        return f"{self._options.url}/index.php#idSite={self._options.site_id}&idVisit={id_visit}"

    def _visit_pages(self, walk: Walk[int, int]) -> Iterator[list[tuple[int, dict[str, Any]]]]:
        """Pages of (idVisit, visit) the walk had not taken; each moves the walk past it."""
        page_size = self._options.page_size
        offset = 0
        while True:
            params: dict[str, str | int] = {
                "idSite": self._options.site_id,
                "period": "range",
                "date": f"{self._options.start_date.isoformat()},today",
                "filter_limit": page_size,
                "filter_offset": offset,
                "filter_sort_order": "asc",
            }
            if walk.at is not None:
                # Matomo keeps visits whose last action is strictly later than minTimestamp.
                params["minTimestamp"] = walk.at - 1
            batch = self._client.call("Live.getLastVisitsDetails", params)
            if not isinstance(batch, list):
                raise FatalConnectorError(f"Matomo answered visits as {type(batch).__name__}")
            fresh = [
                (id_visit, last, visit)
                for id_visit, last, visit in map(self._keys, batch)
                if walk.fresh(id_visit, last)
            ]
            before = walk.at
            if fresh:
                walk.took((id_visit, last) for id_visit, last, _ in fresh)
                yield [(id_visit, visit) for id_visit, _, visit in fresh]
            if walk.at != before:
                offset = 0
            else:
                # The walk's time stayed: every visit on this page is at it and taken, so step
                # on instead of asking again for all the visits of a crowded second.
                offset += page_size
            if len(batch) < page_size:
                return

    @staticmethod
    def _keys(visit: Any) -> tuple[int, int, dict[str, Any]]:
        if isinstance(visit, dict):
            id_visit = _int(visit.get("idVisit"))
            last = _int(visit.get("lastActionTimestamp"))
            if id_visit is not None and last is not None:
                return id_visit, last, visit
        raise FatalConnectorError(
            f"Matomo answered a visit without idVisit and lastActionTimestamp: {visit!r:.200}"
        )

    def _visit_records(self, visits: list[tuple[int, dict[str, Any]]]) -> list[RawRecord]:
        return [RawRecord(visit, self._location(id_visit)) for id_visit, visit in visits]

    def _actions(self, visits: list[tuple[int, dict[str, Any]]]) -> list[RawRecord]:
        records = []
        for id_visit, visit in visits:
            actions = visit.get("actionDetails") or []
            for action, action_id in zip(actions, action_ids(id_visit, actions), strict=True):
                payload = {
                    **action,
                    "actionId": action_id,
                    "idVisit": id_visit,
                    "idSite": visit.get("idSite", self._options.site_id),
                    "visitorId": visit.get("visitorId"),
                    "userId": visit.get("userId"),
                }
                records.append(RawRecord(payload, f"{self._location(id_visit)}&action={action_id}"))
        return records
