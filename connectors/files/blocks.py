"""Pages of a file handed on as the lines they span, parsed into records where they are used.

The process that reads a file only finds where each page ends, with csv's own parser, so a
quoted field that spans lines is never cut; the rows become dicts in the mapping worker that
maps them. A page of lines crosses to a worker for a small part of what its dicts cost to
pickle, and the process that writes the store (the busiest one in a large load) no longer
builds a dict per row.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, overload

from syncd.connector import RawRecord

# csv refuses a field over 131,072 characters by default, which stopped a whole file at one
# long cell (a pasted note, an embedded image); the file's size bounds a field anyway.
# Process-wide, so the mapping workers, which import this module, parse as the reader cut.
csv.field_size_limit(2**31 - 1)

Row = tuple[int, dict[str, Any] | None, str | None]
"""(line number, the row as a dict or None, why it could not be read)."""


def is_blank(row: Sequence[str]) -> bool:
    return not row or (len(row) == 1 and not row[0].strip())


def csv_rows(
    lines: Iterable[str], header: Sequence[str], delimiter: str, first_line: int
) -> Iterator[Row]:
    """The rows of lines that begin a record (`first_line` is the first one's number), each
    with the number of its first line: where a reader finds it."""
    reader = csv.reader(lines, delimiter=delimiter)
    read = 0
    for row in reader:
        line, read = first_line + read, reader.line_num
        if is_blank(row):
            continue
        if len(row) != len(header):
            yield line, None, f"expected {len(header)} columns, found {len(row)}"
            continue
        yield line, dict(zip(header, row, strict=True)), None


def jsonl_rows(lines: Iterable[str], first_line: int) -> Iterator[Row]:
    for line, text in enumerate(lines, start=first_line):
        if not text.strip():
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError as error:
            yield line, None, f"invalid JSON: {error.msg} at column {error.colno}"
            continue
        except RecursionError:
            yield line, None, "invalid JSON: nested too deeply"
            continue
        if not isinstance(value, dict):
            yield line, None, "a JSON line must be an object"
            continue
        yield line, value, None


class FileBlock(Sequence[RawRecord]):
    """The records of consecutive whole lines of one file, parsed on first use.

    `header` is the CSV header (None for JSON lines). Pickling carries the lines, never the
    parsed records, so a block sent to a worker is parsed there.
    """

    __slots__ = ("_records", "delimiter", "file_name", "first_line", "header", "lines")

    def __init__(
        self,
        file_name: str,
        first_line: int,
        lines: Sequence[str],
        header: Sequence[str] | None = None,
        delimiter: str = ",",
    ) -> None:
        self.file_name = file_name
        self.first_line = first_line
        self.lines = tuple(lines)
        self.header = None if header is None else tuple(header)
        self.delimiter = delimiter
        self._records: list[RawRecord] | None = None

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            FileBlock,
            (self.file_name, self.first_line, self.lines, self.header, self.delimiter),
        )

    def __repr__(self) -> str:
        # Never the lines: they hold personal data.
        return f"FileBlock({self.file_name}, {len(self.lines)} lines from {self.first_line})"

    @property
    def records(self) -> list[RawRecord]:
        if self._records is None:
            rows = (
                jsonl_rows(self.lines, self.first_line)
                if self.header is None
                else csv_rows(self.lines, self.header, self.delimiter, self.first_line)
            )
            self._records = [
                RawRecord(payload or {}, f"{self.file_name}:{line}", error)
                for line, payload, error in rows
            ]
        return self._records

    def __len__(self) -> int:
        return len(self.records)

    @overload
    def __getitem__(self, index: int) -> RawRecord: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[RawRecord]: ...

    def __getitem__(self, index: int | slice) -> RawRecord | Sequence[RawRecord]:
        return self.records[index]

    def __iter__(self) -> Iterator[RawRecord]:
        return iter(self.records)
