"""The live part of `syncd demo`: the Salesforce, HubSpot and Matomo emulators on loopback,
seeded with the same overlapping people, the configured sources and destinations pointed at
them, and the shop's simulated web traffic sent through the real ingest endpoint.

This is the one place of the engine package that names concrete connectors: it is a showcase
of them, not part of the pipeline, which reaches connectors only through their specs.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from typing import Any

from connectors.hubspot.emulator import DEFAULT_TOKEN, HubSpotEmulator
from connectors.matomo.emulator import DEFAULT_TOKEN as MATOMO_TOKEN
from connectors.matomo.emulator import MatomoEmulator
from connectors.salesforce.emulator import DEFAULT_CREDENTIALS, SalesforceEmulator
from syncd.config import Config, ConnectorEntry
from syncd.mapping.transforms import normalize_email

DEMO_WRITE_KEY = "demo-write-key"


@dataclasses.dataclass(frozen=True)
class Emulators:
    """Where the running emulators listen, and the settings that point a connector at each."""

    salesforce: SalesforceEmulator
    hubspot: HubSpotEmulator
    matomo: MatomoEmulator

    def overrides(self) -> Mapping[str, dict[str, Any]]:
        return {
            "salesforce": {
                "instance_url": self.salesforce.url,
                "username": DEFAULT_CREDENTIALS.username,
            },
            "hubspot": {"host": self.hubspot.url},
            "matomo": {"url": self.matomo.url},
        }


@contextmanager
def running_emulators(people: int, seed: int = 7) -> Iterator[Emulators]:
    """The emulators, with the environment holding their (public, fake) credentials and the
    demo's ingest write key."""
    secrets = {
        "SF_PASSWORD": DEFAULT_CREDENTIALS.password,
        "SF_TOKEN": DEFAULT_CREDENTIALS.security_token,
        "HUBSPOT_TOKEN": DEFAULT_TOKEN,
        "MATOMO_TOKEN": MATOMO_TOKEN,
        "SYNCD_WEB_WRITE_KEY": DEMO_WRITE_KEY,
    }
    saved = {name: os.environ.get(name) for name in secrets}
    os.environ.update(secrets)
    try:
        with ExitStack() as stack:
            salesforce = stack.enter_context(SalesforceEmulator(people=people, seed=seed))
            hubspot = stack.enter_context(HubSpotEmulator(people=people, seed=seed))
            matomo = stack.enter_context(MatomoEmulator(people=people, seed=seed))
            _fill_external_ids(salesforce)
            yield Emulators(salesforce, hubspot, matomo)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _fill_external_ids(salesforce: SalesforceEmulator) -> None:
    """What an admin does before the first push: give each contact its external id (here its
    email), so that upserts by Syncd_Id__c update contacts instead of creating new ones."""
    for record_id in salesforce.ids("Contact"):
        email = salesforce.record("Contact", record_id).get("Email")
        if email:
            salesforce.modify("Contact", [record_id], Syncd_Id__c=normalize_email(email))


def pointed_at(config: Config, emulators: Emulators) -> Config:
    """The config with its CRM sources and destinations enabled and aimed at the emulators."""

    def aim(entries: Mapping[str, ConnectorEntry]) -> dict[str, ConnectorEntry]:
        aimed = {}
        for name, entry in entries.items():
            update = emulators.overrides().get(entry.spec.kind)
            if update is not None:
                options = entry.options.model_copy(update=update)
                entry = dataclasses.replace(entry, enabled=True, options=options)
            aimed[name] = entry
        return aimed

    return dataclasses.replace(
        config, sources=aim(config.sources), destinations=aim(config.destinations)
    )
