"""Fault injection and the request budget of the emulator.

Faults are switched on per endpoint (or `*` for every endpoint, `write` for every write),
either by script (the next N calls) or by rate (a seeded share of calls). The budget and the
search limit are real sliding windows, like HubSpot's limits, so a client that ignores them
gets 429s.
"""

from __future__ import annotations

import enum
import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

WRITE_ENDPOINTS = frozenset(
    {
        "objects.batch_create",
        "objects.batch_update",
        "objects.batch_upsert",
        "objects.batch_archive",
        "objects.archive",
        "lists.add",
        "lists.remove",
        "lists.add_and_remove",
    }
)
BATCH_WRITES = frozenset({"objects.batch_create", "objects.batch_update", "objects.batch_upsert"})
SEARCH = "objects.search"
BURST_POLICY = "TEN_SECONDLY_ROLLING"
"""The policy a 429 names when the account's requests per 10 s are spent."""
SEARCH_POLICY = "SECONDLY"
"""The policy a 429 names when the search endpoints' requests per second are spent."""
DAILY_POLICY = "DAILY"


def policy_of(endpoint: str) -> str:
    """The policy of the limit a rate-limited call of `endpoint` is refused by."""
    return SEARCH_POLICY if endpoint == SEARCH else BURST_POLICY


class FaultKind(enum.Enum):
    """What goes wrong."""

    RATE_LIMIT = "rate_limit"
    """429 with Retry-After and the body of the endpoint's limit (`policy_of`)."""
    SERVER_ERROR = "server_error"
    """A 5xx (`status`) with HubSpot's error body."""
    TIMEOUT = "timeout"
    """The answer comes `delay` seconds late (past a short client timeout)."""
    RESET = "reset"
    """The connection is reset before any answer."""
    AUTH = "auth"
    """401 INVALID_AUTHENTICATION whatever token is sent."""
    PARTIAL = "partial"
    """A batch write answers 207: a `share` of its inputs fail with `error`."""


@dataclass(frozen=True)
class Fault:
    """One fault and its parameters (only those of its kind are used)."""

    kind: FaultKind
    status: int = 503
    retry_after: float = 1.0
    delay: float = 2.0
    error: str = "INVALID_EMAIL"
    share: float = 0.5

    def applies_to(self, endpoint: str) -> bool:
        return self.kind is not FaultKind.PARTIAL or endpoint in BATCH_WRITES


def _matches(selector: str, endpoint: str) -> bool:
    if selector == "*":
        return True
    if selector == "write":
        return endpoint in WRITE_ENDPOINTS
    return selector == endpoint


@dataclass
class _Scripted:
    selector: str
    fault: Fault
    remaining: int


@dataclass(frozen=True)
class _Rated:
    selector: str
    fault: Fault
    probability: float


class FaultInjector:
    """Decides, per request, whether and how it fails."""

    def __init__(self, seed: int = 0) -> None:
        self._lock = threading.Lock()
        self._scripted: list[_Scripted] = []
        self._rated: list[_Rated] = []
        self.rng = random.Random(seed)

    def script(self, endpoint: str, fault: Fault | FaultKind, times: int = 1) -> None:
        """Fail the next `times` calls of `endpoint` with `fault`."""
        with self._lock:
            self._scripted.append(_Scripted(endpoint, _as_fault(fault), times))

    def rate(self, endpoint: str, fault: Fault | FaultKind, probability: float) -> None:
        """Fail a seeded `probability` share of calls of `endpoint` with `fault`."""
        with self._lock:
            self._rated.append(_Rated(endpoint, _as_fault(fault), probability))

    def clear(self) -> None:
        """Switch every fault off."""
        with self._lock:
            self._scripted.clear()
            self._rated.clear()

    def draw(self, endpoint: str) -> Fault | None:
        """The fault for this call of `endpoint`, if any; scripted faults come first."""
        with self._lock:
            for entry in self._scripted:
                if _matches(entry.selector, endpoint) and entry.fault.applies_to(endpoint):
                    entry.remaining -= 1
                    if entry.remaining <= 0:
                        self._scripted.remove(entry)
                    return entry.fault
            for rated in self._rated:
                if (
                    _matches(rated.selector, endpoint)
                    and rated.fault.applies_to(endpoint)
                    and self.rng.random() < rated.probability
                ):
                    return rated.fault
        return None


def _as_fault(fault: Fault | FaultKind) -> Fault:
    return fault if isinstance(fault, Fault) else Fault(fault)


@dataclass(frozen=True)
class BudgetDecision:
    """Whether a request fits the budget, and the numbers for the rate-limit headers."""

    allowed: bool
    remaining: int
    retry_after: float
    policy: str


class SlidingWindow:
    """At most `max_requests` per sliding `window` seconds; `policy` names it in its 429."""

    def __init__(
        self,
        max_requests: int,
        window: float,
        policy: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_requests = max_requests
        self.window = window
        self.policy = policy
        self._clock = clock
        self._accepted: deque[float] = deque()
        self._lock = threading.Lock()

    def take(self) -> BudgetDecision:
        """Count one request if it fits; requests refused do not use the budget."""
        with self._lock:
            return self._decide(self._clock())

    def _decide(self, now: float) -> BudgetDecision:
        while self._accepted and now - self._accepted[0] >= self.window:
            self._accepted.popleft()
        if len(self._accepted) >= self.max_requests:
            wait = self.window - (now - self._accepted[0])
            return BudgetDecision(False, 0, wait, self.policy)
        self._accepted.append(now)
        return BudgetDecision(True, self.max_requests - len(self._accepted), 0.0, self.policy)


class RequestBudget(SlidingWindow):
    """HubSpot's burst limit: `max_requests` per sliding `window` seconds, plus a daily cap."""

    def __init__(
        self,
        max_requests: int = 100,
        window: float = 10.0,
        daily: int = 250_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(max_requests, window, BURST_POLICY, clock)
        self.daily = daily
        self.daily_used = 0

    def _decide(self, now: float) -> BudgetDecision:
        if self.daily_used >= self.daily:
            return BudgetDecision(False, 0, 3600.0, DAILY_POLICY)
        decision = super()._decide(now)
        if decision.allowed:
            self.daily_used += 1
        return decision

    def headers(self, remaining: int) -> dict[str, str]:
        """The X-HubSpot-RateLimit-* headers HubSpot puts on every answer."""
        per_second = max(1, math.floor(self.max_requests / self.window))
        return {
            "X-HubSpot-RateLimit-Daily": str(self.daily),
            "X-HubSpot-RateLimit-Daily-Remaining": str(max(0, self.daily - self.daily_used)),
            "X-HubSpot-RateLimit-Interval-Milliseconds": str(int(self.window * 1000)),
            "X-HubSpot-RateLimit-Max": str(self.max_requests),
            "X-HubSpot-RateLimit-Remaining": str(remaining),
            "X-HubSpot-RateLimit-Secondly": str(per_second),
            "X-HubSpot-RateLimit-Secondly-Remaining": str(min(per_second, remaining)),
        }
