"""Web and app events: the source that reads what the ingest endpoint acknowledged.

The endpoint (`syncd/ingest/`, started by the daemon) appends every acknowledged message to
the store's `ingest_spool`; this source reads that spool incrementally, one stream per message
type, so events map, store and unify like any other source's records.

The source needs the store's URL: `options.store_url`, or else the one the engine hands every
connector in its `ConnectorContext`.
"""

from __future__ import annotations

from datetime import timedelta

from connectors.ingest.options import MESSAGE_TYPES, IngestOptions
from connectors.ingest.source import IngestSource
from syncd.config import anchor_sqlite_path
from syncd.connector import ConnectorContext, ConnectorSpec, Source
from syncd.errors import ConfigError, Problem
from syncd.store.db import open_engine


def store_url(context: ConnectorContext) -> str:
    """The store URL an ingest source reads its spool from; ConfigError when there is none."""
    options = context.options
    if not isinstance(options, IngestOptions):
        raise TypeError(f"{context.name}: expected IngestOptions, got {type(options).__name__}")
    given = options.store_url
    if given is None:
        if context.store_url is None:
            raise ConfigError(
                [
                    Problem(
                        f"sources.{context.name}",
                        "options.store_url",
                        "the ingest source does not know the store holding its spool",
                        "set options.store_url",
                    )
                ]
            )
        return context.store_url
    url = given if isinstance(given, str) else given.resolve(f"sources.{context.name}.store_url")
    return anchor_sqlite_path(url, context.config_dir)


def _make_source(context: ConnectorContext) -> Source:
    options = context.options
    if not isinstance(options, IngestOptions):
        raise TypeError(f"{context.name}: expected IngestOptions, got {type(options).__name__}")
    engine = open_engine(store_url(context))
    retention = None if context.read_only else timedelta(hours=options.spool_retention_hours)
    return IngestSource(
        engine, options.streams, options.page_size, retention=retention, owns_engine=True
    )


def _declared_streams(options: IngestOptions) -> list[str]:
    return list(options.streams)


CONNECTOR = ConnectorSpec(
    kind="ingest",
    options_model=IngestOptions,
    make_source=_make_source,
    declared_streams=_declared_streams,
    local_reads=True,
)

__all__ = [
    "CONNECTOR",
    "MESSAGE_TYPES",
    "IngestOptions",
    "IngestSource",
    "store_url",
]
