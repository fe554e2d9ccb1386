"""Identity on a real store (SQLite and PostgreSQL): merges, splits, refusals, deletions, events."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect

import syncd.store.db
from syncd.identity.unify import (
    MERGE_LOG_INDEXES,
    KindOrder,
    all_edges,
    id_ranges,
    resolve_marked,
    write_resolution,
)
from syncd.inspect import explain, export_profiles, status
from syncd.profiles import refresh_profiles
from syncd.store.db import Bulk, transaction
from syncd.store.marks import count_waiting
from tests.support.edges import flat
from tests.support.project import Project, records_page


@pytest.fixture
def project(store_url: str, tmp_path: Path) -> Iterator[Project]:
    project = Project(tmp_path, store_url)
    yield project
    project.close()


def profiles(project: Project) -> dict[str, list[str]]:
    with transaction(project.engine) as bulk:
        return {p["profile_id"]: [r["id"] for r in p["records"]] for p in export_profiles(bulk)}


def merge_log(project: Project) -> list[tuple[str, str]]:
    with transaction(project.engine) as bulk:
        rows = bulk.connection.exec_driver_sql(
            "SELECT action, reason FROM merge_log ORDER BY id"
        ).all()
    return [(str(a), str(r)) for a, r in rows]


def test_records_join_through_normalized_identifiers_and_the_merge_is_explained(
    project: Project,
) -> None:
    project.run(
        {
            "people": [
                records_page(
                    [
                        {"id": "a", "email": " ADA@X.COM ", "name": "ada"},
                        {"id": "b", "email": "ada@x.com", "phone": "(415) 555-0101"},
                        {"id": "c", "phone": "+1 415 555 0101"},
                    ]
                )
            ]
        }
    )
    assert sorted(profiles(project).values()) == [["a", "b", "c"]]
    with transaction(project.engine) as bulk:
        found = explain(bulk, project.config.identity, project.mappings.profile, "415.555.0101")
    assert {m["identifier"] for m in found.merges} == {"email:ada@x.com", "phone:+14155550101"}
    assert found.trait_origin["name"] == "crm/people/a"
    assert ("email", "ada@x.com") in found.identifiers


def test_an_email_that_looks_like_a_profile_id_is_explained_as_an_email(project: Project) -> None:
    project.run({"people": [records_page([{"id": "a", "email": "p_smith@x.com"}])]})
    (profile,) = profiles(project)
    with transaction(project.engine) as bulk:
        found = explain(bulk, project.config.identity, project.mappings.profile, "p_smith@x.com")
        again = explain(bulk, project.config.identity, project.mappings.profile, profile)
    assert found.profile_id == again.profile_id == profile


def test_losing_the_joining_identifier_splits_the_profile(project: Project) -> None:
    project.run(
        {
            "people": [
                records_page(
                    [
                        {"id": "a", "email": "ada@x.com"},
                        {"id": "b", "email": "ada@x.com"},
                    ]
                )
            ]
        }
    )
    (before,) = profiles(project)
    project.run({"people": [records_page([{"id": "b", "email": "grace@x.com"}])]})
    after = profiles(project)
    assert sorted(after.values()) == [["a"], ["b"]]
    assert before in after  # the profile keeps its id: its smallest record stayed
    assert any(
        action == "split" and "no longer join" in reason for action, reason in merge_log(project)
    )


def test_a_merge_over_the_user_id_limit_is_refused_and_logged(project: Project) -> None:
    project.run(
        {
            "people": [
                records_page(
                    [
                        {"id": "a", "email": "family@x.com", "user_id": "u1"},
                        {"id": "b", "email": "family@x.com", "user_id": "u2"},
                    ]
                )
            ]
        }
    )
    assert sorted(profiles(project).values()) == [["a"], ["b"]]
    assert ("refused", "would give one profile more than 1 user_id value") in merge_log(project)


def test_explain_of_an_identifier_two_profiles_hold_names_both_and_both_records(
    project: Project,
) -> None:
    project.run(
        {
            "people": [
                records_page(
                    [
                        {"id": "a", "email": "family@x.com", "user_id": "u1"},
                        {"id": "b", "email": "family@x.com", "user_id": "u2"},
                    ]
                )
            ]
        }
    )
    with transaction(project.engine) as bulk:
        found = explain(bulk, project.config.identity, project.mappings.profile, "family@x.com")
    assert [found.profile_id, *found.other_profiles] == sorted(profiles(project))
    (refused,) = [merge for merge in found.merges if merge["action"] == "refused"]
    assert sorted(refused["records"]) == ["crm/people/a", "crm/people/b"]


def test_a_refusal_that_parts_two_unchanged_records_is_logged(project: Project) -> None:
    # b4 and c4 share a phone and were one profile; d4 brings a second user_id on the same
    # phone. Record ids order the phone's nodes c4, d4, b4, so c4 joins d4 first and the
    # refused pair is c4 and b4, neither of which changed in the second run.
    project.run(
        {
            "people": [
                records_page(
                    [
                        {"id": "a", "email": "ada@x.com", "user_id": "u1"},
                        {"id": "b4", "email": "ada@x.com", "phone": "4155550101"},
                        {"id": "c4", "phone": "4155550101"},
                    ]
                )
            ]
        }
    )
    assert sorted(profiles(project).values()) == [["a", "b4", "c4"]]
    project.run({"people": [records_page([{"id": "d4", "phone": "4155550101", "user_id": "u2"}])]})
    assert sorted(profiles(project).values()) == [["a", "b4"], ["c4", "d4"]]
    with transaction(project.engine) as bulk:
        refused = bulk.connection.exec_driver_sql(
            "SELECT record_a, record_b, reason FROM merge_log WHERE action = 'refused'"
        ).all()
    assert len(refused) == 1
    assert refused[0][2] == "would give one profile more than 1 user_id value"
    assert any(
        action == "split" and "no longer join" in reason for action, reason in merge_log(project)
    )


def test_blocked_values_never_join_people(project: Project) -> None:
    project.run(
        {
            "people": [
                records_page(
                    [
                        {"id": "a", "email": "test@test.com", "phone": "0000000000"},
                        {"id": "b", "email": "TEST@TEST.COM", "phone": "0000000000"},
                    ]
                )
            ]
        }
    )
    assert sorted(profiles(project).values()) == [["a"], ["b"]]


def test_deleting_records_shrinks_then_removes_the_profile(project: Project) -> None:
    project.run(
        {
            "people": [
                records_page(
                    [
                        {"id": "a", "email": "ada@x.com", "score": "3"},
                        {"id": "b", "email": "ada@x.com", "score": "9"},
                    ]
                )
            ]
        }
    )
    project.run({"people": [records_page([], deleted=["b"])]})
    with transaction(project.engine) as bulk:
        (only,) = list(export_profiles(bulk))
    assert only["records"] == [{"source": "crm", "stream": "people", "id": "a"}]
    assert only["traits"]["score"] == 3
    project.run({"people": [records_page([], deleted=["a"])]})
    assert profiles(project) == {}
    assert merge_log(project)[-1] == ("removed", "all its records were deleted")


def test_a_deleted_record_that_comes_back_rejoins(project: Project) -> None:
    project.run({"people": [records_page([{"id": "a", "email": "ada@x.com"}])]})
    project.run({"people": [records_page([], deleted=["a"])]})
    project.run({"people": [records_page([{"id": "a", "email": "ada@x.com"}])]})
    assert list(profiles(project).values()) == [["a"]]


def test_unchanged_records_cause_no_writes(project: Project) -> None:
    page = [{"id": "a", "email": "ada@x.com"}, {"id": "b", "phone": "415 555 0101"}]
    first = project.run({"people": [records_page(page)]})
    second = project.run({"people": [records_page(page)]})
    assert first.counts["new"] == 2
    assert second.counts.get("new", 0) == second.counts.get("changed", 0) == 0
    assert second.counts["unchanged"] == 2
    assert second.counts["profiles_written"] == 0


def test_explain_a_profile_of_more_records_than_one_query_chunk(project: Project) -> None:
    project.run(
        {"people": [records_page([{"id": f"r{i}", "email": "crowd@x.com"} for i in range(600)])]}
    )
    with transaction(project.engine) as bulk:
        found = explain(bulk, project.config.identity, project.mappings.profile, "crowd@x.com")
    assert len(found.records) == 600
    assert len(found.merges) == 599


def test_a_nul_character_in_a_payload_is_stored_without_it(project: Project) -> None:
    summary = project.run(
        {"people": [records_page([{"id": "a", "email": "a@x.com", "name": "Ann\x00"}])]}
    )
    assert summary.status == "ok"
    with transaction(project.engine) as bulk:
        (profile,) = list(export_profiles(bulk))
    assert profile["traits"]["name"] == "Ann"


def test_changing_blocked_values_is_applied_by_rebuild(project: Project, tmp_path: Path) -> None:
    project.run(
        {
            "people": [
                records_page(
                    [
                        {"id": "a", "email": "shared@x.com"},
                        {"id": "b", "email": "shared@x.com"},
                    ]
                )
            ]
        }
    )
    assert len(profiles(project)) == 1
    changed = Project(
        tmp_path,
        project.config.store_url,
        extra_config='[identity]\nblocked_values = ["shared@x.com"]\n',
    )
    try:
        changed.pipeline().rebuild()
        assert sorted(profiles(changed).values()) == [["a"], ["b"]]
        assert changed.pipeline().verify() == []
    finally:
        changed.close()


def test_other_work_of_the_transaction_goes_on_between_slices_of_the_write_back(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run writes profiles the workers computed while it writes a resolution back."""
    people = [{"id": str(n), "email": f"p{n // 2}@x.com"} for n in range(5)]
    project.run({"people": [records_page(people)]})
    before = profiles(project)
    monkeypatch.setattr(syncd.store.db, "BATCH_ROWS", 2)

    with transaction(project.engine) as bulk:
        bulk.connection.exec_driver_sql(
            "UPDATE source_record SET unify_generation = (SELECT resolved + 1 FROM unify_state)"
        )
        bulk.connection.exec_driver_sql("DELETE FROM record_profile")
        bulk.connection.exec_driver_sql("DELETE FROM profile")
        resolved = resolve_marked(bulk, project.config.identity)
        assert resolved is not None
        written_back: list[int] = []

        def between() -> None:
            done = bulk.connection.exec_driver_sql(
                "SELECT COUNT(*) FROM record_profile"
            ).scalar_one()
            written_back.append(int(done))

        result = write_resolution(bulk, "r2", resolved, between)
        refresh_profiles(bulk, project.mappings.profile, result.touched, result.removed, "r2")

    assert written_back == [2, 4, 5], "called after each slice of two rows"
    assert profiles(project) == before
    assert project.pipeline().verify() == []


