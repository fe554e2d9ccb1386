"""Helpers shared by the HubSpot connector tests."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hubspot import HubSpot
from urllib3.util.retry import Retry

from connectors.hubspot.client import HubSpotClient

ClientFactory = Callable[..., HubSpotClient]
"""Builds a HubSpotClient on the test's emulator (see the `make_client` fixture)."""


@dataclass
class Waits:
    """A sleep that returns at once and remembers what it was asked to wait."""

    waits: list[float] = field(default_factory=list)

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@dataclass
class ManualClock:
    """A monotonic clock that only moves when something sleeps on it."""

    now: float = 1000.0
    slept: list[float] = field(default_factory=list)

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class Answers:
    """One API object of the library whose calls return the HTTP answer (status, data)."""

    def __init__(self, api: Any) -> None:
        self.api = api

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self.api, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            method(*args, **kwargs)
            return self.api.api_client.last_response

        return call


class RawApi:
    """The unmodified client library on the emulator, its pools closed by `close()`."""

    def __init__(self, url: str, token: str) -> None:
        hubspot = HubSpot(access_token=token, host=url, retry=Retry(total=False))
        self.basic = Answers(hubspot.crm.objects.basic_api)
        self.search = Answers(hubspot.crm.objects.search_api)
        self.batch = Answers(hubspot.crm.objects.batch_api)
        self.members = Answers(hubspot.crm.lists.memberships_api)

    def close(self) -> None:
        for answers in (self.basic, self.search, self.batch, self.members):
            answers.api.api_client.rest_client.pool_manager.clear()
