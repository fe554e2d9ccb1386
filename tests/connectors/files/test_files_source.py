"""The drop-folder source on its own: read once, never half-written, resumable, bad rows flagged."""

from __future__ import annotations

import csv
import io
import os
import pickle
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from structlog.testing import capture_logs

from connectors.files import FilesOptions, FilesSource
from connectors.files.blocks import FileBlock
from connectors.files.options import StreamFiles
from connectors.files.source import _csv_records, describe_cursor
from syncd.connector import Header, Page
from syncd.errors import FatalConnectorError


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


def test_a_cursor_is_described_by_the_files_read_and_the_line_the_file_under_way_is_at(
    tmp_path: Path,
) -> None:
    write(tmp_path / "people1.csv", "id\n1\n", age=120)
    write(tmp_path / "people2.csv", "id\n2\n3\n4\n")
    pages = list(source(tmp_path).read("people", None))
    assert [describe_cursor(page.cursor) for page in pages] == [
        "1 file read",
        "1 file read; people2.csv read up to line 3",
        "2 files read",
    ]
    assert describe_cursor(None) == "0 files read"
    # As a cursor stored before it named its file holds it.
    before = {"done": [], "current": {"hash": "3fa2c1d0e4b5" + "0" * 52, "line": 7}}
    assert (
        describe_cursor(before) == "0 files read; the file of hash 3fa2c1d0e4b5 read up to line 7"
    )


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


def test_the_file_a_run_stopped_in_goes_on_first_when_an_older_one_arrived(
    tmp_path: Path,
) -> None:
    write(tmp_path / "people2.csv", "id\n1\n2\n3\n4\n5\n", age=60)
    first_page, *_ = source(tmp_path).read("people", None)
    stopped_after = first_page.cursor
    # Copied in with its old time kept (cp -p, rsync -t): it sorts before the one under way.
    write(tmp_path / "people1.csv", "id\n7\n8\n9\n", age=600)
    resumed = list(source(tmp_path).read("people", stopped_after))
    assert rows(resumed) == ["3", "4", "5", "7", "8", "9"]
    assert resumed[-1].cursor["current"] is None and len(resumed[-1].cursor["done"]) == 2


def test_half_written_and_temporary_files_are_not_read(tmp_path: Path) -> None:
    write(tmp_path / "people1.csv", "id\n1\n", age=0)
    write(tmp_path / "people2.csv.part", "id\n2\n")
    write(tmp_path / ".people3.csv", "id\n3\n")
    assert rows(list(source(tmp_path, settle=30).read("people", None))) == []


def test_a_file_left_for_a_later_run_is_said_with_why(tmp_path: Path) -> None:
    write(tmp_path / "people1.csv", "id\n1\n", age=600)
    write(tmp_path / "people2.csv", "id\n2\n", age=0)
    fresh = (tmp_path / "people2.csv").stat().st_mtime
    reader = FilesSource(tmp_path, source(tmp_path, settle=30).options, clock=lambda: fresh + 4)
    with capture_logs() as lines:
        assert rows(list(reader.read("people", None))) == ["1"]
    assert [line for line in lines if line["event"] == "file left for a later run"] == [
        {
            "event": "file left for a later run",
            "log_level": "info",
            "stream": "people",
            "file": "people2.csv",
            "reason": "too new",
            "modified_seconds_ago": 4.0,
            "settle_seconds": 30.0,
        }
    ]


def test_csv_pages_carry_their_files_header_and_name(tmp_path: Path) -> None:
    write(tmp_path / "people1.csv", " Customer ID ,E-mail\n1,a@x.com\n2,b@x.com\n3,c@x.com\n")
    write(tmp_path / "people2.csv", "")
    write(tmp_path / "orders1.jsonl", '{"id": "o1"}\n')
    people = list(source(tmp_path).read("people", None))
    assert [page.header for page in people] == [
        Header(("Customer ID", "E-mail"), "people1.csv"),
        Header(("Customer ID", "E-mail"), "people1.csv"),
        None,
    ]
    assert [page.header for page in source(tmp_path).read("orders", None)] == [None]


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


def whole_file(path: Path) -> list[tuple[str, dict[str, str] | None, str | None]]:
    """What reading the file in one go with csv gives: (location, row, error) per record."""
    found = []
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = [name.strip() for name in next(reader)]
        read = reader.line_num
        for row in reader:
            first, read = read + 1, reader.line_num
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            location = f"{path.name}:{first}"
            if len(row) != len(header):
                found.append((location, None, f"expected {len(header)} columns, found {len(row)}"))
            else:
                found.append((location, dict(zip(header, row, strict=True)), None))
    return found