@pytest.mark.parametrize("logged_before", [0, 10])
def test_a_resolution_that_logs_more_than_the_log_holds_builds_its_indexes_once(
    project: Project, monkeypatch: pytest.MonkeyPatch, logged_before: int
) -> None:
    set_aside: list[tuple[str, tuple[str, ...]]] = []
    original = Bulk.indexes_set_aside

    def spied(self: Bulk, table: str, names: Sequence[str]) -> Any:
        set_aside.append((table, tuple(names)))
        return original(self, table, names)

    with transaction(project.engine) as bulk:
        bulk.executemany(
            bulk.sql("INSERT INTO merge_log (run_id, at, action, reason) VALUES (?, ?, ?, ?)"),
            [("r0", "2026-01-01T00:00:00.000Z", "merge", "old")] * logged_before,
        )
    monkeypatch.setattr(Bulk, "indexes_set_aside", spied)
    people = [{"id": str(n), "email": f"p{n // 2}@x.com"} for n in range(6)]
    project.run({"people": [records_page(people)]})

    # PostgreSQL keeps its indexes: it is not even asked.
    many = not logged_before and project.engine.dialect.name == "sqlite"
    expected = MERGE_LOG_INDEXES if many else ()
    assert ("merge_log", expected) in set_aside, "3 merges against the rows logged before"
    assert merge_log(project).count(("merge", "records share this identifier")) == 3
    indexes = {index["name"] for index in inspect(project.engine).get_indexes("merge_log")}
    assert indexes >= set(MERGE_LOG_INDEXES)


