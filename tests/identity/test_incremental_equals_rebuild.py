"""Property: identity and traits depend on the set of records, never on arrival order or batching.

Random record sets (identifiers drawn from small pools, so merges, conflicts and blocked values
happen often) arrive in random orders and random batches, then change (new identifiers, lost
identifiers, deletions) in random batches. The final store must equal a fresh store loaded
with the final records in one run, and `verify` (a rebuild in a rolled-back transaction) must
find no difference.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlmodel import SQLModel

from syncd.inspect import export_profiles
from syncd.store.db import transaction
from tests.support.project import Project, records_page

EMAILS = ["a@x.com", "B@x.com ", "c@x.com", "test@test.com", "", "not-an-email"]
PHONES = ["(415) 555-0101", "+1 415 555 0101", "415.555.0102", "0000000000", ""]
USERS = ["u1", "u2", "u3", ""]

record = st.fixed_dictionaries(
    {
        "email": st.sampled_from(EMAILS),
        "phone": st.sampled_from(PHONES),
        "user_id": st.sampled_from(USERS),
        "name": st.sampled_from(["ada", "grace ", "Linus"]),
        "score": st.integers(0, 100).map(str),
        "updated_at": st.integers(1, 28).map(lambda d: f"2024-01-{d:02d}T00:00:00Z"),
    }
)


@st.composite
def histories(draw: st.DrawFn) -> dict[str, Any]:
    count = draw(st.integers(1, 9))
    first = {f"r{i}": draw(record) for i in range(count)}
    changed = draw(st.lists(st.sampled_from(sorted(first)), unique=True, max_size=count))
    second = {key: draw(record) for key in changed}
    second.update({f"n{i}": draw(record) for i in range(draw(st.integers(0, 3)))})
    deleted = draw(st.lists(st.sampled_from(sorted(first)), unique=True, max_size=2))
    return {
        "first": first,
        "second": second,
        "deleted": [key for key in deleted if key not in second],
        "order1": draw(st.permutations(sorted(first))),
        "order2": draw(st.permutations(sorted(second))),
        "cuts": draw(st.lists(st.integers(1, 4), min_size=1, max_size=4)),
    }


def _batches(keys: list[str], cuts: list[int]) -> list[list[str]]:
    batches, start, index = [], 0, 0
    while start < len(keys):
        size = cuts[index % len(cuts)]
        batches.append(keys[start : start + size])
        start += size
        index += 1
    return batches


def _payload(key: str, fields: dict[str, str]) -> dict[str, str]:
    return {"id": key, **fields}


def _state(project: Project) -> list[str]:
    with transaction(project.engine) as bulk:
        return [json.dumps(profile, sort_keys=True) for profile in export_profiles(bulk)]


def _reset(project: Project) -> None:
    """Empty every table of the store (a new table is emptied too) and mark nothing resolved."""
    with project.engine.begin() as connection:
        for table in reversed(SQLModel.metadata.sorted_tables):
            if table.name != "unify_state":
                connection.execute(table.delete())
        connection.execute(text("UPDATE unify_state SET resolved = 0"))


def _unlogged_refusals(project: Project) -> list[int]:
    """Identifiers that nodes of two profiles or more carry, with no refused merge logged for
    them: only a refusal (a limit) leaves an identifier shared across profiles."""
    with transaction(project.engine) as bulk:
        rows = bulk.connection.exec_driver_sql(
            "SELECT ri.identifier_id FROM record_identifier ri "
            "JOIN record_profile rp ON rp.record_id = ri.record_id "
            "GROUP BY ri.identifier_id HAVING COUNT(DISTINCT rp.profile_id) > 1 "
            "EXCEPT SELECT identifier_id FROM merge_log WHERE action = 'refused'"
        ).all()
    return [int(row[0]) for row in rows]


@pytest.fixture
def projects(store_url: str, tmp_path: Path) -> Any:
    """Two stores on the same backend: the incremental one and the one-shot reference."""
    if store_url.startswith("sqlite"):
        reference_url = store_url.replace("store.db", "reference.db")
    else:
        from tests.conftest import _fresh_pg_database

        reference_url = _fresh_pg_database(store_url.rsplit("/", 1)[0] + "/postgres")
    incremental = Project(tmp_path / "incremental", store_url)
    reference = Project(tmp_path / "reference", reference_url)
    yield incremental, reference
    incremental.close()
    reference.close()


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(history=histories())
def test_incremental_runs_equal_one_run_of_the_final_records(
    projects: Any, history: dict[str, Any]
) -> None:
    incremental, reference = projects
    _reset(incremental)
    _reset(reference)

    for batch in _batches(history["order1"], history["cuts"]):
        incremental.run(
            {"people": [records_page([_payload(k, history["first"][k]) for k in batch])]}
        )
    for batch in _batches(history["order2"], history["cuts"][::-1]):
        incremental.run(
            {"people": [records_page([_payload(k, history["second"][k]) for k in batch])]}
        )
    if history["deleted"]:
        incremental.run({"people": [records_page([], deleted=history["deleted"])]})

    final = {**history["first"], **history["second"]}
    for key in history["deleted"]:
        final.pop(key)
    reference.run({"people": [records_page([_payload(k, v) for k, v in sorted(final.items())])]})

    assert _state(incremental) == _state(reference)
    assert incremental.pipeline().verify() == []
    assert _unlogged_refusals(incremental) == []
