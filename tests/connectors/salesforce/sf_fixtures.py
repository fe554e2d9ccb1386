"""Connectors pointed at the emulator of the `emulator` fixture."""

from __future__ import annotations

from typing import Any

from connectors.salesforce.client import SalesforceClient
from connectors.salesforce.emulator import DEFAULT_CREDENTIALS, SalesforceEmulator
from connectors.salesforce.options import SalesforceOptions
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
        "timeout_seconds": 0.5,
        "bulk_poll_seconds": 0.01,
    }
    return SalesforceOptions(**(values | overrides))


def client_for(
    emulator: SalesforceEmulator, sleep: Sleep | None = None, **overrides: Any
) -> SalesforceClient:
    return SalesforceClient(options_for(emulator, **overrides), sleep=sleep or FakeSleep())
