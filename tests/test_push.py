"""Push: only differences go out, outcomes land in the ledger, failures stay contained.

A programmable fake destination stands in for the connectors here (the real ones are driven
against their emulators in test_push_echo.py); the store runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from textwrap import dedent

import pytest

import syncd.push as push_module
from syncd.config import Config, ConnectorEntry
from syncd.connector import Destination, Outcome, PushItem, PushResult
from syncd.errors import ConfigError, FatalConnectorError, Problem, RetryableError
from syncd.identity.resolve import profile_id_for
from syncd.mapping.destinations import compile_destinations
from syncd.plan.planner import plan_chunks
from syncd.push import PushReport, preview, push_destinations, run_push
from syncd.store.db import transaction
from syncd.store.tables import stable_id
from tests.support.project import Project, records_page

DESTINATIONS = """
[destinations.alpha]
type = "hubspot"
[destinations.alpha.options]
access_token = { env = "PUSH_TEST_UNUSED" }

[destinations.beta]
type = "hubspot"
[destinations.beta.options]
access_token = { env = "PUSH_TEST_UNUSED" }
"""

MAPPING = """
destination = "{name}"
target = "contacts"
match = {{ identifier = "email" }}

[fields]
full_name = "name"
score = "score"
"""

PEOPLE = [
    {"id": str(n), "email": f"p{n}@example.com", "name": f"person {n}", "score": str(n)}
    for n in range(5)
]


@dataclass
class FakeDestination:
    """Answers OK unless told: reject or retry some match values, or fail whole calls."""

    max_batch_size: int = 2
    reject: set[str] = field(default_factory=set)
    retry: set[str] = field(default_factory=set)
    fail_calls: list[Exception] = field(default_factory=list)
    calls: list[tuple[str, list[PushItem]]] = field(default_factory=list)
    closed: int = 0

    def push(self, target: str, items: Sequence[PushItem]) -> list[PushResult]:
        assert len(items) <= self.max_batch_size
        self.calls.append((target, list(items)))
        if self.fail_calls:
            raise self.fail_calls.pop(0)
        results = []
        for item in items:
            if item.match_value in self.reject:
                results.append(PushResult(item.key, Outcome.REJECTED, reason="INVALID: no"))
            elif item.match_value in self.retry:
                results.append(PushResult(item.key, Outcome.RETRY, reason="busy"))
            else:
                results.append(PushResult(item.key, Outcome.OK, external_id=f"x{item.key}"))
        return results

    def close(self) -> None:
        self.closed += 1

    @property
    def pushed(self) -> list[str]:
        return [item.match_value for _, items in self.calls for item in items]


class Setup:
    def __init__(self, project: Project) -> None:
        self.project = project
        self.fakes = {"alpha": FakeDestination(), "beta": FakeDestination()}
        folder = project.config.mappings_dir / "destinations"
        folder.mkdir()
        for name in self.fakes:
            (folder / f"{name}.toml").write_text(dedent(MAPPING.format(name=name)))
        self.mappings = compile_destinations(project.config)

    def make(self, entry: ConnectorEntry, config: Config) -> Destination:
        return self.fakes[entry.name]

    def pull(self, people: list[dict[str, object]]) -> None:
        summary = self.project.run({"people": [records_page(people)]})
        assert summary.status == "ok"

    def delete(self, ids: list[str]) -> None:
        summary = self.project.run({"people": [records_page([], deleted=ids)]})
        assert summary.status == "ok"

    def push(self, **kwargs: object) -> PushReport:
        return run_push(
            self.project.config,
            self.project.engine,
            "run-1",
            mappings=self.mappings,
            make_destination=self.make,
            **kwargs,  # type: ignore[arg-type]
        )

    def ledger(self, destination: str) -> dict[str, tuple[object, ...]]:
        with transaction(self.project.engine) as bulk:
            rows = bulk.connection.exec_driver_sql(
                bulk.sql(
                    "SELECT profile_id, state_hash, rejected_hash, external_id, attempts, "
                    "last_outcome, last_error FROM push_ledger WHERE destination = ?"
                ),
                (destination,),
            ).all()
        return {row[0]: tuple(row[1:]) for row in rows}


def anchored_first(first: str, second: str) -> tuple[str, str]:
    """Two record ids, `first` and `second` with the same number, the first one's record id
    the smaller: a profile of both is named after the first."""
    return next(
        (f"{first}{n}", f"{second}{n}")
        for n in itertools.count()
        if stable_id("crm", "people", f"{first}{n}") < stable_id("crm", "people", f"{second}{n}")
    )


@pytest.fixture
def setup(tmp_path: Path, store_url: str) -> Iterator[Setup]:
    project = Project(tmp_path, store_url, extra_config=DESTINATIONS)
    try:
        made = Setup(project)
        made.pull(PEOPLE)
        yield made
    finally:
        project.close()


def test_first_push_sends_everyone_in_batches_and_records_ok(setup: Setup) -> None:
    report = setup.push()
    alpha = setup.fakes["alpha"]
    assert sorted(alpha.pushed) == sorted(p["email"] for p in PEOPLE)
    assert [len(items) for _, items in alpha.calls] == [2, 2, 1]
    assert report.counts["planned"] == report.counts["pushed_ok"] == 10
    (sent,) = [i for _, items in alpha.calls for i in items if i.match_value == "p0@example.com"]
    assert sent.fields == {"full_name": "Person 0", "score": 0}
    ledger = setup.ledger("alpha")
    assert len(ledger) == 5
    assert all(
        row[2] == f"x{key}" and row[3] == 0 and row[4] == "ok" for key, row in ledger.items()
    )
    assert alpha.closed == 1


def test_a_rerun_or_restart_sends_nothing_and_only_changes_go_out(setup: Setup) -> None:
    setup.push()
    alpha = setup.fakes["alpha"]
    alpha.calls.clear()
    again = setup.push()
    assert alpha.calls == []
    assert again.counts["unchanged"] == 10 and again.counts["planned"] == 0
    # Nothing to send: the destination is not even opened.
    assert alpha.closed == 1

    # A restart is a new engine on the same store: the ledger is all it needs.
    setup.project.engine.dispose()
    assert setup.push().counts["planned"] == 0

    changed = dict(PEOPLE[3], name="someone else", updated_at="2030-01-01T00:00:00Z")
    setup.pull([changed])
    report = setup.push()
    assert alpha.pushed == ["p3@example.com"]
    assert report.counts["pushed_ok"] == 2 and report.counts["unchanged"] == 8


def test_a_rejected_record_does_not_block_its_batch_nor_come_back_until_it_changes(
    setup: Setup,
) -> None:
    alpha = setup.fakes["alpha"]
    alpha.reject = {"p1@example.com"}
    report = setup.push(only=["alpha"])
    assert report.counts["rejected"] == 1 and report.counts["pushed_ok"] == 4
    row = next(r for r in setup.ledger("alpha").values() if r[4] == "rejected")
    assert row[0] is None and row[1] is not None and row[3] == 1 and row[5] == "INVALID: no"

    alpha.calls.clear()
    assert setup.push(only=["alpha"]).counts["planned"] == 0
    assert alpha.calls == []

    setup.pull([dict(PEOPLE[1], score="99", updated_at="2030-01-01T00:00:00Z")])
    alpha.reject = set()
    report = setup.push(only=["alpha"])
    assert alpha.pushed == ["p1@example.com"]
    assert report.counts["pushed_ok"] == 1
    assert all(r[4] == "ok" and r[1] is None for r in setup.ledger("alpha").values())


def test_retry_is_sent_again_next_run_with_attempts_counted(setup: Setup) -> None:
    alpha = setup.fakes["alpha"]
    alpha.retry = {"p2@example.com"}
    assert setup.push(only=["alpha"]).counts["retry"] == 1
    setup.push(only=["alpha"])
    assert alpha.pushed.count("p2@example.com") == 2
    (row,) = [r for r in setup.ledger("alpha").values() if r[4] == "retry"]
    assert row[0] is None and row[3] == 2 and row[5] == "busy"

    alpha.retry = set()
    assert setup.push(only=["alpha"]).counts["pushed_ok"] == 1
    assert all(r[4] == "ok" and r[3] == 0 for r in setup.ledger("alpha").values())


def test_a_state_acknowledged_before_a_retry_is_sent_again(setup: Setup) -> None:
    # The retried write may have landed (its answer lost): after it, the destination may
    # hold the changed state, so going back to the acknowledged one is a change to send.
    setup.push(only=["alpha"])
    alpha = setup.fakes["alpha"]
    alpha.retry = {"p2@example.com"}
    setup.pull([dict(PEOPLE[2], name="changed", updated_at="2030-01-01T00:00:00Z")])
    assert setup.push(only=["alpha"]).counts["retry"] == 1
    alpha.retry = set()
    alpha.calls.clear()
    setup.pull([dict(PEOPLE[2], updated_at="2030-01-02T00:00:00Z")])
    planned = preview(setup.project.config, setup.project.engine, setup.mappings)
    assert [p.change for p in planned if p.destination == "alpha"] == ["failed before"]
    report = setup.push(only=["alpha"])
    (sent,) = [item for _, items in alpha.calls for item in items]
    assert (sent.match_value, sent.fields["full_name"]) == ("p2@example.com", "Person 2")
    assert report.counts["pushed_ok"] == 1


@pytest.mark.parametrize(
    "error", [FatalConnectorError("bad field"), RetryableError("still down")], ids=str
)
def test_a_failing_destination_does_not_stop_another(setup: Setup, error: Exception) -> None:
    alpha, beta = setup.fakes["alpha"], setup.fakes["beta"]
    alpha.fail_calls = [error]
    report = setup.push()
    assert len(alpha.calls) == 1  # the failure ends alpha's pass for this run
    assert sorted(beta.pushed) == sorted(p["email"] for p in PEOPLE)
    assert report.counts["destinations_failed"] == 1
    assert report.errors == [f"alpha: {error}"]
    assert report.counts["retry"] == 2 and report.counts["pushed_ok"] == 5
    assert {r[4] for r in setup.ledger("alpha").values()} == {"retry"}
    assert alpha.closed == 1

    alpha.calls.clear()
    setup.push()
    assert sorted(alpha.pushed) == sorted(p["email"] for p in PEOPLE)
    assert beta.pushed.count("p0@example.com") == 1


def test_a_destination_whose_secret_is_unset_fails_alone(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    unset = ConfigError(
        [
            Problem(
                "syncd.toml",
                "destinations.alpha.options.access_token",
                "environment variable ALPHA_TOKEN is not set",
                "export ALPHA_TOKEN",
            )
        ]
    )
    made = setup.make

    def make(entry: ConnectorEntry, config: Config) -> Destination:
        if entry.name == "alpha":
            raise unset
        return made(entry, config)

    monkeypatch.setattr(setup, "make", make)
    report = setup.push()
    assert report.errors == [f"alpha: {unset}"]
    assert report.counts["destinations_failed"] == 1
    assert sorted(setup.fakes["beta"].pushed) == sorted(p["email"] for p in PEOPLE)


def test_a_destination_that_finds_its_secret_unset_when_it_logs_in_fails_alone(
    setup: Setup,
) -> None:
    unset = ConfigError(
        [Problem("syncd.toml", "destinations.alpha.options.password", "not set", "export P")]
    )
    setup.fakes["alpha"].fail_calls.append(unset)
    report = setup.push()
    assert report.errors == [f"alpha: {unset}"]
    assert report.counts["destinations_failed"] == 1
    assert sorted(setup.fakes["beta"].pushed) == sorted(p["email"] for p in PEOPLE)


def test_missing_match_value_is_skipped_and_counted(setup: Setup) -> None:
    setup.pull([{"id": "9", "name": "no email", "phone": "+14155550134", "score": "1"}])
    report = setup.push()
    assert report.counts["skipped_no_key"] == 2 and report.counts["pushed_ok"] == 10


def test_dry_run_and_preview_send_and_record_nothing(setup: Setup) -> None:
    counts = push_destinations(setup.project.config, setup.project.engine, "run-1", dry_run=True)
    assert counts["planned"] == 10 and counts["pushed_ok"] == 0
    assert setup.ledger("alpha") == {}
    planned = preview(setup.project.config, setup.project.engine, setup.mappings)
    assert {(p.destination, p.change) for p in planned} == {("alpha", "new"), ("beta", "new")}
    assert len(planned) == 10
    assert all(call == [] for call in (setup.fakes["alpha"].calls, setup.fakes["beta"].calls))


def test_batches_stay_full_across_planner_chunks(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Chunks of 3 profiles, batches of 2: [3, 2] must go as [2, 2, 1], not [2, 1, 2].
    monkeypatch.setattr(push_module, "plan_chunks", partial(plan_chunks, chunk_size=3))
    setup.push()
    assert [len(items) for _, items in setup.fakes["alpha"].calls] == [2, 2, 1]


def test_a_profile_that_only_changed_its_id_is_not_pushed_again(setup: Setup) -> None:
    setup.push()
    alpha = setup.fakes["alpha"]
    alpha.calls.clear()
    before = setup.ledger("alpha")
    # A second record of person 0, the same in every pushed field, whose id is smaller than
    # the first one's: the profile is now named after it.
    first = stable_id("crm", "people", "0")
    twin = next(str(n) for n in itertools.count(100) if stable_id("crm", "people", str(n)) < first)
    setup.pull([dict(PEOPLE[0], id=twin)])
    after = setup.ledger("alpha")
    renamed = profile_id_for(stable_id("crm", "people", twin))
    assert renamed in after and renamed not in before
    assert after[renamed] == before[profile_id_for(first)]
    report = setup.push()
    assert alpha.calls == []
    assert report.counts["unchanged"] == 10


def test_two_pushed_profiles_that_merge_keep_the_survivors_entry(setup: Setup) -> None:
    setup.push()
    before = setup.ledger("alpha")
    # Persons 0 and 1 turn out to share a phone: one profile, named after the smaller of
    # their records; the other's entry cannot take that name, which has its own, and goes.
    setup.pull([dict(PEOPLE[0], phone="+14155550100"), dict(PEOPLE[1], phone="+14155550100")])
    after = setup.ledger("alpha")
    anchor, other = sorted(stable_id("crm", "people", n) for n in ("0", "1"))
    survivor, merged_away = profile_id_for(anchor), profile_id_for(other)
    assert after[survivor] == before[survivor]
    assert set(after) == set(before) - {merged_away}
    report = setup.push()
    assert report.counts["pushed_ok"] == 2  # the merged profile changed, at both destinations


def test_a_profile_named_again_after_a_merge_is_compared_with_what_was_pushed_last(
    setup: Setup,
) -> None:
    # Two people, the one with the larger email anchoring (smaller record id) and scoring
    # more. They merge: the merged state goes to the record the anchor was pushed to, not to
    # the smaller email. Then the anchor is deleted: the profile takes the other's old name
    # with the anchor's entry, whose email it no longer has, so its own state goes out to
    # its own email.
    large, small = anchored_first("b", "a")
    people = [
        {"id": small, "email": f"{small}@example.com", "name": "small", "score": "1"},
        {"id": large, "email": f"{large}@example.com", "name": "large", "score": "9"},
    ]
    setup.pull(people)
    setup.push()
    setup.pull([dict(person, phone="+14155550100") for person in people])
    merged = setup.push()
    assert merged.counts["pushed_ok"] == 2
    alpha = setup.fakes["alpha"]
    assert alpha.pushed[-1] == f"{large}@example.com"
    alpha.calls.clear()
    setup.delete([large])
    again = setup.push()
    assert again.counts["pushed_ok"] == 2
    (sent,) = [item for _, items in alpha.calls for item in items]
    assert (sent.match_value, sent.fields["score"]) == (f"{small}@example.com", 1)


def test_a_name_left_by_a_removed_profile_is_taken_with_the_renamed_profiles_entries(
    setup: Setup,
) -> None:
    # x is pushed, deleted (its profile goes, its entry stays), then comes back as a copy of
    # y under a smaller record id: y's profile takes x's old name. Compared with x's old
    # entry it would look changed; what the destination holds is y's, so nothing goes out.
    x, y = anchored_first("x", "y")
    person_y = {"id": y, "email": f"{y}@example.com", "name": "why", "score": "2"}
    setup.pull([{"id": x, "email": f"{x}@example.com", "name": "ex", "score": "1"}])
    setup.push()
    setup.delete([x])
    setup.pull([person_y])
    setup.push()
    alpha = setup.fakes["alpha"]
    alpha.calls.clear()
    setup.pull([dict(person_y, id=x)])
    report = setup.push()
    assert alpha.calls == []
    assert report.counts["planned"] == 0
