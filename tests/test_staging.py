"""Staging skips what the store already holds, and never lets that skip lose a change."""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path

import pytest
from sqlalchemy import Engine
from structlog.testing import capture_logs

import connectors.files
import connectors.hubspot
import connectors.ingest
import connectors.matomo
import connectors.salesforce
import syncd.staging
from syncd.connector import Header, Page, RawRecord
from syncd.staging import InOrder, PageMapper, stage_page
from syncd.store.db import CACHE_KIB, SMALL_CACHE_KIB, Bulk, PageGroups, open_store, transaction
from syncd.store.tables import stable_id
from syncd.store.writer import (
    PageWriter,
    StagedRecord,
    WrittenIds,
    content_hash,
    record_id,
)
from tests.support.project import Project, records_page

ANN = {"id": "1", "email": "ann@example.com", "name": "ann", "score": "1"}
BOB = {"id": "2", "email": "bob@example.com", "name": "bob", "score": "5"}


def _stored(project: Project) -> dict[str, tuple[str, dict[str, object]]]:
    with transaction(project.engine) as bulk:
        rows = bulk.connection.exec_driver_sql(
            "SELECT external_id, content_hash, traits FROM source_record"
        ).all()
    return {key: (digest, Bulk.decode(traits)) for key, digest, traits in rows}


def test_a_record_whose_content_the_store_holds_is_not_mapped(tmp_path: Path) -> None:
    project = Project(tmp_path, f"sqlite:///{tmp_path / 'store.db'}")
    compiled = project.mappings.for_stream("crm", "people")
    _, ann_hash = content_hash(compiled.fingerprint, ANN)
    asked: list[Sequence[int]] = []

    def stored(ids: Sequence[int]) -> Mapping[int, str]:
        asked.append(ids)
        return {record_id("crm", "people", "1"): ann_hash}

    page = Page(
        [
            RawRecord(ANN, "a:1"),
            RawRecord(BOB, "a:2"),
            RawRecord({"email": "x@example.com"}, "a:3"),
            RawRecord({}, "a:4", "expected 4 columns, found 5"),
        ],
        None,
    )
    staged = stage_page(compiled, page, stored)

    (bob,) = staged.records
    assert json.loads(bob.traits_json)["name"] == "Bob"
    assert list(staged.unchanged) == [(record_id("crm", "people", "1"), ann_hash, 0)]
    assert [reason for _, reason, _ in staged.quarantined] == [
        "primary key is missing (the record has no id)",
        "expected 4 columns, found 5",
    ]
    # One lookup for the page, of the records that have a key.
    assert [sorted(ids) for ids in asked] == [
        sorted([record_id("crm", "people", "1"), record_id("crm", "people", "2")])
    ]
    project.close()


def test_only_the_last_version_of_a_record_in_a_page_counts(tmp_path: Path) -> None:
    """Ann twice in one page, the stored version last: nothing of her is mapped or written."""
    project = Project(tmp_path, f"sqlite:///{tmp_path / 'store.db'}")
    compiled = project.mappings.for_stream("crm", "people")
    _, ann_hash = content_hash(compiled.fingerprint, ANN)
    changed = {**ANN, "score": "9"}
    page = Page([RawRecord(changed, "a:1"), RawRecord(ANN, "a:2")], None)

    staged = stage_page(compiled, page, lambda ids: {record_id("crm", "people", "1"): ann_hash})

    assert staged.records == []
    assert list(staged.unchanged) == [(record_id("crm", "people", "1"), ann_hash, 1)]
    project.close()


def test_a_skipped_record_changed_by_an_earlier_page_of_the_same_run_is_mapped_after_all(
    tmp_path: Path, store_url: str
) -> None:
    """Both pages are staged in workers before the first is written: the second one finds
    Ann's first version stored and skips her, but by the time it is written the first page
    has stored her second version, so the first must be mapped and written again."""
    project = Project(tmp_path, store_url)
    project.run({"people": [records_page([ANN])]})
    changed = {**ANN, "score": "7"}

    summary = project.run({"people": [records_page([changed]), records_page([ANN, BOB])]})

    _, ann_hash = content_hash(project.mappings.for_stream("crm", "people").fingerprint, ANN)
    digest, traits = _stored(project)["1"]
    assert (digest, traits["score"]) == (ann_hash, 1)
    assert summary.counts["changed"] == 2 and summary.counts["new"] == 1
    project.close()


