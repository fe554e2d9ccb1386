"""The profile store's tables (SQLModel). Hot paths use their Core tables for bulk statements.

Record and identifier ids are 64-bit hashes of their natural keys (see `stable_id`), so a
mapping worker can compute every key and edge without asking the database, and the same
record gets the same id in every store.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, Index, Integer, String, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

JsonColumn = JSON().with_variant(JSONB(), "postgresql")
# For link tables and the spool: on SQLite an INTEGER PRIMARY KEY is the rowid itself.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def stable_id(*parts: str) -> int:
    """A signed 64-bit id from a natural key; collisions are negligible below billions of rows."""
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _hash_pk() -> Any:
    # BIGINT, not SQLite's INTEGER rowid: rows are then stored in arrival order and the hash
    # lives in a small separate index, instead of every insert landing on a random page.
    return Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))


class SourceRecord(SQLModel, table=True):
    """The latest version of every pulled object and its mapped traits.

    node_kind is 'record' for a source object and 'link' for the identifiers an event saw
    together (an anonymous id with a user id): both are nodes of the identity graph.

    A row is written when its object changes upstream, and only then: what resolution
    derives from it (its profile, that it has been resolved) lives in `RecordProfile` and
    `UnifyState`, so a resolution never rewrites the largest table of the store.
    """

    __tablename__ = "source_record"
    __table_args__ = (
        Index("ix_source_record_generation", "unify_generation"),
        Index("ix_source_record_stream", "source", "stream"),
    )

    id: int = _hash_pk()
    source: str
    stream: str
    external_id: str
    node_kind: str = "record"
    updated_at: str | None = None
    deleted: bool = False
    content_hash: str
    payload: dict[str, Any] = Field(sa_column=Column(JsonColumn, nullable=False))
    traits: dict[str, Any] = Field(sa_column=Column(JsonColumn, nullable=False))
    notes: list[str] | None = Field(default=None, sa_column=Column(JsonColumn))
    unify_generation: int = Field(
        default=0, sa_column=Column(BigInteger, nullable=False, server_default="0")
    )
    """The resolution this version of the row waits for: a row written after resolution G
    (`UnifyState.resolved`) carries G + 1, so the next resolution finds it and, by moving
    `resolved` on to G + 1, marks it resolved without writing it again."""
    last_run: str
    identifier_ids: str | None = None
    """The ids of the identifiers it carries, as `encode_ids` writes them: the one way from a
    record to its edges, so that the edges need no second index keyed by record."""


def encode_ids(ids: Iterable[int]) -> str | None:
    text = ",".join(str(key) for key in ids)
    return text or None


def decode_ids(text: str | None) -> list[int]:
    return [int(key) for key in text.split(",")] if text else []


class RecordProfile(SQLModel, table=True):
    """The profile of each node (record or link) as the last resolution left it: a record
    deleted since keeps its row until the next one."""

    __tablename__ = "record_profile"
    __table_args__ = (
        Index("ix_record_profile_profile", "profile_id"),
        {"sqlite_with_rowid": False},
    )

    record_id: int = Field(sa_column=Column(BigId, primary_key=True, autoincrement=False))
    profile_id: str = Field(sa_column=Column(String, nullable=False))


class UnifyState(SQLModel, table=True):
    """One row: the generation of the last resolution (see `SourceRecord.unify_generation`),
    and the time the profiles were last refreshed at."""

    __tablename__ = "unify_state"

    id: int = Field(default=1, sa_column=Column(Integer, primary_key=True, autoincrement=False))
    resolved: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    profiles_as_of: str | None = None
    """The `now` of the last profile refresh: events that left a window of days since then
    are what the next refresh looks for (`profiles.leaving_windows`)."""


class Identifier(SQLModel, table=True):
    """A normalized identifier value of one kind."""

    __tablename__ = "identifier"

    id: int = _hash_pk()
    kind: str
    value: str


class RecordIdentifier(SQLModel, table=True):
    """An edge of the identity graph: a record (or link) carries an identifier.

    Keyed by identifier first, in one B-tree: from an identifier to its records is a range of
    the key; from a record to its identifiers goes through `SourceRecord.identifier_ids`.
    """

    __tablename__ = "record_identifier"
    __table_args__ = ({"sqlite_with_rowid": False},)

    identifier_id: int = Field(sa_column=Column(BigId, primary_key=True, autoincrement=False))
    record_id: int = Field(sa_column=Column(BigId, primary_key=True, autoincrement=False))


class Event(SQLModel, table=True):
    """Append-only activity, de-duplicated by its id (a hash of source, stream, event id)."""

    __tablename__ = "event"
    __table_args__ = (Index("ix_event_pending", "needs_profile"),)

    id: int = _hash_pk()
    source: str
    stream: str
    event_id: str
    name: str
    occurred_at: str
    properties: dict[str, Any] = Field(sa_column=Column(JsonColumn, nullable=False))
    needs_profile: bool = True
    run_id: str


class EventIdentifier(SQLModel, table=True):
    """An event hangs off identifiers, so events seen before a login join the person afterwards."""

    __tablename__ = "event_identifier"
    __table_args__ = (
        Index("ix_event_identifier_identifier", "identifier_id"),
        {"sqlite_with_rowid": False},
    )

    event_id: int = Field(sa_column=Column(BigId, primary_key=True, autoincrement=False))
    identifier_id: int = Field(sa_column=Column(BigId, primary_key=True, autoincrement=False))


class Profile(SQLModel, table=True):
    """A unified person: traits live in JSON so that a new trait needs no migration."""

    __tablename__ = "profile"

    id: str = Field(primary_key=True)
    traits: dict[str, Any] = Field(sa_column=Column(JsonColumn, nullable=False))
    traits_hash: str
    record_count: int
    updated_at: str
    run_id: str


class MergeLog(SQLModel, table=True):
    """Every merge, split and refused merge, with the identifier and records involved."""

    __tablename__ = "merge_log"
    __table_args__ = (
        Index("ix_merge_log_record_a", "record_a"),
        Index("ix_merge_log_record_b", "record_b"),
        Index("ix_merge_log_profile", "profile_id"),
    )

    id: int | None = Field(default=None, sa_column=Column(Integer, primary_key=True))
    run_id: str
    at: str
    action: str
    profile_id: str | None
    to_profile_id: str | None = None
    identifier_id: int | None = Field(default=None, sa_column=Column(BigInteger))
    record_a: int | None = Field(default=None, sa_column=Column(BigInteger))
    record_b: int | None = Field(default=None, sa_column=Column(BigInteger))
    reason: str = Field(sa_column=Column(Text, nullable=False))


class Cursor(SQLModel, table=True):
    """Where each source stream resumes; advanced in the transaction that commits its records."""

    __tablename__ = "cursor"

    source: str = Field(primary_key=True)
    stream: str = Field(primary_key=True)
    value: Any = Field(sa_column=Column(JsonColumn))
    updated_at: str


class Quarantine(SQLModel, table=True):
    """A record that could not be mapped or stored, with the reason; replayable."""

    __tablename__ = "quarantine"
    __table_args__ = (Index("ix_quarantine_open", "replayed_at"),)

    id: int | None = Field(default=None, sa_column=Column(Integer, primary_key=True))
    run_id: str
    source: str
    stream: str
    location: str
    reason: str
    payload: Any = Field(sa_column=Column(JsonColumn))
    created_at: str
    replayed_at: str | None = None


class SyncRun(SQLModel, table=True):
    """One row per run, with its counts and outcome."""

    __tablename__ = "sync_run"

    id: str = Field(primary_key=True)
    kind: str
    started_at: str
    finished_at: str | None = None
    status: str
    counts: dict[str, Any] = Field(sa_column=Column(JsonColumn, nullable=False))
    error: str | None = None


class IngestSpool(SQLModel, table=True):
    """Messages the ingest endpoint acknowledged, in commit order, for the ingest source.

    `id` only grows and rows are written by one writer at a time, so a reader that has seen
    every id up to N has seen every message committed before it; `message_id` is unique, so
    a message an SDK sends again is stored once.
    """

    __tablename__ = "ingest_spool"
    __table_args__ = (Index("ix_ingest_spool_type", "type", "id"),)

    id: int | None = Field(
        default=None, sa_column=Column(BigId, primary_key=True, autoincrement=True)
    )
    message_id: str = Field(sa_column=Column(Text, nullable=False, unique=True))
    type: str
    received_at: str
    message: str = Field(sa_column=Column(Text, nullable=False))


class PushLedger(SQLModel, table=True):
    """Per destination, target and profile: the last state the destination acknowledged.

    `state_hash` is set on OK and cleared on RETRY (the write may have landed, so what the
    destination holds is unknown): a state that failed is planned again; `rejected_hash`
    remembers a state the destination refused, so that exact state is not sent again until
    the profile changes. `match_value` is the key the last state went with: a profile
    matched by identifier keeps it while it still has that value, so the destination's
    record keeps its key. `attempts` counts failures since the last OK.
    """

    __tablename__ = "push_ledger"

    destination: str = Field(primary_key=True)
    target: str = Field(primary_key=True)
    profile_id: str = Field(primary_key=True)
    state_hash: str | None = None
    rejected_hash: str | None = None
    match_value: str | None = None
    external_id: str | None = None
    attempts: int = 0
    last_outcome: str
    last_error: str | None = None
    updated_at: str
    run_id: str
