"""The client seam: every failure classified, retried only when retryable, budget respected."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import urllib3
from hubspot.crm.lists.exceptions import ApiException as ListApiException
from hubspot.crm.objects.exceptions import ApiException, ServiceException

from connectors.hubspot.client import (
    HubSpotClient,
    HubSpotRejected,
    classify,
    describe,
    refusals,
)
from connectors.hubspot.emulator import Fault, FaultKind, HubSpotEmulator
from syncd.budget import RequestBudget
from syncd.errors import AuthError, FatalConnectorError, RetryableError
from syncd.retry import RetryPolicy
from tests.connectors.hubspot.hubspot_support import ClientFactory, ManualClock, Waits


class FakeAnswer:
    """What ApiException reads from an HTTP answer."""

    def __init__(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.status = status
        self.reason = "reason"
        self.data = body
        self._headers = headers

    def getheaders(self) -> dict[str, str]:
        return self._headers


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (ApiException(http_resp=FakeAnswer(429, b"{}", {"Retry-After": "3"})), RetryableError),
        (ServiceException(status=503, reason="unavailable"), RetryableError),
        (ListApiException(status=423, reason="locked"), RetryableError),
        (ApiException(status=401, reason="no"), AuthError),
        (ListApiException(status=403, reason="scopes"), AuthError),
        (ApiException(status=404, reason="missing"), HubSpotRejected),
        (ApiException(status=400, reason="bad"), HubSpotRejected),
        (ApiException(status=0, reason="SSLError"), FatalConnectorError),
        (
            urllib3.exceptions.ReadTimeoutError(urllib3.HTTPConnectionPool("h"), "/", "timed out"),
            RetryableError,
        ),
        (urllib3.exceptions.ProtocolError("Connection aborted."), RetryableError),
        (ConnectionResetError(104, "reset"), RetryableError),
    ],
)
def test_every_failure_is_classified(error: Exception, kind: type[Exception]) -> None:
    assert type(classify(error)) is kind


def test_429_wait_comes_from_retry_after_else_the_interval_header() -> None:
    with_header = ApiException(http_resp=FakeAnswer(429, b"{}", {"Retry-After": "4"}))
    interval = ApiException(
        http_resp=FakeAnswer(429, b"{}", {"X-HubSpot-RateLimit-Interval-Milliseconds": "10000"})
    )
    first, second = classify(with_header), classify(interval)
    assert isinstance(first, RetryableError)
    assert isinstance(second, RetryableError)
    assert (first.retry_after, second.retry_after) == (4.0, 10.0)


def test_classify_refuses_what_is_not_a_client_failure() -> None:
    with pytest.raises(TypeError):
        classify(KeyError("x"))


QUOTED = "phone 06 12 34 56 78 for Jane Doe"
"""What HubSpot's messages may quote of a refused value: no pattern finds every such thing."""


def _refused(status: int, body: dict[str, Any]) -> str:
    return str(classify(ApiException(http_resp=FakeAnswer(status, json.dumps(body).encode(), {}))))


def test_a_refused_value_is_described_by_its_code_and_property_never_by_the_value() -> None:
    listed = [
        {
            "isValid": False,
            "message": f"{QUOTED} is invalid",
            "error": "INVALID_OPTION",
            "name": "lifecyclestage",
        },
        {
            "isValid": False,
            "message": "Email address jane@x.io is invalid",
            "error": "INVALID_EMAIL",
            "name": "email",
        },
    ]
    body = {
        "category": "VALIDATION_ERROR",
        "message": f"Property values were not valid: {json.dumps(listed)}",
    }
    assert _refused(400, body) == (
        "HubSpot answered 400 VALIDATION_ERROR: INVALID_OPTION (lifecyclestage): not one of the "
        "property's options; INVALID_EMAIL (email): not a valid email address"
    )


def test_a_message_is_never_passed_on_only_the_category_and_the_properties_named() -> None:
    conflict = {"category": "CONFLICT", "message": f"Contact already exists: {QUOTED}"}
    assert _refused(409, conflict) == (
        "HubSpot answered 409 CONFLICT: another record holds this value of a unique property"
    )
    context = {"propertyName": ["phone"], "ids": ["jane@x.io"]}
    named = {
        "category": "VALIDATION_ERROR",
        "subCategory": "INVALID_PHONE",
        "message": QUOTED,
        "context": context,
    }
    assert _refused(400, named) == "HubSpot answered 400 VALIDATION_ERROR: INVALID_PHONE (phone)"
    assert _refused(503, {"category": "INTERNAL_ERROR", "message": QUOTED}) == (
        "HubSpot answered 503 INTERNAL_ERROR"
    )
    assert _refused(
        429, {"errorType": "RATE_LIMIT", "policyName": "SECONDLY", "message": QUOTED}
    ) == ("HubSpot rate limit (SECONDLY)")