@pytest.mark.parametrize("parts", [2, 3, 5])
def test_edges_read_in_ranges_of_identifiers_are_the_edges_of_one_read(
    project: Project, parts: int
) -> None:
    """The workers each read one range; joined in order, the ranges are the whole read."""
    people = [
        {"id": str(n), "email": f"p{n // 3}@x.com", "phone": f"+1415555{n:04d}"} for n in range(60)
    ]
    project.run({"people": [records_page(people)]})
    kinds = KindOrder(project.config.identity).names
    ranges = id_ranges(parts)
    assert ranges[0][0] is None and ranges[-1][1] is None
    assert all(high == low for (_, high), (low, _) in pairwise(ranges)), "no gap, no overlap"
    with transaction(project.engine, commit=False) as bulk:
        whole = all_edges(bulk, kinds)
        joined = all_edges(bulk, kinds, ranges[0])
        for identifiers in ranges[1:]:
            part = all_edges(bulk, kinds, identifiers)
            assert 0 < sum(len(ids) for ids, _ in part.columns) < 120, "each range holds some"
            joined.extend(part)
    columns = flat(whole)
    assert sum(len(ids) for ids, _ in columns) == 120, "an email and a phone per record"
    assert flat(joined) == columns
    assert [len(chunks) for chunks in joined.chunks()] == [parts] * len(kinds), "no copy"


