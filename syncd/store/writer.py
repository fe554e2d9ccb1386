"""Writing one page of mapped records or events, in the caller's transaction.

A record whose content hash is unchanged is not rewritten and marks nothing for the identity
stage, so a re-pull of unchanged data costs one indexed read per record and no writes.
"""

from __future__ import annotations

import hashlib
import json
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from syncd.jsontext import storable
from syncd.mapping.compiler import MappedEvent, MappedRecord
from syncd.mapping.transforms import format_timestamp
from syncd.store.db import Bulk, storable_json, to_json
from syncd.store.graph import identifiers_of
from syncd.store.marks import waiting_generation
from syncd.store.tables import encode_ids, stable_id
from syncd.timeutil import utcnow

DELETED_HASH = "deleted"


def identifier_id(kind: str, value: str) -> int:
    return stable_id(kind, value)


def record_id(source: str, stream: str, external_id: str) -> int:
    return stable_id(source, stream, external_id)


@dataclass
class WriteCounts:
    """What one page did to the store."""

    new: int = 0
    changed: int = 0
    unchanged: int = 0
    deleted: int = 0
    events_new: int = 0
    events_seen: int = 0

    def add(self, other: WriteCounts) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


Identified = tuple[tuple[int, str, str], ...]
"""Identifiers as (id, kind, value)."""


class StagedRecord(NamedTuple):
    """A mapped record ready to store: ids, hash and JSON already computed.

    Staging runs in the mapping workers, so the process that writes does only database work.
    `hash` decides whether the record changed: its raw payload and its mapping's version.
    A named tuple, because pages of them cross from the workers by pickle, which is several
    times cheaper for a tuple than for a dataclass.
    """

    id: int
    external_id: str
    updated_at: str | None
    deleted: bool
    hash: str
    payload_json: str
    traits_json: str
    notes_json: str | None
    identifier_ids: str | None
    identifiers: Identified


@dataclass
class Unchanged:
    """Records of a page that staging did not map, because the store held their content.

    Flat columns (id, content hash, position in the page), so a re-read of a million
    unchanged records crosses back from the workers as a few arrays. An id here is the last
    occurrence of that record in its page and has no mapped version beside it.
    """

    ids: array[int] = field(default_factory=lambda: array("q"))
    hashes: list[str] = field(default_factory=list)
    positions: array[int] = field(default_factory=lambda: array("q"))

    def add(self, key: int, digest: str, position: int) -> None:
        self.ids.append(key)
        self.hashes.append(digest)
        self.positions.append(position)

    def __len__(self) -> int:
        return len(self.ids)

    def __iter__(self) -> Iterator[tuple[int, str, int]]:
        return zip(self.ids, self.hashes, self.positions, strict=True)


def stored_content(
    fingerprint: str, payload: Mapping[str, Any]
) -> tuple[Mapping[str, Any], str, str]:
    """A record's payload as the store keeps it (`db.storable_json`), its JSON, and the hash
    that says whether it changed."""
    kept, payload_json = storable_json(payload)
    digest = hashlib.sha1(
        f"{fingerprint}\x1f{payload_json}".encode(), usedforsecurity=False
    ).hexdigest()
    return kept, payload_json, digest


def content_hash(fingerprint: str, payload: Mapping[str, Any]) -> tuple[str, str]:
    """A record's payload as stored JSON, and the hash that says whether it changed."""
    _, payload_json, digest = stored_content(fingerprint, payload)
    return payload_json, digest


def identified(pairs: Iterable[tuple[str, str]]) -> Identified:
    return tuple((identifier_id(kind, value), kind, value) for kind, value in pairs)


def listed_ids(identifiers: Identified) -> str | None:
    """The `identifier_ids` a node carrying these identifiers stores on its row."""
    return encode_ids(sorted({key for key, _, _ in identifiers}))


