"""A large resolution's profiles are computed by the mapping workers, reading beside the run's
transaction, and come out exactly as the run itself would compute them."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

import syncd.runner
from syncd.connector import Page, RawRecord
from syncd.identity.resolve import EdgesByKind
from syncd.identity.unify import KindOrder, all_edges
from syncd.mapping.model import ProfileMapping
from syncd.profiles import Computed, ComputedElsewhere, ProfileRow
from syncd.staging import PageMapper
from syncd.store.db import Bulk, transaction
from tests.support.edges import flat
from tests.support.project import Project, records_page, visits_project

PEOPLE = [
    {"id": "1", "email": "ann@example.com", "name": "ann", "score": "3"},
    {"id": "2", "email": "ANN@example.com", "name": "Ann B", "score": "9"},
    {"id": "3", "email": "bob@example.com", "name": "bob", "score": "5"},
    {"id": "4", "phone": "+1 212 555 0100", "name": "carol", "score": "1"},
    {"id": "5", "phone": "212-555-0100", "user_id": "u5", "name": "Carol", "score": "2"},
]


NOW = "2026-03-01T12:00:00.000Z"

RULES = """
[traits.score]
rule = "max"

[computed.views]
op = "count"
event = "Page Viewed"

[computed.records]
op = "count"
over = "records"
"""


class _Recorded:
    """The workers' batches as they are taken, keeping their rows."""

    def __init__(self, computed: ComputedElsewhere, seen: list[ProfileRow]) -> None:
        self._computed = computed
        self._seen = seen

    def _kept(self, batches: Iterator[Computed]) -> Iterator[Computed]:
        for profiles, rows in batches:
            self._seen.extend(rows)
            yield profiles, rows

    def ready(self) -> Iterator[Computed]:
        return self._kept(self._computed.ready())

    def rest(self) -> Iterator[Computed]:
        return self._kept(self._computed.rest())


@pytest.fixture
def computed_by_workers(monkeypatch: pytest.MonkeyPatch) -> list[ProfileRow]:
    """Every resolution counts as large, and the rows the workers computed are kept here."""
    monkeypatch.setattr(syncd.runner, "PARALLEL_PROFILE_NODES", 1)
    seen: list[ProfileRow] = []
    for method in ("profile_rows", "lone_profile_rows"):
        original = getattr(PageMapper, method)

        def spied(self: PageMapper, *args: Any, original: Any = original) -> ComputedElsewhere:
            computed = original(self, *args)
            assert computed is not None, "the pull started the workers: they compute"
            return _Recorded(computed, seen)

        monkeypatch.setattr(PageMapper, method, spied)
    return seen


def _profiles(project: Project) -> dict[str, tuple[Any, int]]:
    with transaction(project.engine, commit=False) as bulk:
        rows: Iterable[Sequence[Any]] = bulk.connection.exec_driver_sql(
            "SELECT id, traits, record_count FROM profile"
        )
        return {row[0]: (Bulk.decode(row[1]), row[2]) for row in rows}


def test_profiles_computed_by_the_workers_equal_a_rebuild(
    tmp_path: Path, store_url: str, computed_by_workers: list[ProfileRow]
) -> None:
    project = Project(tmp_path, store_url)

    # Two pages: the pull starts the workers, which only a pull does.
    project.run({"people": [records_page(PEOPLE[:3]), records_page(PEOPLE[3:])]})

    profiles = _profiles(project)
    assert sorted(count for _, count in profiles.values()) == [1, 2, 2]
    assert {traits["score"] for traits, _ in profiles.values()} == {9, 5, 2}
    assert sorted(row[0] for row in computed_by_workers) == sorted(profiles)
    assert project.pipeline().verify() == []

    # Ann's second record leaves, Bob changes: two profiles change, the third is not rewritten.
    computed_by_workers.clear()
    changed = records_page([{**PEOPLE[2], "score": "8"}])
    project.run({"people": [changed, records_page([], deleted=["2"])]})

    after = _profiles(project)
    assert sorted(count for _, count in after.values()) == [1, 1, 2]
    assert {traits["score"] for traits, _ in after.values()} == {3, 8, 2}
    assert len(computed_by_workers) == 2
    assert project.pipeline().verify() == []
    project.close()


def test_workers_count_events_and_follow_links_as_the_run_does(
    tmp_path: Path, store_url: str, computed_by_workers: list[ProfileRow]
) -> None:
    """A visit seen with Bob's email and Carol's user id links them (a link node): one
    profile, whose views the workers count through the identifiers of all its nodes."""
    project = visits_project(tmp_path, store_url, RULES)
    visits = [
        {"id": "v1", "email": "bob@example.com", "user_id": "u5", "at": "2026-01-02T10:00:00Z"},
        {"id": "v2", "email": "ann@example.com", "at": "2026-01-03T10:00:00Z"},
        {"id": "v3", "user_id": "u5", "at": "2026-01-04T10:00:00Z"},
    ]
    project.run(
        {
            "people": [records_page(PEOPLE[:3]), records_page(PEOPLE[3:])],
            "visits": [Page([RawRecord(v, f"test:{v['id']}") for v in visits], None)],
        }
    )

    profiles = sorted(
        (traits["records"], traits["views"]) for traits, _ in _profiles(project).values()
    )
    assert profiles == [(2, 1), (3, 2)]
    assert len(computed_by_workers) == 2
    assert project.pipeline().verify() == []
    project.close()


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_workers_never_compute_profiles_of_a_store_only_the_run_can_see(
    tmp_path: Path, url: str
) -> None:
    mapper = PageMapper(tmp_path / "syncd.toml", 2, url)
    mapper._ensure_pool()  # as a pull leaves it; no process starts before a task comes
    assert mapper.profile_rows(ProfileMapping(), {1: "p_0000000000000001"}, "r1", NOW) is None
    mapper.close()


def test_workers_are_not_started_for_profiles_alone(tmp_path: Path) -> None:
    """A pull small enough to need no workers leaves its profiles to the run itself."""
    mapper = PageMapper(tmp_path / "syncd.toml", 2, f"sqlite:///{tmp_path / 'store.db'}")
    assert mapper.profile_rows(ProfileMapping(), {1: "p_0000000000000001"}, "r1", NOW) is None


def test_a_full_resolution_reads_its_edges_in_a_worker_as_it_would_itself(
    tmp_path: Path, store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    read_elsewhere: list[list[tuple[list[int], list[int]]]] = []
    original = PageMapper.all_edges

    def spied(self: PageMapper, kinds: Sequence[str]) -> Callable[[], EdgesByKind] | None:
        waiting = original(self, kinds)
        assert waiting is not None, "the pull started the workers: one reads the edges"

        def kept() -> EdgesByKind:
            edges = waiting()
            # Resolution frees the columns as it goes: keep what they held.
            read_elsewhere.append(flat(edges))
            return edges

        return kept

    monkeypatch.setattr(PageMapper, "all_edges", spied)
    project = Project(tmp_path, store_url)
    project.run({"people": [records_page(PEOPLE[:3]), records_page(PEOPLE[3:])]})

    [edges] = read_elsewhere
    with transaction(project.engine, commit=False) as bulk:
        here = all_edges(bulk, KindOrder(project.config.identity).names)
    assert edges == flat(here)
    assert sum(len(identifiers) for identifiers, _ in edges) == 6, "3 emails, 2 phones, 1 user id"
    assert project.pipeline().verify() == []
    project.close()
