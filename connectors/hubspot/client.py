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
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
import urllib3
from hubspot import HubSpot
from hubspot.crm.lists import exceptions as list_exceptions
from hubspot.crm.objects import exceptions as object_exceptions
from urllib3.util.retry import Retry

from syncd.budget import RequestBudget
from syncd.connector import refusal_reason
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
INVALID_VALUES = "Property values were not valid: "
"""How the message of a 400 about property values begins; the JSON list of them follows."""
PROPERTY_NAME_KEYS = ("propertyName", "properties")
"""The keys of an error's `context` that name properties (others, like `ids`, hold values)."""
EXPLANATIONS = {
    "CONFLICT": "another record holds this value of a unique property",
    "INVALID_EMAIL": "not a valid email address",
    "INVALID_OPTION": "not one of the property's options",
    "INVALID_PROPERTY_VALUE": "not a value of the property's type",
    "OBJECT_NOT_FOUND": "no such record",
    "PROPERTY_DOESNT_EXIST": "no such property",
    "READ_ONLY_VALUE": "the property is read-only",
}
"""A few words on the codes a push meets most, for the reasons recorded in the ledger."""


@dataclass(frozen=True)
class Refusal:
    """One thing HubSpot refused: its error code and the properties it concerns."""

    code: str
    properties: tuple[str, ...]


def _property_names(context: Any) -> tuple[str, ...]:
    if not isinstance(context, Mapping):
        return ()
    listed = [context.get(key) for key in PROPERTY_NAME_KEYS]
    return tuple(str(name) for names in listed if isinstance(names, list) for name in names)


def refusals(error: Mapping[str, Any]) -> list[Refusal]:
    """What an error body says was refused, read from its structured parts only.

    An entry of a 207 lists its refusals in `errors` (a `code` and `context.propertyName`
    each), a 400 about values as JSON in its message (an `error` and a `name` each), and an
    error may name properties in its own `context`. Messages are never read as text: they
    quote the refused values.
    """
    nested = [entry for entry in error.get("errors") or () if isinstance(entry, Mapping)]
    if nested:
        return [
            Refusal(str(e.get("code") or ""), _property_names(e.get("context"))) for e in nested
        ]
    message = str(error.get("message") or "")
    if message.startswith(INVALID_VALUES):
        try:
            listed = json.loads(message.removeprefix(INVALID_VALUES))
        except ValueError:
            listed = None
        if isinstance(listed, list):
            return [
                Refusal(str(value.get("error") or ""), (str(value.get("name") or ""),))
                for value in listed
                if isinstance(value, Mapping)
            ]
    named = _property_names(error.get("context"))
    return [Refusal(str(error.get("subCategory") or ""), named)] if named else []


def describe(category: str, refused: Sequence[Refusal]) -> str:
    """Why HubSpot refused: its category, then the code and properties of each refusal."""
    if not refused:
        return refusal_reason(category, (), EXPLANATIONS.get(category))
    listed = (refusal_reason(r.code, r.properties, EXPLANATIONS.get(r.code)) for r in refused)
    return f"{refusal_reason(category)}: {'; '.join(listed)}"


class HubSpotRejected(FatalConnectorError):
    """HubSpot refused a request for good (4xx other than auth and rate limits)."""

    def __init__(self, status: int, category: str, refused: Sequence[Refusal]) -> None:
        self.reason = describe(category, refused)
        super().__init__(f"HubSpot answered {status} {self.reason}")
        self.status = status
        self.category = category
        self.refused = tuple(refused)


@dataclass(frozen=True)
class Answer:
    """A successful answer: its status (200, 201, 207...) and JSON body."""

    status: int
    body: Any


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
        if status == 429:
            return RetryableError(
                f"HubSpot rate limit ({refusal_reason(str(body.get('policyName') or ''))})",
                retry_after=_retry_after(getattr(error, "headers", None)),
            )
        if status >= 500 or status in RETRYABLE_STATUSES:
            return RetryableError(f"HubSpot answered {status} {describe(category, ())}")
        if status in {401, 403}:
            return AuthError(
                f"HubSpot refused the access token ({status} {refusal_reason(category)})"
            )
        if status == 0:
            # No answer: the reason is the client library's own (a TLS failure, say).
            return FatalConnectorError(
                f"HubSpot request could not be made: {getattr(error, 'reason', '')}"
            )
        return HubSpotRejected(status, category, refusals(body))
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
        search_budget: RequestBudget | None = None,
    ) -> None:
        # Retry(total=False): urllib3 raises the first failure instead of retrying GETs itself.
        hubspot = HubSpot(access_token=access_token, host=host, retry=Retry(total=False))
        self._basic = hubspot.crm.objects.basic_api
        self._search = hubspot.crm.objects.search_api
        self._batch = hubspot.crm.objects.batch_api
        self._members = hubspot.crm.lists.memberships_api
        self.budget = budget
        self.search_budget = search_budget
        self.timeout = timeout
        self.policy = policy or RetryPolicy()
        self.sleep = sleep

    def _send(
        self, operation: str, request: Callable[[], Any], limited_by: Sequence[RequestBudget] = ()
    ) -> Answer:
        budgets = (self.budget, *limited_by)

        def once() -> Answer:
            for budget in budgets:
                budget.acquire()
            try:
                response = request()
            except CLIENT_FAILURES as error:
                failure = classify(error)
                if isinstance(failure, RetryableError) and failure.retry_after:
                    for budget in budgets:
                        budget.penalize(failure.retry_after)
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
        """`POST /crm/v3/objects/{type}/search`, within the search limit as well."""
        return self._send(
            f"{object_type}.search",
            lambda: self._search.do_search(
                object_type, body, _request_timeout=self.timeout, _preload_content=False
            ),
            () if self.search_budget is None else (self.search_budget,),
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
