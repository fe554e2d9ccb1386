"""Salesforce objects as streams, read incrementally on SystemModstamp.

The cursor is the newest SystemModstamp read and when the read began (our clock less
`CLOCK_SKEW`). Each read asks for `SystemModstamp >= start` ordered by (SystemModstamp, Id),
where `start` is `lookback_seconds` before the previous read began, or the stored
SystemModstamp if that is earlier (see `connectors.lookback`): SystemModstamp has one-second
resolution, so a record edited again within the second a read ended keeps the stamp that read
passed, and a long transaction's rows become visible only when it commits, stamped earlier.
Records inside the look-back are read again; the store finds them unchanged, and a stream gone
quiet reads only the records at its stored SystemModstamp. A cursor without a read start looks
back from its SystemModstamp. queryAll returns deleted records too: they come back in
`Page.deleted_ids`. A full read of more records than `bulk_query_threshold` runs as one Bulk
2.0 query job instead of REST pages. If Salesforce loses a REST query's place between pages,
the query runs again from where the read stands.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from connectors.lookback import CLOCK_SKEW_SECONDS, Walk, resume_at
from connectors.salesforce.client import QueryLocatorLost, SalesforceClient
from connectors.salesforce.soql import parse_datetime
from syncd.connector import JsonValue, Page, RawRecord
from syncd.errors import FatalConnectorError

CURSOR_FIELD = "SystemModstamp"
_REQUIRED = ("Id", "IsDeleted", CURSOR_FIELD)
log = structlog.get_logger(__name__)

CLOCK_SKEW = timedelta(seconds=CLOCK_SKEW_SECONDS)
"""How far Salesforce's clock may be ahead of ours: a read's stored start is this much earlier."""

ModstampWalk = Walk[datetime, str]


def soql_datetime(value: datetime) -> str:
    """A dateTime literal as SOQL wants it: UTC, unquoted, with milliseconds."""
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def start_walk(cursor: JsonValue | None, lookback_seconds: float) -> ModstampWalk:
    """Where a read after `cursor` starts (None: everything).

    That is the look-back before the previous read's start, or the stored time if earlier:
    what that read could not see yet is stamped after its start less the look-back. A cursor
    without a read start (stored before reads kept it) looks back from its time. Cursors stored
    before reads looked back also list the ids read at that time; the look-back reads those
    again, so they are not needed.
    """
    if cursor is None:
        return ModstampWalk(None, None)
    try:
        stored = parse_datetime(cursor["modstamp"])
        started = parse_datetime(cursor["started"]) if "started" in cursor else None
    except (KeyError, TypeError, ValueError) as error:
        raise FatalConnectorError(f"not a Salesforce cursor: {cursor!r}") from error
    lookback = timedelta(seconds=lookback_seconds)
    return ModstampWalk(stored, resume_at(stored, started, lambda time: time - lookback))


def walk_cursor(walk: ModstampWalk, started: datetime | None) -> JsonValue:
    """The cursor to store after what `walk` took in a read begun at `started` (None: unknown);
    None before anything was read."""
    mark = walk.mark
    if mark is None:
        return None
    cursor: dict[str, JsonValue] = {"modstamp": soql_datetime(mark)}
    if started is not None:
        cursor["started"] = soql_datetime(started)
    return cursor


def _soql(sobject: str, fields: list[str], walk: ModstampWalk) -> str:
    """The query reading `sobject` from where `walk` stands, in walk order."""
    where = f" WHERE {CURSOR_FIELD} >= {soql_datetime(walk.at)}" if walk.at is not None else ""
    return f"SELECT {', '.join(fields)} FROM {sobject}{where} ORDER BY {CURSOR_FIELD}, Id"


def _rest_datetime(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}+0000"


def _from_csv(value: str, field_type: str) -> Any:
    """A Bulk 2.0 CSV cell as the REST API would have given it."""
    if value == "":
        return None
    if field_type == "boolean":
        return value == "true"
    if field_type == "datetime":
        return _rest_datetime(parse_datetime(value))
    if field_type == "int":
        return int(value)
    if field_type in ("double", "currency", "percent"):
        return float(value)
    return value


def page_after(
    walk: ModstampWalk,
    rows: list[dict[str, Any]],
    location: Callable[[str], str],
    started: datetime | None,
) -> Page | None:
    """The page of `rows` this read has not taken yet (None if none); moves the walk on.

    `rows` come ordered by (SystemModstamp, Id), starting at or after the walk's time.
    `location` gives a record's URL when the row has no `attributes` (Bulk 2.0 rows).
    `started` is when this read began, less the clock skew, for the cursor.
    """
    records: list[RawRecord] = []
    deleted: list[str] = []
    taken: list[tuple[str, datetime]] = []
    for row in rows:
        attributes = row.pop("attributes", None) or {}
        record_id = str(row["Id"])
        modstamp = parse_datetime(str(row[CURSOR_FIELD]))
        if not walk.fresh(record_id, modstamp):
            continue
        taken.append((record_id, modstamp))
        if row["IsDeleted"]:
            deleted.append(record_id)
        else:
            records.append(
                RawRecord(payload=row, location=attributes.get("url") or location(record_id))
            )
    if not taken:
        return None
    walk.took(taken)
    return Page(records=records, cursor=walk_cursor(walk, started), deleted_ids=deleted)


class SalesforceSource:
    """Reads each configured object as a stream of the same name."""

    def __init__(self, client: SalesforceClient, *, clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.options = client.options
        self._clock = clock

    def streams(self) -> list[str]:
        """The configured objects."""
        return list(self.options.objects)

    def _fields(self, sobject: str) -> tuple[list[str], dict[str, str]]:
        types = self.client.describe_fields(sobject)
        wanted = list(self.options.fields.get(sobject, ())) or list(types)
        unknown = [name for name in wanted if name not in types]
        if unknown:
            raise FatalConnectorError(f"{sobject} has no field(s) {', '.join(unknown)}")
        return [*_REQUIRED, *(f for f in wanted if f not in _REQUIRED)], types

    def read(self, stream: str, cursor: JsonValue | None) -> Iterator[Page]:
        """Pages of `stream` after `cursor` (None: everything), deleted records included."""
        if stream not in self.options.objects:
            raise FatalConnectorError(f"{stream} is not one of the configured objects")
        started = datetime.fromtimestamp(self._clock(), UTC) - CLOCK_SKEW
        walk = start_walk(cursor, self.options.lookback_seconds)
        fields, types = self._fields(stream)
        if walk.at is None and self._count(stream) > self.options.bulk_query_threshold:
            pages: Iterable[list[dict[str, Any]]] = self._bulk_pages(
                _soql(stream, fields, walk), types
            )
        else:
            pages = self._rest_pages(stream, fields, walk)
        for rows in pages:
            page = page_after(walk, rows, self._location(stream), started)
            if page is not None:
                yield page

    def _count(self, sobject: str) -> int:
        return int(self.client.query(f"SELECT COUNT() FROM {sobject}", False)["totalSize"])

    def _rest_pages(
        self, stream: str, fields: list[str], walk: ModstampWalk
    ) -> Iterator[list[dict[str, Any]]]:
        """The query's pages; `walk` must have moved past each page before the next is asked.

        Salesforce forgets a query locator once it served the last page (so a retry of a page
        whose answer was lost finds it gone), after some idle minutes, and when the user opens
        too many: then the query runs again from `walk`, which starts it exactly after the
        rows already taken. A second loss before any progress is fatal: it would loop.
        """
        result = self.client.query(_soql(stream, fields, walk), include_deleted=True)
        restarted_at: tuple[datetime | None, int] | None = None
        while True:
            yield [dict(record) for record in result["records"]]
            if result["done"]:
                return
            try:
                result = self.client.query_more(result["nextRecordsUrl"])
            except QueryLocatorLost:
                here = (walk.at, len(walk.taken_at))
                if here == restarted_at:
                    raise
                restarted_at = here
                log.info(
                    "salesforce.query_restarted", sobject=stream, cause="INVALID_QUERY_LOCATOR"
                )
                result = self.client.query(_soql(stream, fields, walk), include_deleted=True)

    def _bulk_pages(self, soql: str, types: Mapping[str, str]) -> Iterator[list[dict[str, Any]]]:
        for text in self.client.bulk_query(soql, include_deleted=True):
            yield [
                {name: _from_csv(value, types.get(name, "string")) for name, value in row.items()}
                for row in csv.DictReader(io.StringIO(text))
            ]

    def _location(self, sobject: str) -> Callable[[str], str]:
        prefix = f"/services/data/v{self.options.api_version}/sobjects/{sobject}/"
        return lambda record_id: prefix + record_id

    def close(self) -> None:
        """Release the HTTP connections."""
        self.client.close()