def test_a_record_deleted_by_an_earlier_page_and_sent_again_unchanged_is_restored(
    tmp_path: Path, store_url: str
) -> None:
    project = Project(tmp_path, store_url)
    project.run({"people": [records_page([ANN, BOB])]})

    project.run({"people": [records_page([], deleted=["1"]), records_page([ANN])]})

    with transaction(project.engine) as bulk:
        deleted = bulk.connection.exec_driver_sql(
            "SELECT deleted FROM source_record WHERE external_id = '1'"
        ).scalar_one()
    assert not deleted
    project.close()


def test_a_staged_page_crosses_from_a_worker_whole(tmp_path: Path) -> None:
    """Pages pickle their records as plain tuples (cheaper) and come back as staged records."""
    project = Project(tmp_path, f"sqlite:///{tmp_path / 'store.db'}")
    compiled = project.mappings.for_stream("crm", "people")
    _, ann_hash = content_hash(compiled.fingerprint, ANN)
    page = Page([RawRecord(ANN, "a:1"), RawRecord(BOB, "a:2"), RawRecord({}, "a:3")], None)
    staged = stage_page(compiled, page, lambda ids: {record_id("crm", "people", "1"): ann_hash})

    crossed = pickle.loads(pickle.dumps(staged))

    assert crossed == staged and len(crossed.records) == 1 and crossed.quarantined
    assert list(crossed.unchanged) == list(staged.unchanged) != []
    assert all(type(record) is StagedRecord for record in crossed.records)
    assert crossed.records[0].identifiers == staged.records[0].identifiers != ()
    project.close()


def test_a_file_whose_header_lacks_what_the_mapping_reads_is_warned_of_once(
    tmp_path: Path,
) -> None:
    project = Project(tmp_path, f"sqlite:///{tmp_path / 'store.db'}")
    compiled = project.mappings.for_stream("crm", "people")
    spelt_otherwise = ("Customer ID", "email", "Name")
    row = {"Customer ID": "1", "email": "ann@example.com", "Name": "Ann"}

    def page(header: Header | None) -> Page:
        return Page([RawRecord(row, "f:2")], None, header=header)

    pages = [
        page(Header(spelt_otherwise, "people_a.csv")),
        page(Header(spelt_otherwise, "people_a.csv")),
        page(Header(spelt_otherwise, "people_b.csv")),
        page(Header(("id", "email", "phone", "user_id", "name", "score", "updated_at"), "ok.csv")),
        page(None),
    ]
    mapper = PageMapper(project.path, 1, project.config.store_url)
    with capture_logs() as lines:
        staged = [staged for _, staged in mapper.stage(compiled, pages)]
    warned = [line for line in lines if line["event"] == "file lacks columns the mapping reads"]
    assert [(line["file"], line["log_level"]) for line in warned] == [
        ("people_a.csv", "warning"),
        ("people_b.csv", "warning"),
    ]
    assert warned[0]["missing"] == ["id", "updated_at", "phone", "user_id", "name", "score"]
    assert "Customer ID" not in str(warned)
    # Nothing is lost: the records are quarantined as before, with what they lack.
    assert staged[0].quarantined == [("f:2", "primary key is missing (the record has no id)", row)]
    project.close()


def test_written_ids_never_forget_an_id() -> None:
    written = WrittenIds()
    ids = [stable_id("crm", "people", str(n)) for n in range(20_000)]
    for key in ids[::2]:
        written.add(key)
    assert all(key in written for key in ids[::2])
    # Two megabytes for 10,000 ids: "maybe" for an id never added is rare.
    assert sum(key in written for key in ids[1::2]) < 20


