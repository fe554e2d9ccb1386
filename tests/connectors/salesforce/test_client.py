"""The client seam: every failure classified, every request budgeted, sessions renewed once."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from simple_salesforce.exceptions import (
    SalesforceAuthenticationFailed,
    SalesforceExpiredSession,
    SalesforceGeneralError,
    SalesforceMalformedRequest,
    SalesforceOperationError,
    SalesforceRefusedRequest,
    SalesforceResourceNotFound,
)

from connectors.salesforce.client import QueryLocatorLost, SalesforceClient, classify
from connectors.salesforce.emulator import SalesforceEmulator
from connectors.salesforce.faults import Endpoint, FaultKind
from syncd.budget import RequestBudget
from syncd.errors import AuthError, ConfigError, FatalConnectorError, RetryableError
from syncd.testing import FakeSleep
from tests.connectors.salesforce.sf_fixtures import client_for, options_for

URL = "https://example.my.salesforce.com/services/data/v59.0/query/"


def body(code: str) -> Any:
    """A REST error body as exception_handler passes it (parsed JSON, despite the bytes hint)."""
    return [{"errorCode": code, "message": "Email: invalid email address: jane@example.com"}]


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (SalesforceRefusedRequest(URL, 403, "q", body("REQUEST_LIMIT_EXCEEDED")), RetryableError),
        (SalesforceRefusedRequest(URL, 403, "q", body("INSUFFICIENT_ACCESS")), FatalConnectorError),
        (SalesforceGeneralError(URL, 503, "q", body("SERVER_UNAVAILABLE")), RetryableError),
        (SalesforceGeneralError(URL, 500, "q", b"<html>oops</html>"), RetryableError),
        (SalesforceGeneralError(URL, 409, "q", body("CONFLICT")), FatalConnectorError),
        (SalesforceMalformedRequest(URL, 400, "q", body("MALFORMED_QUERY")), FatalConnectorError),
        (SalesforceMalformedRequest(URL, 400, "q", body("UNABLE_TO_LOCK_ROW")), RetryableError),
        (
            SalesforceMalformedRequest(URL, 400, "q", body("INVALID_QUERY_LOCATOR")),
            QueryLocatorLost,
        ),
        (SalesforceResourceNotFound(URL, 404, "q", body("NOT_FOUND")), FatalConnectorError),
        (SalesforceExpiredSession(URL, 401, "q", body("INVALID_SESSION_ID")), AuthError),
        (SalesforceAuthenticationFailed("INVALID_LOGIN", "bad password"), AuthError),
        (requests.ReadTimeout(), RetryableError),
        (requests.ConnectionError(ConnectionResetError(104, "reset")), RetryableError),
        (requests.exceptions.ChunkedEncodingError(), RetryableError),
        (requests.exceptions.InvalidURL(), FatalConnectorError),
        (SalesforceOperationError("Job failure"), FatalConnectorError),
    ],
)
def test_classify(error: Exception, expected: type[Exception]) -> None:
    classified = classify(error)
    assert type(classified) is expected
    assert "jane@example.com" not in str(classified), "record contents leaked into the error"


def test_classify_refuses_what_is_not_a_salesforce_failure() -> None:
    with pytest.raises(TypeError):
        classify(ValueError("bug"))


class CountingBudget(RequestBudget):
    def __init__(self) -> None:
        super().__init__(10_000, 1.0)
        self.spent = 0

    def acquire(self) -> float:
        self.spent += 1
        return super().acquire()


def test_every_request_spends_the_budget(emulator: SalesforceEmulator) -> None:
    budget = CountingBudget()
    client = SalesforceClient(options_for(emulator), sleep=FakeSleep(), budget=budget)
    client.query("SELECT COUNT() FROM Contact", False)
    list(client.bulk_query("SELECT Id FROM Lead", include_deleted=False))
    client.close()
    # The login, then every API call the emulator counted.
    assert budget.spent == 1 + emulator.state.calls
    assert emulator.state.calls >= 5


def test_a_full_budget_waits_instead_of_calling(emulator: SalesforceEmulator) -> None:
    waits: list[float] = []
    now = [0.0]

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    budget = RequestBudget(2, 10.0, clock=lambda: now[0], sleep=sleep)
    client = SalesforceClient(options_for(emulator), sleep=FakeSleep(), budget=budget)
    client.query("SELECT COUNT() FROM Contact", False)
    client.query("SELECT COUNT() FROM Contact", False)
    client.close()
    assert waits == [10.0]


def test_an_expired_bulk_session_is_renewed_once(emulator: SalesforceEmulator) -> None:
    client = client_for(emulator)
    client.query("SELECT COUNT() FROM Lead", False)
    emulator.expire_sessions()
    assert list(client.bulk_query("SELECT Id FROM Lead", include_deleted=False))
    assert len(emulator.state.sessions) == 1
    client.close()


def test_a_session_refused_after_a_fresh_login_is_an_auth_error(
    emulator: SalesforceEmulator,
) -> None:
    sleep = FakeSleep()
    client = client_for(emulator, sleep)
    emulator.inject(Endpoint.BULK_QUERY, FaultKind.EXPIRED_SESSION, times=2)
    with pytest.raises(AuthError, match="after a fresh login"):
        list(client.bulk_query("SELECT Id FROM Lead", include_deleted=False))
    client.close()
    assert sleep.waits == []


def test_refused_credentials_fail_at_once(emulator: SalesforceEmulator) -> None:
    sleep = FakeSleep()
    emulator.refuse_logins(100)
    client = client_for(emulator, sleep)
    with pytest.raises(AuthError, match="INVALID_LOGIN"):
        client.query("SELECT COUNT() FROM Lead", False)
    client.close()
    assert sleep.waits == []


def test_transient_failures_are_retried_then_given_up(emulator: SalesforceEmulator) -> None:
    sleep = FakeSleep()
    emulator.inject(Endpoint.QUERY, FaultKind.SERVER_ERROR, times=3)
    client = client_for(emulator, sleep, retry_attempts=3)
    with pytest.raises(RetryableError):
        client.query("SELECT COUNT() FROM Lead", False)
    assert len(sleep.waits) == 2
    assert client.query("SELECT COUNT() FROM Lead", False)["totalSize"] > 0
    client.close()


def test_a_missing_secret_names_the_variable(
    emulator: SalesforceEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SF_TEST_TOKEN")
    client = client_for(emulator)
    with pytest.raises(ConfigError, match="SF_TEST_TOKEN"):
        client.query("SELECT COUNT() FROM Lead", False)
    client.close()
