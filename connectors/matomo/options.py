"""The typed options of a Matomo source."""

from __future__ import annotations

from datetime import date

from pydantic import Field, field_validator

from syncd.connector import ConnectorOptions, EnvRef


class MatomoOptions(ConnectorOptions):
    """One Matomo site: where the instance is, which site, how to authenticate, how hard to pull.

    `url` is the instance's base URL (the folder holding index.php). `budget` requests per
    `budget_window` seconds protects a self-hosted instance: the Live API is expensive for it.
    `start_date` is the first day a full read goes back to.
    """

    url: str
    site_id: int = Field(ge=1)
    token_auth: EnvRef
    page_size: int = Field(default=100, ge=1, le=10_000)
    start_date: date = date(2000, 1, 1)
    lookback_seconds: int = Field(default=600, ge=0)
    """How far before the stored last action each read starts: Matomo may write a visit late."""
    budget: int = Field(default=10, ge=1)
    budget_window: float = Field(default=1.0, gt=0)
    timeout: float = Field(default=30.0, gt=0)
    retry_attempts: int = Field(default=5, ge=1, le=20)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError("url must be an http(s) URL such as https://matomo.example.com")
        return value.rstrip("/")
