"""A count over the last N days drops when an event ages out of the window, even for a
profile nothing else touches."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

import syncd.profiles
import syncd.runner
from syncd.connector import Page, RawRecord
from syncd.inspect import export_profiles
from syncd.mapping.transforms import format_timestamp
from syncd.store.db import transaction
from syncd.timeutil import utcnow
from tests.support.project import Project, records_page, visits_project

RULES = """
[computed.views_1d]
op = "count"
event = "Page Viewed"
within_days = 1
"""


def _visit_of_ada(project: Project, at: datetime) -> None:
    """A first run: Ada's record and one page view of hers at `at`."""
    visit = {"id": "v1", "email": "ada@x.com", "at": format_timestamp(at)}
    project.run(
        {
            "people": [records_page([{"id": "a", "email": "ada@x.com"}])],
            "visits": [Page([RawRecord(visit, "test:v1")], None)],
        }
    )


def _views(project: Project) -> object:
    with transaction(project.engine) as bulk:
        (profile,) = list(export_profiles(bulk))
    return profile["traits"]["views_1d"]


@pytest.fixture
def project(store_url: str, tmp_path: Path) -> Iterator[Project]:
    project = visits_project(tmp_path, store_url, RULES)
    yield project
    project.close()


@pytest.fixture
def start(project: Project) -> datetime:
    """Now, after a first run has counted a page view of Ada's 23 hours ago."""
    now = utcnow()
    _visit_of_ada(project, now - timedelta(hours=23))
    return now


def test_an_event_leaving_the_window_is_uncounted_on_the_next_run(
    project: Project, start: datetime, monkeypatch: pytest.MonkeyPatch
) -> None:
    later = start + timedelta(hours=2)
    monkeypatch.setattr(syncd.profiles, "utcnow", lambda: later)
    summary = project.run({"people": [], "visits": []})
    assert summary.counts["profiles_written"] == 1
    assert _views(project) == 0


def test_the_first_run_counts_the_event(project: Project) -> None:
    _visit_of_ada(project, utcnow())
    assert _views(project) == 1


def test_a_dry_run_between_refreshes_does_not_hide_an_event_leaving_the_window(
    project: Project, start: datetime, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A dry run refreshes nothing: the window is still looked at from the last refresh.
    after_it_left = start + timedelta(hours=1, minutes=30)
    monkeypatch.setattr(syncd.runner, "utcnow", lambda: after_it_left)
    assert project.run({"people": [], "visits": []}, dry_run=True).status == "ok"
    later = start + timedelta(hours=2)
    monkeypatch.setattr(syncd.runner, "utcnow", lambda: later)
    monkeypatch.setattr(syncd.profiles, "utcnow", lambda: later)
    project.run({"people": [], "visits": []})
    assert _views(project) == 0


def test_verify_compares_with_a_rebuild_as_of_the_stored_profiles(
    project: Project, start: datetime, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The event leaves the window after the last run: the stored count is right as of then.
    monkeypatch.setattr(syncd.profiles, "utcnow", lambda: start + timedelta(hours=2))
    assert project.pipeline().verify() == []
    assert _views(project) == 1


def test_an_event_leaving_while_the_profiles_are_computed_is_found_by_the_next_run(
    project: Project, start: datetime, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The run computes its profiles at 0:55, when the view still counts, and takes longer
    # than that: it leaves the window at 1:00. The next run must look for events that left
    # after 0:55, not after the time the run got to its window check.
    computed_at = iter([start + timedelta(minutes=55)])
    monkeypatch.setattr(
        syncd.profiles, "utcnow", lambda: next(computed_at, start + timedelta(minutes=65))
    )
    project.run({"people": [], "visits": []})
    monkeypatch.setattr(syncd.profiles, "utcnow", lambda: start + timedelta(hours=2))
    project.run({"people": [], "visits": []})
    assert _views(project) == 0
