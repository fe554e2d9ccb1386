"""The typed options of a HubSpot source or destination in syncd.toml."""

from __future__ import annotations

from pydantic import Field, field_validator

from syncd.connector import ConnectorOptions, EnvRef

DEFAULT_LOOKBACK_SECONDS = 300.0
"""Well past the few seconds HubSpot's search index lags its writes."""
DEFAULT_HOST = "https://api.hubapi.com"


class HubSpotOptions(ConnectorOptions):
    """One HubSpot account: where it is, how to authenticate, what to read, how hard to push.

    `budget` requests per `budget_window` seconds is the account's burst limit (HubSpot: 100
    per 10 s on Free/Starter, 190 on Professional/Enterprise); pulls and pushes share it.
    """

    access_token: EnvRef
    host: str = DEFAULT_HOST
    objects: tuple[str, ...] = ("contacts", "companies")
    properties: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    id_property: str = "email"
    page_size: int = Field(default=100, ge=1, le=100)
    search_page_size: int = Field(default=200, ge=1, le=200)
    lookback_seconds: float = Field(default=DEFAULT_LOOKBACK_SECONDS, ge=0)
    """How far before the stored time each incremental read starts (search lags writes)."""
    batch_size: int = Field(default=100, ge=1, le=100)
    budget: int = Field(default=100, ge=1)
    budget_window: float = Field(default=10.0, gt=0)
    timeout: float = Field(default=30.0, gt=0)
    retry_attempts: int = Field(default=5, ge=1, le=20)

    @field_validator("host")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError("host must be an http(s) URL such as https://api.hubapi.com")
        return value.rstrip("/")

    @field_validator("objects")
    @classmethod
    def _some_objects(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value or len(set(value)) != len(value):
            raise ValueError("objects must list at least one object type, each once")
        return value
