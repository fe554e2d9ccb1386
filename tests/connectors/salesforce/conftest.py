"""A seeded Salesforce emulator per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from connectors.salesforce.emulator import DEFAULT_CREDENTIALS, SalesforceEmulator

PEOPLE = 600
"""Enough people for more than two 200-record pages of Contacts."""
SLOW = 1.6
"""Seconds a SLOW fault holds an answer: past the clients' 1 s timeout, with room for a busy CI."""


@pytest.fixture
def emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[SalesforceEmulator]:
    monkeypatch.setenv("SF_TEST_PASSWORD", DEFAULT_CREDENTIALS.password)
    monkeypatch.setenv("SF_TEST_TOKEN", DEFAULT_CREDENTIALS.security_token)
    monkeypatch.setenv("SF_TEST_CLIENT_ID", DEFAULT_CREDENTIALS.client_id)
    monkeypatch.setenv("SF_TEST_CLIENT_SECRET", DEFAULT_CREDENTIALS.client_secret)
    with SalesforceEmulator(people=PEOPLE, seed=7, slow_seconds=SLOW) as running:
        yield running