def test_a_first_load_that_sends_a_record_twice_keeps_only_its_last_version(
    tmp_path: Path, store_url: str
) -> None:
    """On a stream empty at the start no stored hash is read, except for records this pull
    wrote: Ann's second version replaces her first, identifiers included."""
    project = Project(tmp_path, store_url)
    moved = {**ANN, "email": "ann@elsewhere.example", "score": "3"}

    summary = project.run({"people": [records_page([ANN, BOB]), records_page([moved])]})

    assert (summary.counts["new"], summary.counts["changed"]) == (2, 1)
    assert _stored(project)["1"][1]["score"] == 3
    with transaction(project.engine) as bulk:
        emails = bulk.connection.exec_driver_sql(
            "SELECT i.value FROM identifier i JOIN record_identifier ri "
            "ON ri.identifier_id = i.id JOIN source_record sr ON sr.id = ri.record_id "
            "WHERE sr.external_id = '1' AND i.kind = 'email'"
        ).all()
    assert emails == [("ann@elsewhere.example",)]
    project.close()


def test_written_ids_tell_what_may_be_stored() -> None:
    ann, bob = stable_id("crm", "people", "1"), stable_id("crm", "people", "2")
    fresh, filled = WrittenIds(stream_was_empty=True), WrittenIds()
    for written in (fresh, filled):
        written.add(ann)
    assert fresh.may_be_stored(ann) and not fresh.may_be_stored(bob)
    assert filled.may_be_stored(ann) and filled.may_be_stored(bob)


def _cursor_seen_by_another_connection(engine: Engine) -> bool:
    with engine.connect() as other:
        return other.exec_driver_sql("SELECT 1 FROM cursor").first() is not None


@pytest.mark.parametrize("grouped", [True, False])
def test_pages_of_a_remote_source_are_committed_one_by_one(engine: Engine, grouped: bool) -> None:
    """A remote source's next page may take a retry wait to come: its page must not keep the
    write transaction open meanwhile. A local source's pages share one."""
    with PageGroups(engine, grouped=grouped) as groups:
        PageWriter(groups.page(), "r1").set_cursor("crm", "people", {"page": 1})
        groups.page_done(1)
        assert _cursor_seen_by_another_connection(engine) is not grouped
    assert _cursor_seen_by_another_connection(engine)


def test_only_sources_of_local_data_group_their_pages() -> None:
    assert connectors.files.CONNECTOR.local_reads and connectors.ingest.CONNECTOR.local_reads
    assert not any(
        module.CONNECTOR.local_reads
        for module in (connectors.hubspot, connectors.matomo, connectors.salesforce)
    )


def test_results_come_in_submission_order_with_only_a_few_tasks_ahead() -> None:
    futures = [Future[int]() for _ in range(5)]
    submitted: list[int] = []

    def submit() -> Iterator[tuple[str, Future[int]]]:
        for number, future in enumerate(futures):
            submitted.append(number)
            yield f"task {number}", future

    tasks = InOrder(submit(), ahead=2)
    assert submitted == [0, 1]

    futures[1].set_result(10)
    assert list(tasks.ready()) == [], "the second finished, but the first comes first"
    futures[0].set_result(0)
    assert list(tasks.ready()) == [("task 0", 0), ("task 1", 10)]
    assert submitted == [0, 1, 2, 3], "each result taken lets one more task start"

    for number in (2, 3, 4):
        futures[number].set_result(number * 10)
    assert list(tasks.rest()) == [("task 2", 20), ("task 3", 30), ("task 4", 40)]
    assert list(tasks.ready()) == [] and list(tasks.rest()) == []


def test_a_source_that_fails_loses_no_result_taken_before_the_failure() -> None:
    def submit() -> Iterator[tuple[int, Future[int]]]:
        for number in range(3):
            future = Future[int]()
            future.set_result(number * 10)
            yield number, future
        raise OSError("the next page could not be read")

    taken: list[tuple[int, int]] = []
    with pytest.raises(OSError, match="could not be read"):
        taken.extend(InOrder(submit(), ahead=2).rest())  # keeps what came before the error
    assert taken == [(0, 0), (1, 10)], "what was taken before the failure was handed on"


def test_a_worker_scans_the_store_with_a_small_cache_and_looks_up_with_the_full_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    monkeypatch.setattr(syncd.staging, "_worker_engine", engine)

    def cache(scan: bool) -> int:
        with syncd.staging._worker_store(scan) as bulk:
            return int(bulk.connection.exec_driver_sql("PRAGMA cache_size").scalar_one())

    # One pooled connection serves both, as in a worker: each read sets its own.
    assert [cache(True), cache(False), cache(True)] == [SMALL_CACHE_KIB, CACHE_KIB, SMALL_CACHE_KIB]
    engine.dispose()
