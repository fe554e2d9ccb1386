"""One request budget per outside account, shared by every pull and push against it."""

from __future__ import annotations

import hashlib
import threading
import time
from collections import deque
from collections.abc import Callable


class RequestBudget:
    """A sliding-window limit: at most `max_requests` in any `per_seconds` window.

    Sliding rather than token bucket because that is how the CRMs count (HubSpot: 100 per
    10 s); spending the whole window and then waiting uses the budget fully without a 429.
    """

    def __init__(
        self,
        max_requests: int,
        per_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if max_requests < 1 or per_seconds <= 0:
            raise ValueError("a budget needs max_requests >= 1 and per_seconds > 0")
        self.max_requests = max_requests
        self.per_seconds = per_seconds
        self._clock = clock
        self._sleep = sleep
        self._sent: deque[float] = deque()
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Block until one more request fits in the window; returns the seconds waited."""
        waited = 0.0
        while True:
            with self._lock:
                now = self._clock()
                while self._sent and now - self._sent[0] >= self.per_seconds:
                    self._sent.popleft()
                if len(self._sent) < self.max_requests:
                    self._sent.append(now)
                    return waited
                delay = self.per_seconds - (now - self._sent[0])
            self._sleep(delay)
            waited += delay

    def resize(self, max_requests: int, per_seconds: float) -> None:
        """Take a newly configured limit; the requests already in the window still count."""
        if max_requests < 1 or per_seconds <= 0:
            raise ValueError("a budget needs max_requests >= 1 and per_seconds > 0")
        with self._lock:
            # A window penalized (entries stamped in the future) stays full at the new size:
            # a larger limit must not cut short a Retry-After.
            if self._sent and self._sent[0] > self._clock():
                self._sent.extend([self._sent[-1]] * (max_requests - len(self._sent)))
            self.max_requests = max_requests
            self.per_seconds = per_seconds

    def penalize(self, seconds: float) -> None:
        """The system said to slow down: treat the window as full for `seconds`."""
        with self._lock:
            until = self._clock() + seconds - self.per_seconds
            self._sent = deque([until] * self.max_requests)


_SHARED: dict[tuple[str, ...], RequestBudget] = {}
_SHARED_LOCK = threading.Lock()


def shared_budget(account: tuple[str, ...], max_requests: int, per_seconds: float) -> RequestBudget:
    """The one budget of `account` in this process, for every source and destination of it.

    Sources and destinations are built anew for each run, and the system counts their requests
    together: a budget of their own would start each run with an empty window, and a pull and
    a push could together exceed the account's limit. `account` names the system and the
    account (host, user...), never a secret in clear (see `account_fingerprint`). The budget
    keeps its window when a later build configures another limit, so that those built before
    still share it; the last limit configured holds.
    """
    with _SHARED_LOCK:
        budget = _SHARED.get(account)
        if budget is None:
            budget = _SHARED[account] = RequestBudget(max_requests, per_seconds)
        else:
            budget.resize(max_requests, per_seconds)
        return budget


def account_fingerprint(secret: str) -> str:
    """A name for an account known by a secret (a token, a client id), revealing nothing of it."""
    return hashlib.sha256(secret.encode()).hexdigest()[:16]
