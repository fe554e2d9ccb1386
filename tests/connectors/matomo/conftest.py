"""A seeded Matomo emulator per test, and sources pointed at it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from connectors.matomo.emulator import DEFAULT_TOKEN, MatomoEmulator
from connectors.matomo.options import MatomoOptions
from connectors.matomo.source import MatomoSource
from syncd.testing import FakeSleep

PEOPLE = 40
"""About 80 visits: eight or more pages of 10."""


@pytest.fixture
def emulator() -> Iterator[MatomoEmulator]:
    with MatomoEmulator(people=PEOPLE, seed=11, slow_seconds=1.0) as running:
        yield running


SourceFactory = Callable[..., MatomoSource]


@pytest.fixture
def make_source(emulator: MatomoEmulator) -> Iterator[SourceFactory]:
    """Sources on the emulator (page size 10, 0.5 s timeout); closed after the test."""
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
            MatomoOptions.model_validate(settings), DEFAULT_TOKEN, sleep=sleep or FakeSleep()
        )
        made.append(source)
        return source

    yield make
    for source in made:
        source.close()
