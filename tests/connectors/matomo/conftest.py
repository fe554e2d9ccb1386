"""A seeded Matomo emulator per test, and sources pointed at it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from connectors.matomo.emulator import DEFAULT_TOKEN, MatomoEmulator
from connectors.matomo.options import MatomoOptions
from connectors.matomo.source import MatomoSource
from syncd.testing import FakeSleep

PEOPLE = 40
"""About 80 visits: eight or more pages of 10."""


@dataclass
class VirtualClock:
    """The emulator's clock: still unless a test moves it. At 0 the emulator's time is just
    after its newest action."""

    at: float = 0.0

    def __call__(self) -> float:
        return self.at


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def emulator(clock: VirtualClock) -> Iterator[MatomoEmulator]:
    with MatomoEmulator(people=PEOPLE, seed=11, slow_seconds=1.0, clock=clock) as running:
        yield running


SourceFactory = Callable[..., MatomoSource]


@pytest.fixture
def make_source(emulator: MatomoEmulator) -> Iterator[SourceFactory]:
    """Sources on the emulator (page size 10, 0.5 s timeout) on the emulator's time; closed
    after the test."""
    made: list[MatomoSource] = []

    def make(sleep: Callable[[float], None] | None = None, **options: Any) -> MatomoSource:
        settings = {
            "url": emulator.url,
            "site_id": 1,
            "token_auth": {"env": "MATOMO_TEST_TOKEN"},
            "page_size": 10,
            "timeout": 0.5,
            "budget": 1000,
            **options,
        }
        source = MatomoSource(
            MatomoOptions.model_validate(settings),
            DEFAULT_TOKEN,
            sleep=sleep or FakeSleep(),
            clock=lambda: float(emulator.now()),
        )
        made.append(source)
        return source

    yield make
    for source in made:
        source.close()
