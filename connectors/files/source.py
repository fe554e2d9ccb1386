"""A drop folder of CSV and JSON-lines files, each stream bound to a file name pattern.

- A file is read once: it is tracked by the hash of its content, so a file dropped twice,
  under any name, is not loaded twice (`run-once --full` reads everything again, and the
  store then rewrites nothing that did not change).
- A half-written file is never read: hidden and temporary names (`.x`, `*.tmp`, `*.part`)
  are skipped, and so is a file modified less than `settle_seconds` ago (logged, with its
  age, so that it is not taken for read); one rewritten while it was read is not done, and
  is read whole by the next run.
- Files are streamed in pages of `batch_size` rows, so memory stays flat whatever their size;
  the cursor after each page names the file and line, so a killed run resumes mid-file
  (that file first, whatever arrived meanwhile).
- A malformed row (wrong column count, bad JSON) comes back as a RawRecord with an error and
  its file and line; the rest of the file loads.
- A page is the lines it spans (`FileBlock`): reading only finds where pages end, and rows
  become records where the page is mapped, in a worker process on a large load.
"""

from __future__ import annotations

import csv
import hashlib
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import structlog

from syncd.connector import Header, JsonValue, Page
from syncd.errors import FatalConnectorError

from .blocks import FileBlock, is_blank
from .options import FilesOptions, StreamFiles

TEMPORARY_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".swp")

log = structlog.get_logger(__name__)


