"""Fault injection for the emulator: what goes wrong, on which endpoint, and when.

Faults are switched per endpoint group, either by script (the next N calls) or by rate (a
seeded share of calls, so a failing run can be replayed). The request budget is separate: it
is not a fault but the org's real limit, refusing calls beyond N per window.
"""

from __future__ import annotations

import enum
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field


class Endpoint(enum.Enum):
    """The groups of endpoints a fault can target."""

    LOGIN = "login"
    QUERY = "query"
    SOBJECTS = "sobjects"
    COLLECTIONS = "collections"
    BULK_QUERY = "bulk_query"
    BULK_INGEST = "bulk_ingest"


def endpoint_of(path: str) -> Endpoint | None:
    """The group of a request path; None for paths outside the emulated API."""
    if path.startswith(("/services/Soap/u/", "/services/oauth2/token")):
        return Endpoint.LOGIN
    parts = path.split("/")
    # /services/data/vXX.X/<resource>/...
    if len(parts) < 5 or parts[1:3] != ["services", "data"]:
        return None
    resource = parts[4]
    if resource in ("query", "queryAll"):
        return Endpoint.QUERY
    if resource == "sobjects":
        return Endpoint.SOBJECTS
    if resource == "composite":
        return Endpoint.COLLECTIONS
    if resource == "jobs" and len(parts) > 5:
        return Endpoint.BULK_QUERY if parts[5] == "query" else Endpoint.BULK_INGEST
    return None


class FaultKind(enum.Enum):
    """What the emulator does instead of (or on top of) answering normally."""

    REQUEST_LIMIT = "request_limit"
    """403 REQUEST_LIMIT_EXCEEDED, Salesforce's way of saying "too many requests"."""
    SERVER_ERROR = "server_error"
    """503 SERVER_UNAVAILABLE."""
    SLOW = "slow"
    """Answer normally, but only after `slow_seconds` (past the client's timeout)."""
    RESET = "reset"
    """Reset the connection without an answer."""
    PARTIAL = "partial"
    """Write requests: reject a share of the records with FIELD_CUSTOM_VALIDATION_EXCEPTION."""
    EXPIRED_SESSION = "expired_session"
    """401 INVALID_SESSION_ID once; a fresh login works again."""


@dataclass
class _Rate:
    share: float
    rng: random.Random


@dataclass
class FaultPlan:
    """The faults switched on, consulted once per request by the HTTP layer."""

    slow_seconds: float = 2.0
    partial_share: float = 0.25
    _scripted: dict[Endpoint, deque[FaultKind]] = field(default_factory=dict)
    _rates: dict[tuple[Endpoint, FaultKind], _Rate] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def script(self, endpoint: Endpoint, kind: FaultKind, times: int = 1) -> None:
        """Fail the next `times` calls to `endpoint` with `kind` (after faults already queued)."""
        with self._lock:
            self._scripted.setdefault(endpoint, deque()).extend([kind] * times)

    def rate(self, endpoint: Endpoint, kind: FaultKind, share: float, seed: int = 0) -> None:
        """Fail a seeded `share` of the calls to `endpoint` with `kind`; share 0 switches off."""
        with self._lock:
            if share <= 0:
                self._rates.pop((endpoint, kind), None)
            else:
                self._rates[(endpoint, kind)] = _Rate(share, random.Random(seed))

    def clear(self) -> None:
        """Switch every fault off."""
        with self._lock:
            self._scripted.clear()
            self._rates.clear()

    def take(self, endpoint: Endpoint) -> FaultKind | None:
        """The fault for this call to `endpoint`, if any (scripted faults come first)."""
        with self._lock:
            queue = self._scripted.get(endpoint)
            if queue:
                return queue.popleft()
            for (target, kind), rate in self._rates.items():
                if target is endpoint and rate.rng.random() < rate.share:
                    return kind
            return None

    def rejected_positions(self, count: int, seed: int) -> set[int]:
        """Which records of a batch of `count` a PARTIAL fault rejects (at least one)."""
        rng = random.Random(seed)
        chosen = {i for i in range(count) if rng.random() < self.partial_share}
        return chosen or ({rng.randrange(count)} if count else set())


class RequestBudget:
    """The org's API request limit: `limit` calls per `window` seconds, then refusals."""

    def __init__(
        self, limit: int, window: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._calls: deque[float] = deque()
        self._lock = threading.Lock()

    def spend(self) -> tuple[bool, int]:
        """Count one call; (allowed, calls used in the current window)."""
        with self._lock:
            now = self._clock()
            while self._calls and now - self._calls[0] >= self.window:
                self._calls.popleft()
            if len(self._calls) >= self.limit:
                return False, len(self._calls)
            self._calls.append(now)
            return True, len(self._calls)
