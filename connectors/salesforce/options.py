"""The typed options of the Salesforce connector (the `[sources.NAME.options]` table)."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from syncd.connector import ConnectorOptions, EnvRef


def is_loopback(url: str) -> bool:
    """Whether `url` points at this machine (where only an emulator may speak plain http)."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class SalesforceOptions(ConnectorOptions):
    """How to reach one Salesforce org and what to read from or write to it.

    Log in either with `username` + `password` + `security_token` (the SOAP login) or with
    `client_id` + `client_secret` of a connected app (OAuth client credentials, which needs a
    My Domain in `domain`). Secrets are environment-variable references.
    """

    domain: str = "login"
    """`login`, `test` (sandbox) or the org's My Domain without .salesforce.com (`acme.my`)."""
    instance_url: str | None = None
    """Only for an emulator: an http:// loopback URL that every request is routed to."""
    username: str | None = None
    password: EnvRef | None = None
    security_token: EnvRef | None = None
    client_id: EnvRef | None = None
    client_secret: EnvRef | None = None
    api_version: str = "59.0"
    objects: tuple[str, ...] = ("Contact", "Lead", "Account")
    """The objects read as streams (one stream per object, named like it)."""
    fields: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    """Fields to read per object; an object not listed is read with every field describe shows."""
    external_id_field: str = "Syncd_Id__c"
    """The external-id field pushes upsert by."""
    page_size: int = Field(2000, ge=200, le=2000)
    """Records per REST query page (Salesforce accepts 200..2000)."""
    lookback_seconds: float = Field(300.0, ge=0)
    """How far before the stored SystemModstamp each incremental read starts (see source.py)."""
    bulk_query_threshold: int = Field(50000, ge=1)
    """A full read of more records than this runs as a Bulk 2.0 query job."""
    bulk_page_size: int = Field(50000, ge=1)
    """Records per Bulk 2.0 result page."""
    bulk_push_threshold: int = Field(2000, ge=1)
    """A push of more records than this runs as a Bulk 2.0 ingest job."""
    bulk_poll_seconds: float = Field(2.0, gt=0)
    """Wait between two looks at a running Bulk 2.0 job."""
    budget_requests: int = Field(100, ge=1)
    """At most this many requests per `budget_seconds`, pulls and pushes together."""
    budget_seconds: float = Field(10.0, gt=0)
    timeout_seconds: float = Field(30.0, gt=0)
    """Connect and read timeout of one request."""
    retry_attempts: int = Field(5, ge=1)
    """Attempts per request when Salesforce fails transiently."""

    @field_validator("api_version")
    @classmethod
    def _bare_version(cls, value: str) -> str:
        if value.startswith("v") or not value.replace(".", "", 1).isdigit():
            raise ValueError("write the API version as digits, e.g. 59.0")
        return value

    @field_validator("fields")
    @classmethod
    def _each_field_once(cls, value: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        # Salesforce refuses a query selecting a field twice, in any case: the whole read would.
        for sobject, names in value.items():
            seen: set[str] = set()
            for name in names:
                if name.lower() in seen:
                    raise ValueError(f"{sobject} lists {name} twice; list each field once")
                seen.add(name.lower())
        return value

    @field_validator("instance_url")
    @classmethod
    def _loopback_only(cls, value: str | None) -> str | None:
        if value is not None and not (value.startswith("http://") and is_loopback(value)):
            raise ValueError(
                "instance_url is only for an emulator on this machine (http://127.0.0.1:PORT); "
                "for a real org set domain instead"
            )
        return value

    @model_validator(mode="after")
    def _one_way_to_log_in(self) -> SalesforceOptions:
        password = (self.username, self.password, self.security_token)
        oauth = (self.client_id, self.client_secret)
        uses_password = any(v is not None for v in password)
        if uses_password == any(v is not None for v in oauth):
            raise ValueError(
                "give either username, password and security_token, or client_id and "
                "client_secret (not both, not neither)"
            )
        if not all(v is not None for v in (password if uses_password else oauth)):
            raise ValueError(
                "username, password and security_token go together"
                if uses_password
                else "client_id and client_secret go together"
            )
        if self.client_id is not None and self.domain in ("login", "test"):
            raise ValueError("OAuth client credentials need the org's My Domain in domain")
        return self