def test_an_entry_of_a_partial_answer_is_described_by_its_codes_and_properties() -> None:
    entry = {
        "status": "error",
        "category": "VALIDATION_ERROR",
        "message": f"Property values were not valid: {QUOTED}",
        "context": {"ids": ["jane@x.io"]},
        "errors": [
            {
                "message": QUOTED,
                "code": "INVALID_PHONE_NUMBER",
                "context": {"propertyName": ["phone"]},
            }
        ],
    }
    assert describe("VALIDATION_ERROR", refusals(entry)) == (
        "VALIDATION_ERROR: INVALID_PHONE_NUMBER (phone)"
    )


def _page(client: HubSpotClient) -> Any:
    return client.get_page("contacts", 10, None, ["email"])


def test_429_is_retried_after_retry_after(
    emulator: HubSpotEmulator, make_client: ClientFactory
) -> None:
    waits = Waits()
    client = make_client(sleep=waits)
    emulator.faults.script("objects.list", Fault(FaultKind.RATE_LIMIT, retry_after=3), times=2)
    assert len(_page(client)["results"]) == 10
    assert waits.waits == [3.0, 3.0]
    assert [s for _, s in emulator.requests("objects.list")] == [429, 429, 200]


@pytest.mark.parametrize(
    "fault",
    [
        Fault(FaultKind.SERVER_ERROR, status=502),
        Fault(FaultKind.RESET),
        Fault(FaultKind.TIMEOUT, delay=0.5),
    ],
)
def test_transient_failures_are_retried_with_backoff(
    emulator: HubSpotEmulator, make_client: ClientFactory, fault: Fault
) -> None:
    waits = Waits()
    client = make_client(sleep=waits, timeout=0.2)
    emulator.faults.script("objects.search", fault)
    answer = client.search("contacts", {"limit": 5})
    assert len(answer["results"]) == 5
    assert len(waits.waits) == 1
    assert waits.waits[0] > 0


def test_retries_stop_after_the_policy_attempts(
    emulator: HubSpotEmulator, make_client: ClientFactory
) -> None:
    waits = Waits()
    client = make_client(sleep=waits, attempts=3)
    emulator.faults.script("objects.list", FaultKind.SERVER_ERROR, times=10)
    with pytest.raises(RetryableError):
        _page(client)
    assert len(emulator.requests("objects.list")) == 3
    assert len(waits.waits) == 2


def test_401_is_not_retried(emulator: HubSpotEmulator, make_client: ClientFactory) -> None:
    waits = Waits()
    client = make_client(sleep=waits, token="pat-revoked")
    with pytest.raises(AuthError, match="INVALID_AUTHENTICATION"):
        _page(client)
    assert waits.waits == []
    assert emulator.requests() == [("objects.list", 401)]


def test_a_refused_request_is_fatal_and_not_retried(
    emulator: HubSpotEmulator, make_client: ClientFactory
) -> None:
    waits = Waits()
    client = make_client(sleep=waits)
    with pytest.raises(HubSpotRejected) as caught:
        client.search("contacts", {"limit": 500})
    assert (caught.value.status, caught.value.category) == (400, "VALIDATION_ERROR")
    assert waits.waits == []


def test_client_budget_keeps_requests_within_the_emulator_limit() -> None:
    # The emulator allows 5 per 0.5 s; the client budgets 4, leaving room for network jitter.
    with HubSpotEmulator(people=5, rate_limit=(5, 0.5)) as emulator:
        client = HubSpotClient(
            emulator.url,
            emulator.access_token,
            budget=RequestBudget(4, 0.5),
            policy=RetryPolicy(attempts=1),
        )
        started = time.monotonic()
        try:
            for _ in range(12):
                _page(client)
        finally:
            client.close()
        elapsed = time.monotonic() - started
    assert {status for _, status in emulator.requests()} == {200}
    assert elapsed >= 1.0, "12 requests at 4 per 0.5 s need at least two full windows"


def test_a_429_from_the_account_budget_slows_the_shared_budget(
    emulator: HubSpotEmulator, make_client: ClientFactory
) -> None:
    clock = ManualClock()
    budget = RequestBudget(50, 10.0, clock=clock, sleep=clock.sleep)
    client = make_client(budget=budget)
    emulator.faults.script("objects.list", Fault(FaultKind.RATE_LIMIT, retry_after=2))
    _page(client)
    # The window was marked full for the Retry-After, so the retry waited for the budget too.
    assert sum(clock.slept) == pytest.approx(2.0)
