"""Offline files: a drop folder of CSV and JSON-lines files."""

from __future__ import annotations

from syncd.connector import ConnectorContext, ConnectorSpec, Source

from .options import FilesOptions
from .source import FilesSource, describe_cursor


def make_source(context: ConnectorContext) -> Source:
    options = context.options
    assert isinstance(options, FilesOptions)
    folder = context.config_dir / options.folder
    return FilesSource(folder, options)


def declared_streams(options: FilesOptions) -> list[str]:
    return sorted(options.streams)


CONNECTOR = ConnectorSpec(
    kind="files",
    options_model=FilesOptions,
    make_source=make_source,
    declared_streams=declared_streams,
    describe_cursor=describe_cursor,
    local_reads=True,
)

__all__ = ["CONNECTOR", "FilesOptions", "FilesSource"]
