"""A drop folder of CSV and JSON-lines files, each stream bound to a file name pattern.

- A file is read once: it is tracked by the hash of its content, so a file dropped twice,
  under any name, is not loaded twice (`run-once --full` reads everything again, and the
  store then rewrites nothing that did not change).
- A half-written file is never read: hidden and temporary names (`.x`, `*.tmp`, `*.part`)
  are skipped, and so is a file modified less than `settle_seconds` ago.
- Files are streamed in pages of `batch_size` rows, so memory stays flat whatever their size;
  the cursor after each page names the file and line, so a killed run resumes mid-file.
- A malformed row (wrong column count, bad JSON) comes back as a RawRecord with an error and
  its file and line; the rest of the file loads.
"""

from __future__ import annotations

import csv
import hashlib
import json
import time
from collections.abc import Iterator, Sequence
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from syncd.connector import JsonValue, Page, RawRecord

from .options import FilesOptions, StreamFiles

TEMPORARY_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".swp")


def file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _csv_rows(
    path: Path, spec: StreamFiles
) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
    with path.open(newline="", encoding=spec.encoding) as handle:
        reader = csv.reader(handle, delimiter=spec.delimiter)
        header = next(reader, None)
        if header is None:
            return
        header = [name.strip() for name in header]
        for row in reader:
            line = reader.line_num
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) != len(header):
                yield line, None, f"expected {len(header)} columns, found {len(row)}"
                continue
            yield line, dict(zip(header, row, strict=True)), None


def _jsonl_rows(
    path: Path, spec: StreamFiles
) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
    with path.open(encoding=spec.encoding) as handle:
        for line, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                value = json.loads(text)
            except json.JSONDecodeError as error:
                yield line, None, f"invalid JSON: {error.msg} at column {error.colno}"
                continue
            if not isinstance(value, dict):
                yield line, None, "a JSON line must be an object"
                continue
            yield line, value, None


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

    def _ready_files(self, spec: StreamFiles) -> list[Path]:
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
            if now - path.stat().st_mtime < self.options.settle_seconds:
                continue
            ready.append(path)
        return sorted(ready, key=lambda p: (p.stat().st_mtime, p.name))

    def read(self, stream: str, cursor: JsonValue | None) -> Iterator[Page]:
        spec = self.options.streams[stream]
        done: list[str] = list((cursor or {}).get("done", []))
        current = (cursor or {}).get("current") or {}
        for path in self._ready_files(spec):
            digest = file_hash(path)
            if digest in done:
                continue
            skip_to = int(current.get("line", 0)) if current.get("hash") == digest else 0
            fmt = spec.format or (
                "jsonl" if path.suffix in {".jsonl", ".ndjson", ".json"} else "csv"
            )
            rows = _jsonl_rows(path, spec) if fmt == "jsonl" else _csv_rows(path, spec)
            batch: list[RawRecord] = []
            last_line = skip_to
            for line, payload, error in rows:
                if line <= skip_to:
                    continue
                location = f"{path.name}:{line}"
                batch.append(RawRecord(payload or {}, location, error))
                last_line = line
                if len(batch) >= self.options.batch_size:
                    yield Page(
                        batch, {"done": done, "current": {"hash": digest, "line": last_line}}
                    )
                    batch = []
            done = [*done, digest]
            yield Page(batch, {"done": done, "current": None})
            current = {}
