"""The request budget: a sliding window of requests, one per outside account in a process."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from syncd.budget import RequestBudget, account_fingerprint, shared_budget


@dataclass
class Clock:
    """A monotonic clock that moves only when something sleeps on it."""

    now: float = 100.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_a_full_window_waits_until_its_oldest_request_leaves_it() -> None:
    clock = Clock()
    budget = RequestBudget(2, 10.0, clock=clock, sleep=clock.sleep)
    assert [budget.acquire(), budget.acquire(), budget.acquire()] == [0.0, 0.0, 10.0]


def test_a_new_limit_keeps_the_requests_already_in_the_window() -> None:
    clock = Clock()
    budget = RequestBudget(2, 10.0, clock=clock, sleep=clock.sleep)
    budget.acquire()
    budget.acquire()
    budget.resize(3, 10.0)
    assert budget.acquire() == 0.0
    assert budget.acquire() == 10.0


def test_a_larger_limit_does_not_cut_short_a_penalty() -> None:
    clock = Clock()
    budget = RequestBudget(2, 10.0, clock=clock, sleep=clock.sleep)
    budget.penalize(30.0)
    budget.resize(5, 10.0)
    assert budget.acquire() == 30.0


def test_one_budget_per_account_whatever_limit_each_build_configures() -> None:
    account = ("test", "https://api.example.com", uuid.uuid4().hex)
    first = shared_budget(account, 100, 10.0)
    assert shared_budget(account, 100, 10.0) is first
    assert shared_budget((*account[:2], uuid.uuid4().hex), 100, 10.0) is not first
    # Those built before keep spending the same window, now at the new limit.
    assert shared_budget(account, 190, 10.0) is first
    assert (first.max_requests, first.per_seconds) == (190, 10.0)


def test_a_fingerprint_names_an_account_without_its_secret() -> None:
    secret = "pat-na1-0123456789abcdef"
    assert account_fingerprint(secret) == account_fingerprint(secret)
    assert account_fingerprint(secret) != account_fingerprint(secret + "x")
    assert secret not in account_fingerprint(secret)
