"""Connectors pointed at the emulator of the `emulator` fixture."""

from __future__ import annotations

from typing import Any

import requests
from simple_salesforce.api import Salesforce

from connectors.salesforce.client import OrgAdapter, SalesforceClient
from connectors.salesforce.emulator import DEFAULT_CREDENTIALS, SalesforceEmulator
from connectors.salesforce.options import SalesforceOptions
from syncd.budget import RequestBudget
from syncd.connector import EnvRef
from syncd.testing import FakeSleep, Sleep


def options_for(emulator: SalesforceEmulator, **overrides: Any) -> SalesforceOptions:
    """Options of a password login to `emulator`, small pages and a short timeout."""
    values: dict[str, Any] = {
        "instance_url": emulator.url,
        "username": DEFAULT_CREDENTIALS.username,
        "password": EnvRef(env="SF_TEST_PASSWORD"),
        "security_token": EnvRef(env="SF_TEST_TOKEN"),
        "page_size": 200,
        "timeout_seconds": 1.0,
        "bulk_poll_seconds": 0.01,
    }
    return SalesforceOptions(**(values | overrides))


def client_for(
    emulator: SalesforceEmulator, sleep: Sleep | None = None, **overrides: Any
) -> SalesforceClient:
    return SalesforceClient(options_for(emulator, **overrides), sleep=sleep or FakeSleep())


def raw_session(emulator: SalesforceEmulator, timeout: float = 1.0) -> requests.Session:
    """A requests session routing simple-salesforce's https URLs to the emulator."""
    session = requests.Session()
    session.mount("https://", OrgAdapter(RequestBudget(10_000, 1.0), timeout, emulator.url))
    return session


def raw_salesforce(emulator: SalesforceEmulator, timeout: float = 1.0) -> Salesforce:
    """The unmodified simple-salesforce client, logged in to the emulator by password."""
    creds = emulator.credentials
    return Salesforce(
        username=creds.username,
        password=creds.password,
        security_token=creds.security_token,
        session=raw_session(emulator, timeout),
    )