def stage_record(
    source: str, stream: str, mapped: MappedRecord, payload_json: str, digest: str
) -> StagedRecord:
    identifiers = () if mapped.deleted else identified(mapped.identifiers)
    return StagedRecord(
        record_id(source, stream, mapped.external_id),
        mapped.external_id,
        mapped.updated_at,
        mapped.deleted,
        digest,
        payload_json,
        to_json(mapped.traits),
        to_json(mapped.notes) if mapped.notes else None,
        listed_ids(identifiers),
        identifiers,
    )


def stored_hashes(bulk: Bulk, ids: Iterable[int]) -> dict[int, str]:
    """The content hash of each of `ids` the store has a record for."""
    return {
        int(row[0]): str(row[1])
        for row in bulk.select_in(
            "SELECT id, content_hash FROM source_record WHERE id IN ({in})", ids
        )
    }


class WrittenIds:
    """The record ids one pull has written, as a Bloom filter: "maybe" or "certainly not".

    A fixed 2 MB whatever the pull's size; a false "maybe" only costs one more read (one in
    70 after a million ids, one in 10 after three million).
    `stream_was_empty`: the stream held no record when the pull began, so a record this pull
    has not written is certainly new, and a first load reads no stored hash.
    """

    SLICE = 24
    MASK = (1 << SLICE) - 1

    def __init__(self, stream_was_empty: bool = False) -> None:
        self._bits = bytearray((self.MASK + 1) // 8)
        self.stream_was_empty = stream_was_empty

    def may_be_stored(self, key: int) -> bool:
        return not self.stream_was_empty or key in self

    # Ids are uniform 64-bit hashes already: two slices of one are two independent hashes.
    # Written out rather than looped over: this runs for every record a pull writes.
    def add(self, key: int) -> None:
        low, high = key & self.MASK, (key >> self.SLICE) & self.MASK
        self._bits[low >> 3] |= 1 << (low & 7)
        self._bits[high >> 3] |= 1 << (high & 7)

    def __contains__(self, key: int) -> bool:
        low, high = key & self.MASK, (key >> self.SLICE) & self.MASK
        return bool(
            self._bits[low >> 3] & (1 << (low & 7)) and self._bits[high >> 3] & (1 << (high & 7))
        )


def insert_identifiers(bulk: Bulk, identifiers: list[tuple[int, str, str]]) -> None:
    """Identifier rows, once each, in key order: ids are hashes, and inserting them sorted
    walks the key's B-tree once instead of jumping across it for every row."""
    identifiers.sort()
    unique = []
    last = None
    for row in identifiers:
        if row[0] != last:
            unique.append(row)
            last = row[0]
    bulk.insert_ignore("identifier", ("id", "kind", "value"), unique, ("id",))


class PageWriter:
    """Stores mapped records, events, deletions, quarantined rows and cursors."""

    def __init__(self, bulk: Bulk, run_id: str, written: WrittenIds | None = None) -> None:
        self.bulk = bulk
        self.run_id = run_id
        self.written = written

    def _insert_edges(self, carriers: Iterable[tuple[int, Identified]]) -> None:
        """Identity edges of records (or links), `(owner id, its identifiers)`, with the
        identifiers; in key order, as `insert_identifiers` explains."""
        identifiers: list[tuple[int, str, str]] = []
        links: list[tuple[int, int]] = []
        for owner, carried in carriers:
            identifiers.extend(carried)
            links.extend((identifier, owner) for identifier, _, _ in carried)
        insert_identifiers(self.bulk, identifiers)
        links.sort()
        key = ("identifier_id", "record_id")
        self.bulk.insert_ignore("record_identifier", key, links, key)

    def _existing(self, table: str, ids: Iterable[int], condition: str = "") -> set[int]:
        """Which of `ids` are already rows of `table` (and meet `condition`)."""
        sql = f"SELECT id FROM {table} WHERE id IN ({{in}}) {condition}"
        return {int(row[0]) for row in self.bulk.select_in(sql, ids)}

    def _drop_edges(self, records: Sequence[int]) -> None:
        """Remove the identity edges of some records, found through their identifier lists."""
        self.bulk.executemany(
            self.bulk.sql(
                "DELETE FROM record_identifier WHERE identifier_id = ? AND record_id = ?"
            ),
            sorted(
                (identifier, record)
                for record, identifiers in identifiers_of(self.bulk, records).items()
                for identifier in identifiers
            ),
        )

    def write_records(
        self,
        source: str,
        stream: str,
        staged: Sequence[StagedRecord],
        unchanged: Unchanged | None = None,
        remap: Callable[[int], StagedRecord] | None = None,
    ) -> WriteCounts:
        """Upsert records whose content changed; unchanged ones cost no write.

        Staging read the hashes of the `unchanged` records from the store already; only one
        this pull wrote since may have changed under it: that one is mapped after all, by
        `remap(position)`.
        """
        latest = {item.id: item for item in staged}
        counts = WriteCounts()
        if unchanged:
            counts.unchanged += len(unchanged)
            doubtful = [
                entry for entry in unchanged if self.written is None or entry[0] in self.written
            ]
            now = stored_hashes(self.bulk, [key for key, _, _ in doubtful])
            for key, digest, position in doubtful:
                if now.get(key) != digest:
                    assert remap is not None, "pages with unmapped records come with their remap"
                    counts.unchanged -= 1
                    latest[key] = remap(position)
        written = self.written
        existing = stored_hashes(
            self.bulk, [key for key in latest if written is None or written.may_be_stored(key)]
        )
        rows = []
        stored: list[StagedRecord] = []
        generation = waiting_generation(self.bulk)
        for key, item in latest.items():
            previous = existing.get(key)
            if previous == item.hash:
                counts.unchanged += 1
                continue
            if previous is None:
                counts.new += 1
            else:
                counts.changed += 1
            stored.append(item)
            rows.append(
                (
                    key,
                    source,
                    stream,
                    item.external_id,
                    "record",
                    item.updated_at,
                    item.deleted,
                    item.hash,
                    item.payload_json,
                    item.traits_json,
                    item.notes_json,
                    generation,
                    self.run_id,
                    item.identifier_ids,
                )
            )
        self._drop_edges([row[0] for row in rows if row[0] in existing])
        rows.sort(key=lambda row: row[0])
        self._remember(row[0] for row in rows)
        self.bulk.upsert(
            "source_record",
            (
                "id",
                "source",
                "stream",
                "external_id",
                "node_kind",
                "updated_at",
                "deleted",
                "content_hash",
                "payload",
                "traits",
                "notes",
                "unify_generation",
                "last_run",
                "identifier_ids",
            ),
            rows,
            ("id",),
        )
        self._insert_edges((item.id, item.identifiers) for item in stored)
        return counts

    def delete_records(self, source: str, stream: str, external_ids: Iterable[str]) -> int:
        """Mark records deleted upstream; they leave the identity graph at the next unify."""
        ids = [record_id(source, stream, external_id) for external_id in external_ids]
        live = sorted(self._existing("source_record", ids, f"AND deleted = {self.bulk.false}"))
        self._drop_edges(live)
        self.bulk.execute_in(
            f"UPDATE source_record SET deleted = {self.bulk.true}, unify_generation = ?, "
            f"content_hash = ?, last_run = ?, identifier_ids = NULL WHERE id IN ({{in}})",
            live,
            before=(waiting_generation(self.bulk), DELETED_HASH, self.run_id),
        )
        self._remember(live)
        return len(live)

    def _remember(self, ids: Iterable[int]) -> None:
        if self.written is not None:
            for key in ids:
                self.written.add(key)

    def write_events(self, source: str, stream: str, events: Sequence[MappedEvent]) -> WriteCounts:
        """Append new events (a seen event id is skipped) and the links their identifiers make."""
        by_id = {stable_id(source, stream, event.event_id): event for event in events}
        seen = self._existing("event", by_id)
        fresh = {key: event for key, event in by_id.items() if key not in seen}
        self.bulk.insert_ignore(
            "event",
            (
                "id",
                "source",
                "stream",
                "event_id",
                "name",
                "occurred_at",
                "properties",
                "needs_profile",
                "run_id",
            ),
            [
                (
                    key,
                    source,
                    stream,
                    e.event_id,
                    e.name,
                    e.occurred_at,
                    Bulk.encode(e.properties),
                    True,
                    self.run_id,
                )
                for key, e in fresh.items()
            ],
            ("id",),
        )
        carried = {key: identified(e.identifiers) for key, e in fresh.items()}
        insert_identifiers(self.bulk, [row for rows in carried.values() for row in rows])
        key = ("event_id", "identifier_id")
        self.bulk.insert_ignore(
            "event_identifier",
            key,
            sorted((event, row[0]) for event, rows in carried.items() for row in rows),
            key,
        )
        self._write_links(source, stream, fresh.values())
        return WriteCounts(events_new=len(fresh), events_seen=len(seen))

    def _write_links(self, source: str, stream: str, events: Iterable[MappedEvent]) -> None:
        """Identifiers seen together on one event join the identity graph as a link node."""
        links: dict[int, list[tuple[str, str]]] = {}
        for event in events:
            if len(event.identifiers) > 1:
                pairs = sorted(event.identifiers)
                links[stable_id("link", *(f"{k}:{v}" for k, v in pairs))] = pairs
        if not links:
            return
        known = self._existing("source_record", links)
        new_links = {key: identified(pairs) for key, pairs in links.items() if key not in known}
        generation = waiting_generation(self.bulk)
        self.bulk.insert_ignore(
            "source_record",
            (
                "id",
                "source",
                "stream",
                "external_id",
                "node_kind",
                "deleted",
                "content_hash",
                "payload",
                "traits",
                "unify_generation",
                "last_run",
                "identifier_ids",
            ),
            [
                (
                    key,
                    source,
                    stream,
                    f"link:{key & 0xFFFFFFFFFFFFFFFF:016x}",
                    "link",
                    False,
                    "link",
                    Bulk.encode({}),
                    Bulk.encode({}),
                    generation,
                    self.run_id,
                    listed_ids(identifiers),
                )
                for key, identifiers in new_links.items()
            ],
            ("id",),
        )
        self._insert_edges(new_links.items())

    def quarantine(
        self, source: str, stream: str, items: Sequence[tuple[str, str, Mapping[str, Any]]]
    ) -> None:
        """Keep records that failed, with where they came from and why."""
        now = format_timestamp(utcnow())
        self.bulk.executemany(
            self.bulk.sql(
                "INSERT INTO quarantine (run_id, source, stream, location, reason, payload, "
                "created_at) VALUES (?, ?, ?, ?, ?, "
                + ("CAST(? AS jsonb)" if self.bulk.dialect == "postgresql" else "?")
                + ", ?)"
            ),
            [
                # A location names where the record came from: a file name is whatever bytes
                # the disk had, an id whatever the source sent.
                (
                    self.run_id,
                    source,
                    stream,
                    storable(location),
                    storable(reason),
                    Bulk.encode(dict(payload)),
                    now,
                )
                for location, reason, payload in items
            ],
        )

    def set_cursor(self, source: str, stream: str, value: Any) -> None:
        self.bulk.upsert(
            "cursor",
            ("source", "stream", "value", "updated_at"),
            [(source, stream, json.dumps(value), format_timestamp(utcnow()))],
            ("source", "stream"),
        )


def load_cursor(bulk: Bulk, source: str, stream: str) -> Any:
    """The stored cursor of a stream, None when it was never pulled."""
    row = bulk.connection.exec_driver_sql(
        bulk.sql("SELECT value FROM cursor WHERE source = ? AND stream = ?"), (source, stream)
    ).first()
    if row is None or row[0] is None:
        return None
    return bulk.decode_any(row[0])
