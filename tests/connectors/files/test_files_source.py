"""The drop-folder source on its own: read once, never half-written, resumable, bad rows flagged."""

from __future__ import annotations

import os
import time
from pathlib import Path

from connectors.files import FilesOptions, FilesSource
from syncd.connector import Page


def source(folder: Path, settle: float = 0, batch: int = 2) -> FilesSource:
    options = FilesOptions.model_validate(
        {
            "folder": str(folder),
            "settle_seconds": settle,
            "batch_size": batch,
            "streams": {"people": {"pattern": "people*.csv"}, "orders": {"pattern": "orders*"}},
        }
    )
    return FilesSource(folder, options)


def write(path: Path, text: str, age: float = 60) -> None:
    path.write_text(text, encoding="utf-8")
    old = time.time() - age
    os.utime(path, (old, old))


def rows(pages: list[Page]) -> list[str]:
    return [str(r.payload.get("id")) for page in pages for r in page.records if r.error is None]


def test_pages_of_batch_size_and_a_cursor_after_each(tmp_path: Path) -> None:
    write(tmp_path / "people1.csv", "id,email\n1,a@x.com\n2,b@x.com\n3,c@x.com\n")
    pages = list(source(tmp_path).read("people", None))
    assert rows(pages) == ["1", "2", "3"]
    assert [len(p.records) for p in pages] == [2, 1]
    assert pages[0].cursor["current"]["line"] == 3
    assert pages[-1].cursor["current"] is None
    assert len(pages[-1].cursor["done"]) == 1


def test_a_file_is_read_once_even_under_another_name(tmp_path: Path) -> None:
    write(tmp_path / "people1.csv", "id\n1\n")
    first = list(source(tmp_path).read("people", None))
    write(tmp_path / "people2.csv", "id\n1\n")
    again = list(source(tmp_path).read("people", first[-1].cursor))
    assert rows(again) == []
    write(tmp_path / "people3.csv", "id\n9\n")
    assert rows(list(source(tmp_path).read("people", first[-1].cursor))) == ["9"]


def test_resuming_from_a_page_cursor_continues_mid_file(tmp_path: Path) -> None:
    write(tmp_path / "people1.csv", "id\n1\n2\n3\n4\n5\n")
    pages = list(source(tmp_path).read("people", None))
    resumed = list(source(tmp_path).read("people", pages[0].cursor))
    assert rows(resumed) == ["3", "4", "5"]


def test_half_written_and_temporary_files_are_not_read(tmp_path: Path) -> None:
    write(tmp_path / "people1.csv", "id\n1\n", age=0)
    write(tmp_path / "people2.csv.part", "id\n2\n")
    write(tmp_path / ".people3.csv", "id\n3\n")
    assert rows(list(source(tmp_path, settle=30).read("people", None))) == []


def test_malformed_rows_are_flagged_with_file_and_line_and_the_rest_loads(tmp_path: Path) -> None:
    write(tmp_path / "people1.csv", "id,email\n1,a@x.com\n2,b@x.com,extra\n3,c@x.com\n")
    write(tmp_path / "orders1.jsonl", '{"id": "o1"}\n{"id": \n["not", "object"]\n{"id": "o2"}\n')
    people = list(source(tmp_path).read("people", None))
    bad = [r for p in people for r in p.records if r.error]
    assert [(r.location, r.error) for r in bad] == [
        ("people1.csv:3", "expected 2 columns, found 3")
    ]
    assert rows(people) == ["1", "3"]
    orders = list(source(tmp_path).read("orders", None))
    assert rows(orders) == ["o1", "o2"]
    assert [r.location for p in orders for r in p.records if r.error] == [
        "orders1.jsonl:2",
        "orders1.jsonl:3",
    ]


def test_memory_stays_flat_because_rows_stream(tmp_path: Path) -> None:
    # A file much larger than one page is delivered page by page, never whole.
    write(tmp_path / "people1.csv", "id\n" + "\n".join(str(i) for i in range(10_000)) + "\n")
    reader = source(tmp_path, batch=100).read("people", None)
    first = next(reader)
    assert len(first.records) == 100
    assert sum(len(p.records) for p in reader) == 9_900