def _read_in_pages(folder: Path, text: str, batch: int) -> tuple[Path, list[Page]]:
    """Drop `text` as a settled file and read it in pages parsed apart (as in a worker):
    together they must give what one read of the whole file gives."""
    path = folder / "people1.csv"
    path.write_bytes(text.encode())
    old = time.time() - 60
    os.utime(path, (old, old))
    pages = list(source(folder, batch=batch).read("people", None))
    parsed = [
        (r.location, dict(r.payload) if r.error is None else None, r.error)
        for page in pages
        for r in pickle.loads(pickle.dumps(page.records))
    ]
    assert parsed == whole_file(path)
    return path, pages


FIELDS = st.text(alphabet='ab ,"\n\r\t\u00e9', max_size=6)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    table=st.lists(st.one_of(st.lists(FIELDS, min_size=1, max_size=4), st.just([])), max_size=25),
    batch=st.integers(min_value=1, max_value=4),
)
def test_pages_cut_between_records_give_what_one_whole_read_gives(
    tmp_path: Path, table: list[list[str]], batch: int
) -> None:
    # Quoted fields spanning lines, blank rows, short and long rows, CR line ends: each page
    # ends where csv ends a record, so pages parsed apart (as in a worker) equal one read.
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(["id", "email", "name"])
    for row in table:
        writer.writerow(row)
    path, pages = _read_in_pages(tmp_path, buffer.getvalue(), batch)
    assert [len(page.records) for page in pages[:-1]] == [batch] * (len(pages) - 1)
    assert len(pages[-1].records) <= batch
    # A page's cursor is the last line of its last record, which begins at its location.
    first_lines = [[int(r.location.split(":")[1]) for r in page.records] for page in pages]
    for page, lines, following in zip(pages, first_lines, first_lines[1:], strict=False):
        assert lines[-1] <= page.cursor["current"]["line"]
        assert not following or page.cursor["current"]["line"] < following[0]
    # Resuming after any page gives exactly the records after it.
    for at, page in enumerate(pages[:-1]):
        resumed = list(source(tmp_path, batch=batch).read("people", page.cursor))
        expected = [r.location for later in pages[at + 1 :] for r in later.records]
        assert [r.location for p in resumed for r in p.records] == expected
    path.unlink()


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    text=st.text(alphabet='ab ,"\n\r', max_size=80),
    batch=st.integers(min_value=1, max_value=3),
)
def test_pages_of_any_text_end_where_csv_ends_a_record(
    tmp_path: Path, text: str, batch: int
) -> None:
    # Not written by csv: quotes in the middle of a field, quotes never closed, lone CRs.
    # Lines without a quote are judged without csv's reader: they must end records as it does.
    path, _ = _read_in_pages(tmp_path, "id,email,name\n" + text, batch)
    path.unlink()


def test_a_page_crosses_to_a_worker_as_its_lines_and_never_shows_them(tmp_path: Path) -> None:
    write(tmp_path / "people1.csv", 'id,email\n1,"ann@x.com"\n2,bob@x.com\n')
    (page, *_) = list(source(tmp_path, batch=5).read("people", None))
    block = page.records
    assert isinstance(block, FileBlock)
    copy = pickle.loads(pickle.dumps(block))
    assert [r.payload for r in copy] == [
        {"id": "1", "email": "ann@x.com"},
        {"id": "2", "email": "bob@x.com"},
    ]
    # Parsed records stay where they were parsed: the pickle is the lines alone.
    assert b"ann@x.com" in pickle.dumps(block)
    assert len(pickle.dumps(block)) == len(
        pickle.dumps(FileBlock("people1.csv", 2, block.lines, ["id", "email"]))
    )
    assert "ann" not in repr(block) and "bob" not in repr(block)


