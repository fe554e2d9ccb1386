"""One request budget per outside account, shared by every pull and push against it."""

from __future__ import annotations

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

    def penalize(self, seconds: float) -> None:
        """The system said to slow down: treat the window as full for `seconds`."""
        with self._lock:
            until = self._clock() + seconds - self.per_seconds
            self._sent = deque([until] * self.max_requests)
