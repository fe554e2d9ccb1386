"""Pushing profiles to HubSpot through the engine, against its emulator on loopback.

The record a profile was pushed to goes on receiving its state when the profile gains a
smaller email; the store runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from textwrap import dedent

import pytest

from connectors.hubspot.emulator import HubSpotEmulator
from syncd.mapping.destinations import compile_destinations
from syncd.push import run_push
from tests.support.project import Project, records_page

DESTINATION = """
[destinations.hubspot]
type = "hubspot"
[destinations.hubspot.options]
access_token = {{ env = "PUSH_HS_TOKEN" }}
host = "{url}"
"""

CONTACTS = """
destination = "hubspot"
target = "contacts"
match = { identifier = "email" }

[fields]
firstname = "name"
"""

DOMAIN = "@push.test"
"""Our people's emails: none of the emulator's own contacts has one."""


@pytest.fixture
def hubspot(monkeypatch: pytest.MonkeyPatch) -> Iterator[HubSpotEmulator]:
    with HubSpotEmulator(people=5, seed=1, rate_limit=None) as running:
        monkeypatch.setenv("PUSH_HS_TOKEN", running.access_token)
        yield running


@pytest.fixture
def project(tmp_path: Path, store_url: str, hubspot: HubSpotEmulator) -> Iterator[Project]:
    made = Project(tmp_path, store_url, extra_config=DESTINATION.format(url=hubspot.url))
    folder = made.config.mappings_dir / "destinations"
    folder.mkdir()
    (folder / "contacts.toml").write_text(dedent(CONTACTS))
    try:
        yield made
    finally:
        made.close()


def pull(project: Project, people: list[dict[str, object]], deleted: Sequence[str] = ()) -> None:
    summary = project.run({"people": [records_page(people, deleted=deleted)]})
    assert summary.status == "ok"


def push(project: Project) -> Counter[str]:
    report = run_push(
        project.config, project.engine, "run", mappings=compile_destinations(project.config)
    )
    assert report.errors == []
    return report.counts


def our_contacts(hubspot: HubSpotEmulator) -> dict[str, dict[str, str]]:
    """Our people's contacts by email."""
    return {
        c.values["email"]: c.values
        for c in hubspot.records("contacts")
        if c.values.get("email", "").endswith(DOMAIN)
    }


def test_a_smaller_email_joining_a_pushed_profile_updates_its_contact(
    project: Project, hubspot: HubSpotEmulator
) -> None:
    zoe = {"id": "1", "email": f"zoe{DOMAIN}", "user_id": "u1", "name": "zoe"}
    pull(project, [zoe])
    push(project)
    assert list(our_contacts(hubspot)) == [f"zoe{DOMAIN}"]

    amy = {"id": "2", "email": f"amy{DOMAIN}", "user_id": "u1", "name": "amy"}
    pull(project, [dict(amy, updated_at="2030-01-01")])
    assert push(project)["pushed_ok"] == 1
    assert {email: c["firstname"] for email, c in our_contacts(hubspot).items()} == {
        f"zoe{DOMAIN}": "Amy"
    }