def _assignments(project: Project) -> dict[str, str]:
    with transaction(project.engine) as bulk:
        rows = bulk.connection.exec_driver_sql(
            "SELECT sr.external_id, rp.profile_id FROM record_profile rp "
            "JOIN source_record sr ON sr.id = rp.record_id"
        ).all()
    return {str(external): str(profile) for external, profile in rows}


def _generations(project: Project) -> dict[str, tuple[int, int]]:
    """Each record's generation, and the last resolved one."""
    with transaction(project.engine) as bulk:
        rows = bulk.connection.exec_driver_sql(
            "SELECT external_id, unify_generation, (SELECT resolved FROM unify_state) "
            "FROM source_record"
        ).all()
    return {
        str(external): (int(generation), int(resolved)) for external, generation, resolved in rows
    }


def test_a_resolution_writes_no_record_row_and_only_the_profiles_that_moved(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    people = [{"id": "a", "email": "ada@x.com"}, {"id": "b", "email": "bo@x.com"}]
    project.run({"people": [records_page(people)]})
    assert _generations(project) == {"a": (1, 1), "b": (1, 1)}, "resolved without a write"
    first = _assignments(project)
    assert first["a"] != first["b"]

    statements: list[str] = []
    original = Bulk.executemany

    def spied(self: Bulk, sql: str, rows: Any, between: Any = None) -> None:
        rows = list(rows)
        statements.append(f"{sql.split(' (')[0]} x{len(rows)}")
        original(self, sql, rows, between)

    monkeypatch.setattr(Bulk, "executemany", spied)
    # c joins b: c gets a profile row, b a new one only if c's id names their profile.
    project.run({"people": [records_page([{"id": "c", "email": "bo@x.com"}])]})
    second = _assignments(project)
    moved = {record for record, profile in second.items() if first.get(record) != profile}
    assert second["c"] == second["b"] and second["a"] == first["a"]
    assert moved in ({"c"}, {"b", "c"})
    assert f"INSERT INTO record_profile x{len(moved)}" in statements
    assert not [sql for sql in statements if sql.startswith("UPDATE source_record")]
    assert _generations(project) == {"a": (1, 2), "b": (1, 2), "c": (2, 2)}

    statements.clear()
    assert project.pipeline().verify() == []
    assert "INSERT INTO record_profile x0" in statements, "a rebuild changing nothing"


def test_a_deleted_record_leaves_its_profile_row(project: Project) -> None:
    people = [{"id": "a", "email": "ada@x.com"}, {"id": "b", "email": "ada@x.com"}]
    project.run({"people": [records_page(people)]})
    project.run({"people": [records_page([], deleted=["b"])]})
    assert list(_assignments(project)) == ["a"]
    with transaction(project.engine) as bulk:
        assert count_waiting(bulk) == 0


def test_status_counts_the_records_waiting_for_resolution(project: Project) -> None:
    people = [{"id": "a", "email": "ada@x.com"}, {"id": "b", "email": "bo@x.com"}]
    project.run({"people": [records_page(people)]})
    with transaction(project.engine) as bulk:
        assert status(bulk)["pending_unify"] == 0
        # As a pull that stopped before its resolution leaves a record it wrote.
        bulk.connection.exec_driver_sql(
            "UPDATE source_record SET unify_generation = "
            "(SELECT resolved + 1 FROM unify_state) WHERE external_id = 'b'"
        )
    with transaction(project.engine) as bulk:
        assert status(bulk)["pending_unify"] == 1
    project.run({"people": []})
    with transaction(project.engine) as bulk:
        assert status(bulk)["pending_unify"] == 0
