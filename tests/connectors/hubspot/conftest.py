"""Fixtures: a HubSpot emulator per test and clients pointed at it, closed afterwards."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from connectors.hubspot.client import HubSpotClient
from connectors.hubspot.emulator import HubSpotEmulator
from syncd.budget import RequestBudget
from syncd.retry import RetryPolicy
from tests.connectors.hubspot.hubspot_support import ClientFactory, ManualClock, RawApi, Waits


@pytest.fixture(scope="session")
def _running_emulator() -> Iterator[HubSpotEmulator]:
    # The clients of these tests sleep on a fake clock: they could not wait out a real limit.
    with HubSpotEmulator(
        people=60, seed=3, share=1.0, rate_limit=None, search_limit=None
    ) as running:
        yield running


@pytest.fixture
def emulator(_running_emulator: HubSpotEmulator) -> HubSpotEmulator:
    """60 contacts (everyone of 60 sample people), no request limits, fresh for each test."""
    _running_emulator.reset()
    return _running_emulator


@pytest.fixture
def make_api(emulator: HubSpotEmulator) -> Iterator[Callable[..., RawApi]]:
    """Builds RawApis on the emulator (its token unless told otherwise)."""
    made: list[RawApi] = []

    def build(token: str | None = None) -> RawApi:
        made.append(RawApi(emulator.url, emulator.access_token if token is None else token))
        return made[-1]

    yield build
    for api in made:
        api.close()


@pytest.fixture
def api(make_api: Callable[..., RawApi]) -> RawApi:
    """The client library with a valid token."""
    return make_api()


@pytest.fixture
def make_client(emulator: HubSpotEmulator) -> Iterator[ClientFactory]:
    """Builds HubSpotClients on the emulator (generous budget, fake sleep unless given)."""
    made: list[HubSpotClient] = []
    clock = ManualClock()

    def build(
        sleep: Callable[[float], None] | None = None,
        budget: RequestBudget | None = None,
        timeout: float = 5.0,
        attempts: int = 5,
        token: str | None = None,
    ) -> HubSpotClient:
        client = HubSpotClient(
            host=emulator.url,
            access_token=token or emulator.access_token,
            budget=budget or RequestBudget(10_000, 1.0, clock=clock, sleep=clock.sleep),
            timeout=timeout,
            policy=RetryPolicy(attempts=attempts),
            sleep=sleep or Waits(),
        )
        made.append(client)
        return client

    yield build
    for client in made:
        client.close()
