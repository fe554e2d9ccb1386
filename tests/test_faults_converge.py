"""Under injected faults (5xx, resets, request limits) on both CRMs, repeated runs converge to
exactly the state of a fault-free run: the same CRM records, the same profiles."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from connectors.hubspot.emulator import HubSpotEmulator
from connectors.hubspot.emulator_faults import FaultKind as HubSpotFault
from connectors.salesforce.emulator import DEFAULT_CREDENTIALS, SalesforceEmulator
from connectors.salesforce.faults import Endpoint
from connectors.salesforce.faults import FaultKind as SalesforceFault
from syncd.config import load_config
from syncd.inspect import export_profiles
from syncd.mapping.compiler import compile_mappings
from syncd.mapping.destinations import compile_destinations
from syncd.mapping.transforms import REGISTRY
from syncd.runner import Pipeline
from syncd.store.db import open_store, transaction
from tests.conftest import _fresh_pg_database
from tests.test_push_echo import PEOPLE, _config

SALESFORCE_FIELDS = ("FirstName", "LastName", "Email", "MailingCity", "Syncd_Id__c")
HUBSPOT_PROPERTIES = ("email", "firstname", "lastname", "city")
MOST_CYCLES = 8


@contextmanager
def crms(faulty: bool) -> Iterator[tuple[SalesforceEmulator, HubSpotEmulator]]:
    with (
        SalesforceEmulator(people=PEOPLE, seed=7) as sf,
        HubSpotEmulator(people=PEOPLE, seed=7, share=0.8, rate_limit=None, fault_seed=3) as hs,
    ):
        normalize = REGISTRY["email"]([])
        for record_id in sf.ids("Contact"):
            email = sf.record("Contact", record_id)["Email"]
            if email:
                sf.modify("Contact", [record_id], Syncd_Id__c=normalize(email))
        if faulty:
            for endpoint in (Endpoint.QUERY, Endpoint.COLLECTIONS):
                sf.inject_rate(endpoint, SalesforceFault.SERVER_ERROR, 0.25, seed=1)
                sf.inject_rate(endpoint, SalesforceFault.RESET, 0.1, seed=2)
            hs.faults.rate("*", HubSpotFault.SERVER_ERROR, 0.25)
            hs.faults.rate("*", HubSpotFault.RESET, 0.1)
        yield sf, hs


def converge(
    folder: Path, store_url: str, faulty: bool
) -> tuple[object, object, list[str], int, int]:
    """Run pull + push until a run is clean and pushes nothing; the final states."""
    with crms(faulty) as (sf, hs):
        config = load_config(_config(folder, store_url, sf, hs))
        mappings, destinations = compile_mappings(config), compile_destinations(config)
        engine = open_store(config.store_url)
        try:
            cycles = 0
            while True:
                cycles += 1
                summary = Pipeline(config, mappings, engine, destinations=destinations).run_once()
                if summary.status == "ok" and not summary.counts.get("push_planned"):
                    break
                if cycles == MOST_CYCLES:
                    pytest.fail(f"no clean, quiet run after {MOST_CYCLES} cycles")
            with transaction(engine) as bulk:
                profiles = [json.dumps(p, sort_keys=True) for p in export_profiles(bulk)]
        finally:
            engine.dispose()
        contacts = {
            record_id: {f: sf.record("Contact", record_id).get(f) for f in SALESFORCE_FIELDS}
            for record_id in sf.ids("Contact")
        }
        people = {
            obj.id: {p: obj.values.get(p) for p in HUBSPOT_PROPERTIES} for obj in hs.records()
        }
        server_errors = sum(1 for _, status in hs.requests() if status >= 500)
        return contacts, people, profiles, cycles, server_errors


def test_faulty_runs_end_in_the_fault_free_state(
    tmp_path: Path, store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ECHO_SF_PASSWORD", DEFAULT_CREDENTIALS.password)
    monkeypatch.setenv("ECHO_SF_TOKEN", DEFAULT_CREDENTIALS.security_token)
    monkeypatch.setenv("ECHO_HS_TOKEN", HubSpotEmulator(people=1).access_token)
    if store_url.startswith("sqlite"):
        clean_url = store_url.replace("store.db", "clean.db")
    else:
        clean_url = _fresh_pg_database(store_url.rsplit("/", 1)[0] + "/postgres")
    clean = converge(tmp_path / "clean", clean_url, faulty=False)
    faulty = converge(tmp_path / "faulty", store_url, faulty=True)
    assert faulty[0] == clean[0]
    assert faulty[1] == clean[1]
    assert faulty[2] == clean[2]
    assert clean[3] == 2  # fault-free: one cycle pushes, the next is quiet
    assert clean[4] == 0
    assert faulty[4] > 0  # the faults really were served
