"""The one retry policy: retry RetryableError with backoff and jitter, obey Retry-After.

Connectors classify failures into the error tree; nothing else is retried, so a bad request
or refused credentials fail at once instead of burning the API budget.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_random_exponential

from syncd.errors import RetryableError

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try: attempts in all, and the cap on one backoff wait in seconds."""

    attempts: int = 5
    max_wait: float = 30.0
    initial_wait: float = 0.5


def _wait_for(policy: RetryPolicy) -> Callable[[RetryCallState], float]:
    backoff = wait_random_exponential(multiplier=policy.initial_wait, max=policy.max_wait)

    def wait(state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, RetryableError) and error.retry_after is not None:
            return min(error.retry_after, policy.max_wait)
        return backoff(state)

    return wait


def call_with_retry(
    fn: Callable[[], T],
    policy: RetryPolicy = RetryPolicy(),
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run `fn`, retrying RetryableError up to `policy.attempts`; other errors propagate."""
    retrying = Retrying(
        retry=retry_if_exception_type(RetryableError),
        stop=stop_after_attempt(policy.attempts),
        wait=_wait_for(policy),
        sleep=sleep,
        reraise=True,
    )
    return retrying(fn)