def test_pages_before_text_that_cannot_be_decoded_are_handed_on_and_the_error_says_what_to_do(
    tmp_path: Path,
) -> None:
    # A full page goes out as soon as it is cut, so a pull that fails further on (here on a
    # byte that is not UTF-8, found once the reader's buffer gets to it) has stored the pages
    # before it.
    path = tmp_path / "people1.csv"
    good = "".join(f"{i},a\n" for i in range(1, 5001))
    path.write_bytes(b"id,note\n" + good.encode() + b"5001,caf\xe9\n")
    os.utime(path, (time.time() - 60, time.time() - 60))
    got: list[Page] = []
    with pytest.raises(FatalConnectorError) as caught:
        got.extend(source(tmp_path, batch=100).read("people", None))
    assert got, "the pages before the undecodable line"
    assert rows(got) == [str(i) for i in range(1, len(rows(got)) + 1)]
    last_line = got[-1].cursor["current"]["line"]
    assert f"people1.csv: not utf-8 text after line {last_line}" in str(caught.value)
    assert "`encoding` option" in str(caught.value)


def test_a_field_longer_than_csvs_default_limit_loads(tmp_path: Path) -> None:
    note = "x" * 200_000
    write(tmp_path / "people1.csv", f'id,note\n1,a\n2,{note}\n3,"{note}"\n4,d\n')
    pages = list(source(tmp_path, batch=1).read("people", None))
    assert rows(pages) == ["1", "2", "3", "4"]
    assert [len(r.payload["note"]) for p in pages for r in p.records] == [1, 200_000, 200_000, 1]


def test_a_json_line_nested_too_deeply_is_flagged_and_the_rest_loads(tmp_path: Path) -> None:
    write(tmp_path / "orders1.jsonl", '{"id": "o1"}\n' + "[" * 100_000 + '\n{"id": "o2"}\n')
    orders = list(source(tmp_path).read("orders", None))
    assert rows(orders) == ["o1", "o2"]
    assert [(r.location, r.error) for p in orders for r in p.records if r.error] == [
        ("orders1.jsonl:2", "invalid JSON: nested too deeply")
    ]


@pytest.mark.parametrize("encoding", ["utf8-bogus", "hex", "base64"])
def test_an_encoding_that_is_not_a_text_encoding_is_refused_with_the_fix(encoding: str) -> None:
    with pytest.raises(ValidationError, match=r"unknown text encoding .* e\.g\. utf-8"):
        StreamFiles(pattern="*.csv", encoding=encoding)
    assert StreamFiles(pattern="*.csv", encoding="cp1252").encoding == "cp1252"


def test_records_are_judged_as_csv_judges_them_with_a_tab_delimiter() -> None:
    # A tab is whitespace, yet a line of one tab is a record of two empty fields for csv.
    lines = ["a\tb\n", "\t\n", "  \r\n", '"x\n', 'y"\tz\n', "c\td\n"]
    assert list(_csv_records(iter(lines), 1, "\t")) == [
        (2, False),
        (3, False),
        (4, True),
        (6, False),
        (7, False),
    ]


def test_blank_lines_before_the_header_are_skipped_and_extensions_ignore_case(
    tmp_path: Path,
) -> None:
    write(tmp_path / "people1.csv", "\n  \nid,email\n1,a@x.com\nbad\n")
    people = list(source(tmp_path).read("people", None))
    assert rows(people) == ["1"]
    assert [(r.location, r.error) for p in people for r in p.records if r.error] == [
        ("people1.csv:5", "expected 2 columns, found 1")
    ]
    write(tmp_path / "orders1.JSONL", '{"id": "o1"}\n')
    assert rows(list(source(tmp_path).read("orders", None))) == ["o1"]


def test_a_file_rewritten_while_it_is_read_is_not_done_and_is_read_whole_next_time(
    tmp_path: Path,
) -> None:
    path = tmp_path / "people1.csv"
    write(path, "id\n1\n2\n3\n", age=120)
    reader = source(tmp_path, batch=1).read("people", None)
    first = next(reader)
    write(path, "id\n7\n8\n9\n", age=60)
    rest = list(reader)
    assert rest[-1].cursor == {"done": [], "current": None}
    again = list(source(tmp_path, batch=1).read("people", rest[-1].cursor))
    assert rows(again) == ["7", "8", "9"]
    assert len(again[-1].cursor["done"]) == 1
    assert rows([first]) == ["1"]


def test_a_record_over_several_lines_is_located_at_its_first_line(tmp_path: Path) -> None:
    write(tmp_path / "people1.csv", 'id,note\n1,"a\nb"\n2,"c\nd",extra\n\n3,e,f\n')
    people = list(source(tmp_path, batch=5).read("people", None))
    assert rows(people) == ["1"]
    assert [(r.location, r.error) for p in people for r in p.records if r.error] == [
        ("people1.csv:4", "expected 2 columns, found 3"),
        ("people1.csv:7", "expected 2 columns, found 3"),
    ]
