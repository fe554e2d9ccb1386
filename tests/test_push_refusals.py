"""A record a destination refuses is logged and kept in the ledger by the error's code and
the fields it names, never by the values the destination's message quotes.

Both CRMs quote what they refuse (an address too long for its field, an option that is not
one), and that can be anything a person typed: nothing of it may reach the logs or
`push_ledger.last_error`. Against both emulators on loopback; the store runs on SQLite and
PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from textwrap import dedent

import pytest
from structlog.testing import capture_logs

from connectors.hubspot.emulator import HubSpotEmulator
from connectors.salesforce.emulator import DEFAULT_CREDENTIALS, SalesforceEmulator
from syncd.mapping.destinations import compile_destinations
from syncd.push import run_push
from syncd.store.db import transaction
from tests.support.project import Project, records_page

ADDRESS = "12 Rue de la Paix, Apartment 5B, Paris 75002 France"
"""Longer than the 40 characters of a Salesforce MailingCity."""
PHONE = "06 12 34 56 78"
NAME = "Jane Doe"

PEOPLE = """
source = "crm"
stream = "people"
primary_key = "id"

[identifiers]
email = "email"

[fields]
name = "name"
address = "address"
stage = "stage"
"""

DESTINATIONS = """
[destinations.salesforce]
type = "salesforce"
[destinations.salesforce.options]
instance_url = "{salesforce}"
username = "{username}"
password = {{ env = "REFUSALS_SF_PASSWORD" }}
security_token = {{ env = "REFUSALS_SF_TOKEN" }}
retry_attempts = 1

[destinations.hubspot]
type = "hubspot"
[destinations.hubspot.options]
access_token = {{ env = "REFUSALS_HS_TOKEN" }}
host = "{hubspot}"
retry_attempts = 1
"""

TO_SALESFORCE = """
destination = "salesforce"
target = "Contact"
match = { identifier = "email" }

[fields]
LastName = "name"
MailingCity = "address"
"""

TO_HUBSPOT = """
destination = "hubspot"
target = "contacts"
match = { identifier = "email" }

[fields]
firstname = "name"
lifecyclestage = "stage"
"""


@pytest.fixture
def project(tmp_path: Path, store_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Project]:
    with (
        SalesforceEmulator(people=5, seed=1) as salesforce,
        HubSpotEmulator(people=5, seed=1, rate_limit=None) as hubspot,
    ):
        monkeypatch.setenv("REFUSALS_SF_PASSWORD", DEFAULT_CREDENTIALS.password)
        monkeypatch.setenv("REFUSALS_SF_TOKEN", DEFAULT_CREDENTIALS.security_token)
        monkeypatch.setenv("REFUSALS_HS_TOKEN", hubspot.access_token)
        config = DESTINATIONS.format(
            salesforce=salesforce.url, username=DEFAULT_CREDENTIALS.username, hubspot=hubspot.url
        )
        made = Project(tmp_path, store_url, mappings={"people.toml": PEOPLE}, extra_config=config)
        folder = made.config.mappings_dir / "destinations"
        folder.mkdir()
        (folder / "salesforce.toml").write_text(dedent(TO_SALESFORCE))
        (folder / "hubspot.toml").write_text(dedent(TO_HUBSPOT))
        try:
            yield made
        finally:
            made.close()


def last_errors(project: Project) -> dict[str, str]:
    with transaction(project.engine) as bulk:
        rows = bulk.connection.exec_driver_sql(
            "SELECT destination, last_outcome, last_error FROM push_ledger"
        ).all()
    assert {row[1] for row in rows} == {"rejected"}
    return {row[0]: row[2] for row in rows}


def test_refusals_are_logged_and_recorded_by_code_and_field_only(project: Project) -> None:
    jane = {
        "id": "1",
        "email": "jane@refusals.test",
        "name": NAME,
        "address": ADDRESS,
        "stage": f"phone {PHONE} for {NAME}",
    }
    assert project.run({"people": [records_page([jane])]}).status == "ok"
    with capture_logs() as lines:
        report = run_push(
            project.config, project.engine, "run", mappings=compile_destinations(project.config)
        )
    assert report.errors == []
    assert report.counts["rejected"] == 2
    assert last_errors(project) == {
        "salesforce": "STRING_TOO_LONG (MailingCity): the value is longer than the field allows",
        "hubspot": "VALIDATION_ERROR: INVALID_OPTION (lifecyclestage): "
        "not one of the property's options",
    }
    rejected = sorted(
        (line["destination"], line["reason"])
        for line in lines
        if line["event"] == "record rejected"
    )
    assert rejected == sorted(last_errors(project).items())
    # The HubSpot client logs the request HubSpot refused, before the record is rejected.
    assert "hubspot request failed" in {line["event"] for line in lines}
    logged = repr(lines)
    for personal in ("Rue de la Paix", PHONE, "Jane", "refusals.test"):
        assert personal not in logged
