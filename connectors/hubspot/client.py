"""The one narrow seam between syncd and `hubspot-api-client`.

Every request goes through `HubSpotClient._send`: it waits for the account's request budget,
sends once (urllib3's own retries are switched off so that nothing retries behind our back),
classifies any failure into the syncd error tree, and `call_with_retry` retries what is
retryable. Answers are read as the JSON HubSpot sent (`_preload_content=False`), so the
payloads we store are HubSpot's own, and large pages skip the library's model building.

    failure                                  becomes
    429 (Retry-After / interval header)      RetryableError(retry_after=...)
    5xx, 408, 423, timeouts, resets          RetryableError
    401, 403                                 AuthError
    other 4xx                                HubSpotRejected (a FatalConnectorError)
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
import urllib3
from hubspot import HubSpot
from hubspot.crm.lists import exceptions as list_exceptions
from hubspot.crm.objects import exceptions as object_exceptions
from urllib3.util.retry import Retry

from syncd.budget import RequestBudget
from syncd.errors import AuthError, ConnectorError, FatalConnectorError, RetryableError
from syncd.retry import RetryPolicy, call_with_retry

log = structlog.get_logger(__name__)

# Each generated module of the client has its own exception classes.
API_EXCEPTIONS: tuple[type[Exception], ...] = (
    object_exceptions.ApiException,
    list_exceptions.ApiException,
)
CLIENT_FAILURES: tuple[type[BaseException], ...] = (
    *API_EXCEPTIONS,
    urllib3.exceptions.HTTPError,
    OSError,
)
RETRYABLE_STATUSES = frozenset({408, 423, 425, 429})
EMAIL_PATTERN = re.compile(r"[^\s\"'@]+@[^\s\"'@]+\.[A-Za-z]{2,}")
PHONE_PATTERN = re.compile(r"\+\d[\d\s().-]{6,}\d|\(?\b\d{3}\)?[\s.-]\d{3}[\s.-]\d{4}\b")


class HubSpotRejected(FatalConnectorError):
    """HubSpot refused a request for good (4xx other than auth and rate limits)."""

    def __init__(self, status: int, category: str, message: str) -> None:
        super().__init__(f"HubSpot answered {status} {category}: {message}")
        self.status = status
        self.category = category
        self.message = message


@dataclass(frozen=True)
class Answer:
    """A successful answer: its status (200, 201, 207...) and JSON body."""

    status: int
    body: Any


def redact(text: str) -> str:
    """Error messages quote the values they refuse; keep emails and phones out of logs."""
    return PHONE_PATTERN.sub("<phone>", EMAIL_PATTERN.sub("<email>", text))


def _error_body(raw: Any) -> dict[str, Any]:
    try:
        body = json.loads(raw or b"{}")
    except (ValueError, TypeError):
        return {}
    return body if isinstance(body, dict) else {}


def _retry_after(headers: Any) -> float | None:
    """Retry-After when HubSpot sent it, else the length of the rate-limit window."""
    if not headers:
        return None
    value = headers.get("Retry-After")
    if value is not None:
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
    interval = headers.get("X-HubSpot-RateLimit-Interval-Milliseconds")
    if interval is not None and str(interval).isdigit():
        return int(interval) / 1000
    return None


def classify(error: BaseException) -> ConnectorError:
    """Turn anything the client library raised into the syncd error tree."""
    if isinstance(error, API_EXCEPTIONS):
        status = int(getattr(error, "status", 0) or 0)
        body = _error_body(getattr(error, "body", None))
        category = str(body.get("category") or body.get("errorType") or "UNKNOWN")
        message = redact(str(body.get("message") or getattr(error, "reason", "") or ""))
        if status == 429:
            return RetryableError(
                f"HubSpot rate limit ({body.get('policyName', 'unknown policy')}): {message}",
                retry_after=_retry_after(getattr(error, "headers", None)),
            )
        if status >= 500 or status in RETRYABLE_STATUSES:
            return RetryableError(f"HubSpot answered {status} {category}: {message}")
        if status in {401, 403}:
            return AuthError(f"HubSpot refused the access token ({status} {category}): {message}")
        if status == 0:
            return FatalConnectorError(f"HubSpot request could not be made: {message}")
        return HubSpotRejected(status, category, message)
    if isinstance(error, urllib3.exceptions.HTTPError | OSError):
        return RetryableError(f"HubSpot unreachable: {type(error).__name__}")
    raise TypeError(f"not a HubSpot client failure: {error!r}") from error


class HubSpotClient:
    """The HubSpot requests syncd makes, each budgeted, classified and retried."""

    def __init__(
        self,
        host: str,
        access_token: str,
        budget: RequestBudget,
        timeout: float = 30.0,
        policy: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        # Retry(total=False): urllib3 raises the first failure instead of retrying GETs itself.
        hubspot = HubSpot(access_token=access_token, host=host, retry=Retry(total=False))
        self._basic = hubspot.crm.objects.basic_api
        self._search = hubspot.crm.objects.search_api
        self._batch = hubspot.crm.objects.batch_api
        self._members = hubspot.crm.lists.memberships_api
        self.budget = budget
        self.timeout = timeout
        self.policy = policy or RetryPolicy()
        self.sleep = sleep

    def _send(self, operation: str, request: Callable[[], Any]) -> Answer:
        def once() -> Answer:
            self.budget.acquire()
            try:
                response = request()
            except CLIENT_FAILURES as error:
                failure = classify(error)
                if isinstance(failure, RetryableError) and failure.retry_after:
                    self.budget.penalize(failure.retry_after)
                log.warning(
                    "hubspot request failed",
                    operation=operation,
                    error=type(failure).__name__,
                    detail=str(failure),
                )
                raise failure from error
            # Reading the whole body is also what hands the connection back to the pool.
            raw = response.data
            try:
                return Answer(response.status, json.loads(raw) if raw else None)
            except ValueError:
                # Only a proxy in the way sends non-JSON with a 2xx; it passes.
                raise RetryableError(f"HubSpot {operation}: answer is not JSON") from None

        return call_with_retry(once, self.policy, self.sleep)

    def get_page(
        self,
        object_type: str,
        limit: int,
        after: str | None,
        properties: Sequence[str],
        archived: bool = False,
    ) -> Any:
        """One page of `GET /crm/v3/objects/{type}` (by id, `after` from the last page)."""
        return self._send(
            f"{object_type}.list",
            lambda: self._basic.get_page(
                object_type,
                limit=limit,
                after=after,
                properties=list(properties) or None,
                archived=archived,
                _request_timeout=self.timeout,
                _preload_content=False,
            ),
        ).body

    def search(self, object_type: str, body: dict[str, Any]) -> Any:
        """`POST /crm/v3/objects/{type}/search`."""
        return self._send(
            f"{object_type}.search",
            lambda: self._search.do_search(
                object_type, body, _request_timeout=self.timeout, _preload_content=False
            ),
        ).body

    def batch_upsert(self, object_type: str, inputs: list[dict[str, Any]]) -> Answer:
        """`POST .../batch/upsert`; a 207 comes back as an Answer, not an error."""
        return self._send(
            f"{object_type}.batch_upsert",
            lambda: self._batch.upsert(
                object_type,
                {"inputs": inputs},
                _request_timeout=self.timeout,
                _preload_content=False,
            ),
        )

    def batch_read(
        self, object_type: str, ids: Sequence[str], id_property: str, properties: Sequence[str]
    ) -> Answer:
        """`POST .../batch/read` by `id_property`; missing ids come back as a 207."""
        body: dict[str, Any] = {
            "inputs": [{"id": value} for value in ids],
            "properties": list(properties),
            "propertiesWithHistory": [],
        }
        if id_property != "hs_object_id":
            body["idProperty"] = id_property
        return self._send(
            f"{object_type}.batch_read",
            lambda: self._batch.read(
                object_type, body, _request_timeout=self.timeout, _preload_content=False
            ),
        )

    def change_memberships(self, list_id: str, add: Sequence[str], remove: Sequence[str]) -> Any:
        """`PUT /crm/v3/lists/{id}/memberships/add-and-remove`."""
        request = {"recordIdsToAdd": list(add), "recordIdsToRemove": list(remove)}
        return self._send(
            f"list.{list_id}.memberships",
            lambda: self._members.add_and_remove(
                list_id, request, _request_timeout=self.timeout, _preload_content=False
            ),
        ).body

    def close(self) -> None:
        """Close the pooled connections of every API object."""
        for api in (self._basic, self._search, self._batch, self._members):
            api.api_client.rest_client.pool_manager.clear()
            api.api_client.close()
