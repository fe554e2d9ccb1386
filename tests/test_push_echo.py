"""Echo suppression: three full cycles against the Salesforce and HubSpot emulators.

Pull both CRMs → unify → push to both → pull again. Our own writes come back on the next pull
with new modification stamps; they must change no profile and cause no new write. The pull
after that reads them once more, inside its look-back, and must count them unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from textwrap import dedent

import pytest

from connectors.hubspot.emulator import HubSpotEmulator
from connectors.salesforce.emulator import DEFAULT_CREDENTIALS, SalesforceEmulator
from syncd.config import load_config
from syncd.mapping.compiler import compile_mappings
from syncd.mapping.destinations import compile_destinations
from syncd.mapping.transforms import REGISTRY
from syncd.push import run_push
from syncd.runner import Pipeline
from syncd.store.db import open_store

PEOPLE = 40

SF_CONTACTS = """
source = "salesforce"
stream = "Contact"
primary_key = "Id"
updated_at = "SystemModstamp"
deleted = "IsDeleted"

[identifiers]
email = "Email"

[fields]
first_name = "FirstName | trim | title"
last_name = "LastName | trim"
city = "MailingCity | trim"
email = { from = "Email | email", on_error = "null" }
salesforce_key = "Syncd_Id__c"
"""

HS_CONTACTS = """
source = "hubspot"
stream = "contacts"
primary_key = "id"
updated_at = "updatedAt"

[identifiers]
email = "properties.email"

[fields]
first_name = "properties.firstname | trim | title"
last_name = "properties.lastname | trim"
city = "properties.city | trim"
email = { from = "properties.email | email", on_error = "null" }
hubspot_id = "id"
"""

# Every trait a pull maps from a CRM is written back to it with the profile's value, so the
# record we wrote maps back to exactly the profile's traits; the keys are never written.
TO_SALESFORCE = """
destination = "salesforce"
target = "Contact"
match = { trait = "salesforce_key" }

[fields]
FirstName = "first_name"
LastName = "last_name"
MailingCity = "city"
Email = "email"
"""

TO_HUBSPOT = """
destination = "hubspot"
target = "contacts"
match = { identifier = "email" }
when = [{ trait = "hubspot_id", op = "exists" }]

[fields]
firstname = "first_name"
lastname = "last_name"
city = "city"
"""


def _config(folder: Path, store_url: str, sf: SalesforceEmulator, hs: HubSpotEmulator) -> Path:
    salesforce = f"""
        instance_url = "{sf.url}"
        username = "{DEFAULT_CREDENTIALS.username}"
        password = {{ env = "ECHO_SF_PASSWORD" }}
        security_token = {{ env = "ECHO_SF_TOKEN" }}
        timeout_seconds = 5.0
        """
    hubspot = f"""
        access_token = {{ env = "ECHO_HS_TOKEN" }}
        host = "{hs.url}"
        """
    text = f"""
        [store]
        url = "{store_url}"

        [logging]
        file = "syncd.log"

        [sources.salesforce]
        type = "salesforce"
        [sources.salesforce.options]
        {salesforce}
        objects = ["Contact"]
        fields = {{ Contact = ["FirstName", "LastName", "Email", "MailingCity", "Syncd_Id__c"] }}

        [sources.hubspot]
        type = "hubspot"
        [sources.hubspot.options]
        {hubspot}
        objects = ["contacts"]
        properties = {{ contacts = ["email", "firstname", "lastname", "city"] }}

        [destinations.salesforce]
        type = "salesforce"
        [destinations.salesforce.options]
        {salesforce}

        [destinations.hubspot]
        type = "hubspot"
        [destinations.hubspot.options]
        {hubspot}
        """
    mappings = folder / "mappings"
    (mappings / "destinations").mkdir(parents=True)
    for name, body in {
        "sf_contacts.toml": SF_CONTACTS,
        "hs_contacts.toml": HS_CONTACTS,
        "destinations/salesforce.toml": TO_SALESFORCE,
        "destinations/hubspot.toml": TO_HUBSPOT,
    }.items():
        (mappings / name).write_text(dedent(body), encoding="utf-8")
    path = folder / "syncd.toml"
    path.write_text(dedent(text), encoding="utf-8")
    return path


@pytest.fixture
def crms(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[SalesforceEmulator, HubSpotEmulator]]:
    monkeypatch.setenv("ECHO_SF_PASSWORD", DEFAULT_CREDENTIALS.password)
    monkeypatch.setenv("ECHO_SF_TOKEN", DEFAULT_CREDENTIALS.security_token)
    with (
        SalesforceEmulator(people=PEOPLE, seed=7) as sf,
        HubSpotEmulator(people=PEOPLE, seed=7, share=0.8, rate_limit=None) as hs,
    ):
        monkeypatch.setenv("ECHO_HS_TOKEN", hs.access_token)
        # The org's admin filled the external-id field with the contact's email, so the
        # destination updates these contacts instead of creating new ones.
        normalize = REGISTRY["email"]([])
        for record_id in sf.ids("Contact"):
            email = sf.record("Contact", record_id)["Email"]
            if email:
                sf.modify("Contact", [record_id], Syncd_Id__c=normalize(email))
        yield sf, hs


def test_three_cycles_push_our_writes_once(
    crms: tuple[SalesforceEmulator, HubSpotEmulator], tmp_path: Path, store_url: str
) -> None:
    sf, hs = crms
    config = load_config(_config(tmp_path, store_url, sf, hs))
    mappings = compile_mappings(config)
    destinations = compile_destinations(config)
    engine = open_store(config.store_url)
    try:
        cycles = []
        for _ in range(3):
            sf_writes, hs_writes = len(sf.writes), len(hs.write_log)
            summary = Pipeline(config, mappings, engine).run_once(push=False)
            report = run_push(config, engine, summary.run_id, mappings=destinations)
            assert summary.status == "ok", summary.errors
            assert report.errors == []
            cycles.append(
                (
                    summary.counts,
                    report.counts,
                    len(sf.writes) - sf_writes,
                    len(hs.write_log) - hs_writes,
                )
            )
    finally:
        engine.dispose()

    first, *later = cycles
    assert first[0]["profiles_written"] > 0
    assert first[1]["pushed_ok"] == first[1]["planned"] > 0
    assert first[1]["rejected"] == first[1]["retry"] == 0
    assert first[2] > 0 and first[3] > 0
    # Our writes came back as changed records, and changed nothing.
    assert sum(c[0].get("changed", 0) for c in later) >= first[1]["pushed_ok"]
    # Each read looks back past its cursor: the last one reads our writes again and finds
    # every record unchanged, so it writes none.
    last_pull = later[-1][0]
    assert last_pull["records_read"] > 0
    assert last_pull.get("unchanged") == last_pull["records_read"]
    assert last_pull.get("changed", 0) == last_pull.get("new", 0) == 0
    for counts, pushed, sf_writes, hs_writes in later:
        assert counts.get("profiles_written", 0) == 0
        assert pushed["planned"] == pushed["pushed_ok"] == 0
        assert pushed["unchanged"] == first[1]["planned"]
        assert (sf_writes, hs_writes) == (0, 0)
