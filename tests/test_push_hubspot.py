"""Pushing profiles to HubSpot through the engine, against its emulator on loopback.

The record a profile was pushed to goes on receiving its state when the profile gains a
smaller email, and a list holds the profiles that qualify for it, no more; the store runs
on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from textwrap import dedent

import pytest

from connectors.hubspot.emulator import FaultKind, HubSpotEmulator
from connectors.hubspot.emulator_data import CrmObject
from syncd.mapping.destinations import compile_destinations
from syncd.push import run_push
from syncd.store.db import transaction
from tests.support.project import Project, records_page

DESTINATION = """
[destinations.hubspot]
type = "hubspot"
[destinations.hubspot.options]
access_token = {{ env = "PUSH_HS_TOKEN" }}
host = "{url}"
retry_attempts = 1
"""

CONTACTS = """
destination = "hubspot"
target = "contacts"
match = { identifier = "email" }

[fields]
firstname = "name"
"""

NEWSLETTER = """
destination = "hubspot"
target = "list:1"
match = { identifier = "email" }
when = [{ trait = "score", op = "ne", value = 0 }]

[fields]
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
    (folder / "newsletter.toml").write_text(dedent(NEWSLETTER))
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


def our_contacts(hubspot: HubSpotEmulator) -> dict[str, CrmObject]:
    """Our people's contacts by email."""
    return {
        c.values["email"]: c
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
    assert {email: c.values["firstname"] for email, c in our_contacts(hubspot).items()} == {
        f"zoe{DOMAIN}": "Amy"
    }


def test_profiles_that_leave_a_list_are_taken_out_of_it_once_and_keep_their_contacts(
    project: Project, hubspot: HubSpotEmulator
) -> None:
    people = [
        {"id": str(n), "email": f"member{n}{DOMAIN}", "name": f"m{n}", "score": "1"}
        for n in range(3)
    ]
    pull(project, people)
    push(project)
    contacts = {email: c.id for email, c in our_contacts(hubspot).items()}
    assert hubspot.list_members("1") == set(contacts.values())

    # One no longer qualifies, one is gone with every record of it; the first removal fails.
    hubspot.faults.script("lists.add_and_remove", FaultKind.SERVER_ERROR)
    pull(project, [dict(people[0], score="0", updated_at="2030-01-01")], deleted=["1"])
    failed = push(project)
    assert (failed["left"], failed["retry"]) == (2, 2)
    assert hubspot.list_members("1") == set(contacts.values())
    counts = push(project)
    assert (counts["left"], counts["pushed_ok"]) == (2, 2)
    assert hubspot.list_members("1") == {contacts[f"member2{DOMAIN}"]}
    assert {email: c.id for email, c in our_contacts(hubspot).items()} == contacts

    requests = len(hubspot.requests())
    assert push(project)["planned"] == 0
    assert len(hubspot.requests()) == requests

    pull(project, [dict(people[0], score="2", updated_at="2030-01-02")])
    push(project)
    assert hubspot.list_members("1") == {contacts[f"member{n}{DOMAIN}"] for n in (0, 2)}


def test_a_contact_one_profile_leaves_and_another_now_holds_stays_in_the_list(
    project: Project, hubspot: HubSpotEmulator
) -> None:
    # A person's record deleted and created again under a new id: the old profile is gone,
    # a new one holds the same email. Then a profile splits: the part that keeps the id no
    # longer qualifies, the new part holds the member's email and does.
    pull(project, [{"id": "1", "email": f"ann{DOMAIN}", "name": "ann", "score": "1"}])
    push(project)
    pull(project, [{"id": "3", "email": f"ann{DOMAIN}", "name": "ann", "score": "1"}], ["1"])
    push(project)
    ann = our_contacts(hubspot)[f"ann{DOMAIN}"].id
    assert hubspot.list_members("1") == {ann}

    bo = {"id": "5", "email": f"bo{DOMAIN}", "user_id": "u5", "name": "bo", "score": "1"}
    cy = {"id": "6", "email": f"cy{DOMAIN}", "user_id": "u5", "name": "cy", "score": "0"}
    pull(project, [bo, cy])
    push(project)
    pull(project, [dict(bo, user_id="u9", updated_at="2030-01-01")])
    push(project)
    assert hubspot.list_members("1") == {ann, our_contacts(hubspot)[f"bo{DOMAIN}"].id}
    assert push(project)["planned"] == 0


def test_a_member_whose_entry_predates_kept_match_values_leaves_by_its_own_email(
    project: Project, hubspot: HubSpotEmulator
) -> None:
    person = {"id": "1", "email": f"early{DOMAIN}", "name": "early", "score": "1"}
    pull(project, [person])
    push(project)
    with transaction(project.engine) as bulk:
        bulk.connection.exec_driver_sql("UPDATE push_ledger SET match_value = NULL")
    pull(project, [dict(person, score="0", updated_at="2030-01-01")])
    assert push(project)["left"] == 1
    assert hubspot.list_members("1") == set()
