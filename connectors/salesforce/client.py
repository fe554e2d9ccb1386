"""One Salesforce org behind one narrow seam: login, budget, timeout, retry, error classes.

`SalesforceClient.call(fn)` runs `fn` against a logged-in `simple_salesforce.Salesforce` and
turns every failure into the syncd error tree; `call_with_retry` then retries only the
transient ones. Every HTTP request, the login included, passes through `OrgAdapter`, which
spends the request budget and applies the timeout, and, for an emulator, routes the https
URLs simple-salesforce builds to the loopback http server. Production and tests therefore
share every line of this module.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar
from urllib.parse import urlsplit

import requests
import structlog
from requests.adapters import HTTPAdapter
from simple_salesforce.api import Salesforce
from simple_salesforce.exceptions import (
    SalesforceAuthenticationFailed,
    SalesforceError,
    SalesforceExpiredSession,
    SalesforceGeneralError,
    SalesforceOperationError,
    SalesforceRefusedRequest,
)
from simple_salesforce.util import call_salesforce

from connectors.salesforce.options import SalesforceOptions
from syncd.budget import RequestBudget, account_fingerprint, shared_budget
from syncd.errors import AuthError, ConnectorError, FatalConnectorError, RetryableError
from syncd.retry import RetryPolicy, call_with_retry

T = TypeVar("T")
log = structlog.get_logger(__name__)

_RETRYABLE_CODES = {"REQUEST_LIMIT_EXCEEDED", "SERVER_UNAVAILABLE", "UNABLE_TO_LOCK_ROW"}
_BULK_DONE = {"JobComplete", "Failed", "Aborted"}


class QueryLocatorLost(FatalConnectorError):
    """Salesforce no longer knows a query's `nextRecordsUrl` (INVALID_QUERY_LOCATOR).

    Asking again for the same page cannot help, hence fatal here; a reader that knows where it
    stands can run its query again from there instead.
    """


class OrgAdapter(HTTPAdapter):
    """The transport every request to the org goes through."""

    def __init__(
        self, budget: RequestBudget, timeout: float, loopback_url: str | None = None
    ) -> None:
        super().__init__()
        self.budget = budget
        self.timeout = timeout
        self.loopback_url = loopback_url.rstrip("/") if loopback_url else None

    def send(  # type: ignore[override]
        self, request: requests.PreparedRequest, **kwargs: Any
    ) -> requests.Response:
        """Spend the budget, default the timeout, route to the emulator if configured."""
        self.budget.acquire()
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.timeout
        if self.loopback_url is not None and request.url:
            # simple-salesforce always builds https://<host>/...: keep the path, swap the host.
            parts = urlsplit(request.url)
            query = f"?{parts.query}" if parts.query else ""
            request.url = f"{self.loopback_url}{parts.path}{query}"
        return super().send(request, **kwargs)


def error_code(error: SalesforceError) -> str:
    """The errorCode of a REST error body ([{"message", "errorCode"}]), or ""."""
    content = error.content
    if isinstance(content, list) and content and isinstance(content[0], Mapping):
        return str(content[0].get("errorCode", ""))
    return ""


def classify(error: Exception) -> ConnectorError:
    """The syncd error for a failure of simple-salesforce or of the HTTP layer under it.

    Messages carry error codes, URLs and statuses, never record contents or credentials.
    """
    if isinstance(error, SalesforceAuthenticationFailed):
        return AuthError(f"Salesforce refused the login: {error.code}")
    if isinstance(error, SalesforceExpiredSession):
        return AuthError("Salesforce refused the session again after a fresh login")
    if isinstance(error, SalesforceError):
        code = error_code(error)
        where = f"{error.status} {code or 'error'} from {urlsplit(error.url).path}"
        if code in _RETRYABLE_CODES or (
            isinstance(error, SalesforceGeneralError) and error.status >= 500
        ):
            return RetryableError(f"Salesforce is busy or failing: {where}")
        if code == "INVALID_QUERY_LOCATOR":
            return QueryLocatorLost(f"Salesforce lost the query's place: {where}")
        if isinstance(error, SalesforceRefusedRequest):
            return FatalConnectorError(f"Salesforce refused the request: {where}")
        return FatalConnectorError(f"Salesforce rejected the request: {where}")
    if isinstance(error, (requests.Timeout, requests.ConnectionError)):
        return RetryableError(f"Salesforce did not answer: {type(error).__name__}")
    if isinstance(error, requests.exceptions.ChunkedEncodingError):
        return RetryableError("the connection to Salesforce broke mid-answer")
    if isinstance(error, requests.RequestException):
        return FatalConnectorError(f"cannot send the request to Salesforce: {type(error).__name__}")
    if isinstance(error, SalesforceOperationError):
        return FatalConnectorError(f"a Salesforce bulk job failed: {error}")
    raise TypeError(f"not a Salesforce or HTTP failure: {type(error).__name__}") from error


def org_user(options: SalesforceOptions) -> tuple[str, ...]:
    """What names the org and the user that `options` log in as, to share their budget by.

    The org is its login host (or the emulator's URL); the user, the username or the connected
    app's client id, which is fingerprinted: it is given as a secret.
    """
    org = options.instance_url or options.domain
    if options.client_id is not None:
        return ("salesforce", org, account_fingerprint(options.client_id.resolve("client_id")))
    if options.username is None:
        raise TypeError("SalesforceOptions guarantees a username without a client id")
    return ("salesforce", org, options.username)


def _json(answer: Any | None) -> Any:
    """A REST answer that must have a body (restful returns None for an empty one)."""
    if answer is None:
        raise FatalConnectorError("Salesforce answered with an empty body where data was due")
    return answer


class SalesforceClient:
    """A logged-in org (logging in lazily, and again once when the session expires).

    Unless given one, it spends the budget every client of the same org and user shares.
    """

    def __init__(
        self,
        options: SalesforceOptions,
        *,
        sleep: Callable[[float], None] = time.sleep,
        budget: RequestBudget | None = None,
    ) -> None:
        self.options = options
        self.sleep = sleep
        self.policy = RetryPolicy(attempts=options.retry_attempts)
        self.budget = budget or shared_budget(
            org_user(options), options.budget_requests, options.budget_seconds
        )
        self.session = requests.Session()
        self.session.mount(
            "https://",
            OrgAdapter(self.budget, options.timeout_seconds, options.instance_url),
        )
        self._sf: Salesforce | None = None

    def _login(self) -> Salesforce:
        opts = self.options
        common: dict[str, Any] = {
            "version": opts.api_version,
            "domain": opts.domain,
            "session": self.session,
        }
        if opts.client_id is not None and opts.client_secret is not None:
            return Salesforce(
                consumer_key=opts.client_id.resolve("client_id"),
                consumer_secret=opts.client_secret.resolve("client_secret"),
                **common,
            )
        if opts.password is None or opts.security_token is None:
            raise TypeError("SalesforceOptions guarantees a password login here")
        return Salesforce(
            username=opts.username,
            password=opts.password.resolve("password"),
            security_token=opts.security_token.resolve("security_token"),
            **common,
        )

    def _attempt(self, fn: Callable[[Salesforce], T]) -> T:
        """Log in if needed and run `fn`; failures classified, except an expired session."""
        try:
            if self._sf is None:
                self._sf = self._login()
            return fn(self._sf)
        except (SalesforceError, SalesforceOperationError, requests.RequestException) as error:
            if isinstance(error, SalesforceExpiredSession):
                raise
            raise classify(error) from error

    def _once(self, fn: Callable[[Salesforce], T]) -> T:
        """One attempt; a session expired since the last call is renewed once, here."""
        try:
            return self._attempt(fn)
        except SalesforceExpiredSession:
            # simple-salesforce renews REST sessions itself, but not for Bulk 2.0.
            log.info("salesforce.session_expired", action="login again")
            self._sf = None
        try:
            return self._attempt(fn)
        except SalesforceExpiredSession as error:
            raise classify(error) from error

    def call(self, fn: Callable[[Salesforce], T]) -> T:
        """Run `fn` on the org: classified errors, transient ones retried with backoff."""
        return call_with_retry(lambda: self._once(fn), self.policy, self.sleep)

    # -- REST ---------------------------------------------------------------------------
    def query(self, soql: str, include_deleted: bool) -> Mapping[str, Any]:
        """The first page of a SOQL query (queryAll when `include_deleted`)."""
        headers = {"Sforce-Query-Options": f"batchSize={self.options.page_size}"}
        return self.call(
            lambda sf: sf.query(soql, include_deleted=include_deleted, headers=headers)
        )

    def query_more(self, next_records_url: str) -> Mapping[str, Any]:
        """The page at a `nextRecordsUrl`."""
        return self.call(lambda sf: sf.query_more(next_records_url, identifier_is_url=True))

    def describe_fields(self, sobject: str) -> dict[str, str]:
        """Field name -> type of `sobject`, in describe order."""
        description = self.call(lambda sf: _json(sf.restful(f"sobjects/{sobject}/describe")))
        return {field["name"]: field["type"] for field in description["fields"]}

    def upsert_collection(
        self, sobject: str, external_field: str, records: list[dict[str, Any]]
    ) -> list[Mapping[str, Any]]:
        """sObject Collections upsert (≤ 200 records, allOrNone false): one result per record."""
        body = {
            "allOrNone": False,
            "records": [{"attributes": {"type": sobject}, **record} for record in records],
        }
        return self.call(
            lambda sf: _json(
                sf.restful(
                    f"composite/sobjects/{sobject}/{external_field}", method="PATCH", json=body
                )
            )
        )

    # -- Bulk 2.0 -----------------------------------------------------------------------
    def _bulk(
        self, method: str, path: str, *, accept: str = "application/json", **kwargs: Any
    ) -> Callable[[Salesforce], requests.Response]:
        def request(sf: Salesforce) -> requests.Response:
            headers = {**sf.headers, "Accept": accept}
            return call_salesforce(
                url=sf.bulk2_url + path,
                method=method,
                session=sf.session,
                headers=headers,
                **kwargs,
            )

        return request

    def bulk_query(self, soql: str, include_deleted: bool) -> Iterator[str]:
        """Run a Bulk 2.0 query job and yield its CSV result pages, each fetched with retries."""
        body = json.dumps({"operation": "queryAll" if include_deleted else "query", "query": soql})
        job = self.call(self._bulk("POST", "query", data=body)).json()
        state = job["state"]
        while state not in _BULK_DONE:
            self.sleep(self.options.bulk_poll_seconds)
            job = self.call(self._bulk("GET", f"query/{job['id']}")).json()
            state = job["state"]
        if state != "JobComplete":
            raise FatalConnectorError(
                f"Salesforce bulk query job {job['id']} ended {state}: {job.get('errorMessage')}"
            )
        locator = ""
        while True:
            params = {"maxRecords": self.options.bulk_page_size}
            if locator:
                params["locator"] = locator  # type: ignore[assignment]
            response = self.call(
                self._bulk("GET", f"query/{job['id']}/results", accept="text/csv", params=params)
            )
            yield response.text
            locator = response.headers.get("Sforce-Locator", "null")
            if locator in ("", "null"):
                return

    def bulk_upsert(
        self, sobject: str, external_field: str, records: list[dict[str, str]]
    ) -> dict[str, list[dict[str, str]]]:
        """A Bulk 2.0 upsert job; its successful, failed and unprocessed records."""

        def run(sf: Salesforce) -> dict[str, list[dict[str, str]]]:
            bulk = getattr(sf.bulk2, sobject)
            merged: dict[str, list[dict[str, str]]] = {}
            # The library splits very large uploads into several jobs.
            for job in bulk.upsert(records=records, external_id_field=external_field, wait=0):
                for kind, rows in bulk.get_all_ingest_records(job["job_id"]).items():
                    merged.setdefault(kind, []).extend(rows)
            return merged

        return self.call(run)

    def close(self) -> None:
        """Release the HTTP connections."""
        self.session.close()
