"""The planner: desired states diffed against the ledger, walked in chunks of profiles."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from textwrap import dedent

import pytest

from syncd.connector import Outcome
from syncd.mapping.destinations import CompiledDestination, compile_destinations
from syncd.plan import PlannedPush, plan_chunks, state_hash
from syncd.plan.ledger import Recorded, record_outcomes
from syncd.store.db import transaction
from tests.support.project import Project, records_page

DESTINATION = """
[destinations.crm]
type = "hubspot"
[destinations.crm.options]
access_token = { env = "PLANNER_TEST_UNUSED" }
"""

MAPPING = """
destination = "crm"
target = "contacts"
match = { identifier = "email" }
when = [{ trait = "score", op = "ne", value = 0 }]

[fields]
name = "name"
"""


@pytest.fixture
def project(tmp_path: Path, store_url: str) -> Iterator[Project]:
    made = Project(tmp_path, store_url, extra_config=DESTINATION)
    (made.config.mappings_dir / "destinations").mkdir()
    (made.config.mappings_dir / "destinations" / "crm.toml").write_text(dedent(MAPPING))
    try:
        yield made
    finally:
        made.close()


def _mapping(project: Project) -> CompiledDestination:
    (mapping,) = compile_destinations(project.config).of("crm")
    return mapping


def _plan(project: Project, size: int = 500) -> tuple[list[PlannedPush], Counter[str]]:
    items: list[PlannedPush] = []
    counts: Counter[str] = Counter()
    for chunk in plan_chunks(project.engine, _mapping(project), chunk_size=size):
        items.extend(chunk.items)
        counts.update(chunk.counts)
    return items, counts


def _record(project: Project, planned: PlannedPush, outcome: Outcome) -> None:
    with transaction(project.engine) as bulk:
        record_outcomes(
            bulk,
            "crm",
            "contacts",
            [Recorded(planned.state, outcome, "ext-1", "why")],
            "run",
            "2030-01-01T00:00:00.000Z",
        )


def test_plan_walks_chunks_and_keeps_only_differences(project: Project) -> None:
    people = [{"id": str(n), "email": f"p{n}@example.com", "name": f"n{n}"} for n in range(5)]
    people[0]["score"] = "0"  # not selected
    people[1]["email"] = ""  # no match value
    project.run({"people": [records_page(people)]})
    items, counts = _plan(project, size=2)
    assert counts == Counter(planned=3, not_selected=1, skipped_no_key=1)
    assert {p.state.match_value for p in items} == {f"p{n}@example.com" for n in (2, 3, 4)}
    assert {p.change for p in items} == {"new"}
    first = items[0].state
    assert first.fields == {"name": first.fields["name"]}
    assert first.hash == state_hash(first.match_value, first.fields)

    ok, rejected, retried = items
    _record(project, ok, Outcome.OK)
    _record(project, rejected, Outcome.REJECTED)
    _record(project, retried, Outcome.RETRY)
    again, counts = _plan(project)
    assert [(p.state.profile_id, p.change) for p in again] == [
        (retried.state.profile_id, "failed before")
    ]
    assert counts["unchanged"] == 2

    changed = [
        {"id": n, "email": f"p{n}@example.com", "name": "new", "updated_at": "2030-01-01"}
        for n in ("2", "3", "4")
    ]
    project.run({"people": [records_page(changed)]})
    again, _ = _plan(project)
    assert {p.change for p in again} == {"changed", "failed before"}
    assert len(again) == 3


def test_identifier_match_takes_the_smallest_value(project: Project) -> None:
    people = [
        {"id": "1", "email": "zed@example.com", "user_id": "u1", "name": "a"},
        {"id": "2", "email": "amy@example.com", "user_id": "u1", "name": "a"},
    ]
    project.run({"people": [records_page(people)]})
    (item,), _ = _plan(project)
    assert item.state.match_value == "amy@example.com"


def test_identifier_match_keeps_the_value_pushed_while_the_profile_has_it(
    project: Project,
) -> None:
    people = [{"id": "1", "email": "zed@example.com", "user_id": "u1", "name": "a"}]
    project.run({"people": [records_page(people)]})
    (pushed,), _ = _plan(project)
    _record(project, pushed, Outcome.OK)

    # A smaller email joins: the destination knows the person by the one pushed.
    joining = {
        "id": "2",
        "email": "amy@example.com",
        "user_id": "u1",
        "name": "b",
        "updated_at": "2030-01-01",
    }
    project.run({"people": [records_page([joining])]})
    (item,), _ = _plan(project)
    assert (item.state.match_value, item.change) == ("zed@example.com", "changed")

    # The pushed email leaves the profile: the smallest it has is taken.
    project.run({"people": [records_page([], deleted=["1"])]})
    (item,), _ = _plan(project)
    assert item.state.match_value == "amy@example.com"
