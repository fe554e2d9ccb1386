"""The typed options of the ingest source (and of the endpoint that fills its spool)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from syncd.connector import ConnectorOptions, EnvRef, database_url_without_secret

MessageType = Literal["identify", "track", "page", "screen", "group", "alias"]
MESSAGE_TYPES: tuple[MessageType, ...] = ("identify", "track", "page", "screen", "group", "alias")


class IngestOptions(ConnectorOptions):
    """Where the endpoint listens, which write keys it accepts, and how the spool is read.

    `write_keys` are environment-variable references (`[{ env = "WEB_WRITE_KEY" }]`); a key
    can be rotated by listing the old and the new one. `streams` are the message types read,
    one stream each. `store_url` is the store holding the spool; left out, it is the store of
    the config, which the engine hands over in the connector context.
    `max_commit_messages` and `max_pending_requests` bound one group commit and the queue of
    requests waiting for one (beyond it, the endpoint answers 503 with Retry-After).
    `spool_retention_hours`: how long a message stays in the spool once every source reading
    it has stored it; until then the spool also drops an SDK's retry of it by its messageId.
    Ten years (87,600 hours) at the most: that keeps every message.
    """

    write_keys: list[EnvRef] = Field(min_length=1)
    host: str = "127.0.0.1"
    port: int = Field(default=8787, ge=0, le=65535)
    streams: list[MessageType] = Field(default_factory=lambda: list(MESSAGE_TYPES), min_length=1)
    store_url: str | EnvRef | None = None
    page_size: int = Field(default=1000, ge=1, le=50_000)
    max_commit_messages: int = Field(default=5000, ge=1)
    max_pending_requests: int = Field(default=10_000, ge=1)
    spool_retention_hours: float = Field(default=168, ge=0, le=87_600)

    @field_validator("store_url")
    @classmethod
    def _no_password_in_file(cls, url: str | EnvRef | None) -> str | EnvRef | None:
        return database_url_without_secret(url, "store_url") if isinstance(url, str) else url

    @field_validator("streams")
    @classmethod
    def _distinct(cls, streams: list[MessageType]) -> list[MessageType]:
        if len(set(streams)) != len(streams):
            raise ValueError("a message type is listed twice")
        return streams