def file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _version(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


Cut = Iterator[tuple[FileBlock, int | None]]
"""Blocks of a file, each with the line number of its last record; None marks the last
block, which is always there (maybe empty) and says the file is done."""


def _cut(
    records: Iterator[tuple[int, bool]],
    taken: list[str],
    first: int,
    size: int,
    skip_to: int,
    block: Callable[[int, list[str]], FileBlock],
) -> Cut:
    """Blocks of `size` records from `records`, (last line, blank) of each record as it is
    read, while `taken` collects the lines read so far. Records up to line `skip_to` were
    loaded by an earlier run. A full block goes out at once, so a read that fails further
    on keeps it; the last block holds what is left."""
    count = 0
    for line, blank in records:
        if blank:
            continue
        if line <= skip_to:
            taken.clear()
            first = line + 1
            continue
        count += 1
        if count == size:
            yield block(first, taken), line
            taken.clear()
            first, count = line + 1, 0
    yield block(first, taken), None


def _taking(lines: Iterable[str], taken: list[str]) -> Iterator[str]:
    for line in lines:
        taken.append(line)
        yield line


def _csv_records(lines: Iterator[str], line: int, delimiter: str) -> Iterator[tuple[int, bool]]:
    """(last line, blank) of each record of `lines`, the first of which is line `line + 1`.

    A line without a quote is one whole record, as csv reads it: it is judged here, which
    costs a small part of running csv's reader over it (the reading process does this for
    every line of a load). A line with a quote, or too long to be sure csv takes its fields,
    goes back to one csv reader, which reads that record and as many lines as it spans.
    """
    longest = csv.field_size_limit()
    pushed: list[str] = []

    def fed() -> Iterator[str]:
        while True:
            if pushed:
                yield pushed.pop()
            elif (following := next(lines, None)) is None:
                return
            else:
                yield following

    reader = csv.reader(fed(), delimiter=delimiter)
    for text in lines:
        if '"' not in text and len(text) <= longest:
            line += 1
            yield line, delimiter not in text and not text.strip()
            continue
        pushed.append(text)
        before = reader.line_num
        row = next(reader)
        line += reader.line_num - before
        yield line, is_blank(row)


def _csv_blocks(path: Path, spec: StreamFiles, size: int, skip_to: int) -> Cut:
    with path.open(newline="", encoding=spec.encoding) as handle:
        taken: list[str] = []
        # csv reads a line only when its record needs it, so `taken` always ends with the
        # last line of the record just read.
        lines = _taking(handle, taken)
        header = csv.reader(lines, delimiter=spec.delimiter)
        # Blank lines before the header are skipped like any other; a file without even a
        # header is one empty block.
        names = [name.strip() for name in next((row for row in header if not is_blank(row)), [])]
        taken.clear()
        yield from _cut(
            _csv_records(lines, header.line_num, spec.delimiter),
            taken,
            header.line_num + 1,
            size,
            skip_to,
            lambda first, lines: FileBlock(path.name, first, lines, names, spec.delimiter),
        )


def _jsonl_blocks(path: Path, spec: StreamFiles, size: int, skip_to: int) -> Cut:
    with path.open(encoding=spec.encoding) as handle:
        taken: list[str] = []
        yield from _cut(
            ((line, not text.strip()) for line, text in enumerate(_taking(handle, taken), 1)),
            taken,
            1,
            size,
            skip_to,
            lambda first, lines: FileBlock(path.name, first, lines),
        )


def describe_cursor(cursor: JsonValue) -> str:
    """How many files are read, and where the file under way stands."""
    done = len((cursor or {}).get("done", []))
    said = f"{done} file{'' if done == 1 else 's'} read"
    current = (cursor or {}).get("current")
    if not current:
        return said
    # A cursor stored before it named its file has the file's content hash alone.
    name = current.get("name") or f"the file of hash {str(current.get('hash'))[:12]}"
    return f"{said}; {name} read up to line {current.get('line')}"


class FilesSource:
    """Source over a drop folder."""

    def __init__(self, folder: Path, options: FilesOptions, clock: Any = time.time) -> None:
        self.folder = folder
        self.options = options
        self._clock = clock

    def streams(self) -> Sequence[str]:
        return sorted(self.options.streams)

    def close(self) -> None:
        """Nothing to release: files are closed after each read."""

    def _ready_files(self, stream: str, spec: StreamFiles) -> list[Path]:
        if not self.folder.is_dir():
            return []
        now = self._clock()
        ready = []
        for path in self.folder.iterdir():
            name = path.name
            if name.startswith(".") or name.endswith(TEMPORARY_SUFFIXES) or not path.is_file():
                continue
            if not fnmatch(name, spec.pattern):
                continue
            age = now - path.stat().st_mtime
            if age < self.options.settle_seconds:
                # Said, not only done: a file just dropped in would otherwise look read.
                log.info(
                    "file left for a later run",
                    stream=stream,
                    file=name,
                    reason="too new",
                    modified_seconds_ago=round(age, 1),
                    settle_seconds=self.options.settle_seconds,
                )
                continue
            ready.append(path)
        return sorted(ready, key=lambda p: (p.stat().st_mtime, p.name))

    def read(self, stream: str, cursor: JsonValue | None) -> Iterator[Page]:
        spec = self.options.streams[stream]
        done: list[str] = list((cursor or {}).get("done", []))
        current = (cursor or {}).get("current") or {}
        # The version is taken before the hash: a file rewritten after it was hashed is seen.
        files = [
            (path, _version(path), file_hash(path)) for path in self._ready_files(stream, spec)
        ]
        # The file a killed run was in the middle of goes first, whatever arrived since: the
        # cursor holds one position, which the next file read would replace.
        files.sort(key=lambda file: file[2] != current.get("hash"))
        for path, version, digest in files:
            if digest in done:
                continue
            skip_to = int(current.get("line", 0)) if current.get("hash") == digest else 0
            fmt = spec.format or (
                "jsonl" if path.suffix.lower() in {".jsonl", ".ndjson", ".json"} else "csv"
            )
            cut = _jsonl_blocks if fmt == "jsonl" else _csv_blocks
            last_line: int | None = skip_to
            try:
                for block, last_line in cut(path, spec, self.options.batch_size, skip_to):
                    # A file without even a header row has no record to lack anything.
                    header = Header(block.header, path.name) if block.header else None
                    if last_line is None:
                        # A file rewritten in place while it was read may have given some
                        # of each version: it is not done, and the next run reads it whole.
                        if _version(path) == version:
                            done = [*done, digest]
                        yield Page(block, {"done": done, "current": None}, header=header)
                    else:
                        # The name only tells people where the read stands (`syncd
                        # status`): the hash is what is resumed.
                        position = {"hash": digest, "line": last_line, "name": path.name}
                        yield Page(block, {"done": done, "current": position}, header=header)
            except UnicodeDecodeError:
                # Guessing another encoding would store garbled names under a valid hash:
                # the pages before stay loaded, and the file goes on from there once fixed.
                raise FatalConnectorError(
                    f"{path.name}: not {spec.encoding} text after line {last_line}; save the "
                    f"file as {spec.encoding}, or set the stream's `encoding` option to the "
                    "one it is written in (e.g. cp1252)"
                ) from None
            current = {}
