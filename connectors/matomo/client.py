"""The Matomo Reporting API over httpx: one budgeted, retried, classified call at a time.

The token is sent as a POST form field, never in the URL: Matomo 5 refuses "secure only"
tokens in a query string, and URLs end up in proxy and access logs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import httpx

from syncd.budget import RequestBudget
from syncd.errors import AuthError, FatalConnectorError, RetryableError
from syncd.retry import RetryPolicy, call_with_retry

# Matomo says "token" or "access" in every message about refused credentials.
_AUTH_WORDS = ("token", "access", "logged in", "authenticate")


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After", "")
    try:
        return max(float(value), 0.0)
    except ValueError:
        return None


def classify(response: httpx.Response) -> Any:
    """The JSON result of a Matomo answer, or the syncd error it stands for."""
    status = response.status_code
    if status == 429 or status >= 500:
        raise RetryableError(f"Matomo answered HTTP {status}", _retry_after(response))
    try:
        body = response.json()
    except ValueError:
        raise FatalConnectorError(
            f"Matomo answered HTTP {status} with no JSON; is `url` the Matomo base URL "
            "(the folder holding index.php)?"
        ) from None
    is_error = isinstance(body, dict) and body.get("result") == "error"
    message = str(body.get("message", "")) if is_error else ""
    if status in (401, 403) or (is_error and any(w in message.lower() for w in _AUTH_WORDS)):
        raise AuthError(f"Matomo refused the token_auth: {message or f'HTTP {status}'}")
    if is_error or status >= 400:
        raise FatalConnectorError(f"Matomo refused the request: {message or f'HTTP {status}'}")
    return body


class MatomoClient:
    """Calls Reporting API methods on one Matomo instance with one token."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        budget: RequestBudget,
        timeout: float,
        policy: RetryPolicy,
        sleep: Callable[[float], None],
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._http = httpx.Client(
            base_url=url.rstrip("/") + "/", timeout=timeout, transport=transport
        )
        self._token = token
        self._budget = budget
        self._policy = policy
        self._sleep = sleep

    def call(self, method: str, params: Mapping[str, str | int]) -> Any:
        """The JSON result of `method`, retried on transient failures."""
        query = {"module": "API", "method": method, "format": "JSON", **params}
        return call_with_retry(lambda: self._once(query), self._policy, self._sleep)

    def _once(self, query: Mapping[str, str | int]) -> Any:
        self._budget.acquire()
        try:
            response = self._http.post(
                "index.php", params=dict(query), data={"token_auth": self._token}
            )
        except httpx.TimeoutException as error:
            raise RetryableError(f"Matomo did not answer in time: {error!r}") from error
        except httpx.TransportError as error:
            raise RetryableError(f"connection to Matomo failed: {error!r}") from error
        return classify(response)

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()
