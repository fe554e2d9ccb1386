"""HubSpot's error bodies, as the emulator sends them.

Every error of the CRM v3 API is a JSON object with `status: "error"`, a `category`, a
`message` and a `correlationId`; rate limiting uses its own shape with `errorType` and
`policyName`. The shapes matter because clients parse them.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


def correlation_id() -> str:
    """A fresh id of the kind HubSpot puts in every error body."""
    return str(uuid.uuid4())


@dataclass
class ApiError(Exception):
    """An error answer: HTTP status plus HubSpot's standard error body."""

    status: int
    category: str
    message: str
    context: Mapping[str, Sequence[str]] | None = None
    sub_category: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        """The JSON body HubSpot sends with this error."""
        body: dict[str, Any] = {
            "status": "error",
            "message": self.message,
            "correlationId": correlation_id(),
            "category": self.category,
        }
        if self.sub_category:
            body["subCategory"] = self.sub_category
        if self.context:
            body["context"] = {key: list(values) for key, values in self.context.items()}
        return body


@dataclass(frozen=True)
class PropertyProblem:
    """One invalid property value, as listed inside a VALIDATION_ERROR message."""

    name: str
    error: str
    message: str

    def as_json(self) -> dict[str, Any]:
        return {
            "isValid": False,
            "message": self.message,
            "error": self.error,
            "name": self.name,
            "localizedErrorMessage": self.message,
        }


def validation_error(message: str) -> ApiError:
    """A 400 VALIDATION_ERROR about the request as a whole."""
    return ApiError(400, "VALIDATION_ERROR", message)


def property_values_error(problems: Sequence[PropertyProblem]) -> ApiError:
    """The 400 HubSpot answers when a write names unknown properties or bad values."""
    listed = json.dumps([p.as_json() for p in problems], separators=(",", ":"))
    return ApiError(400, "VALIDATION_ERROR", f"Property values were not valid: {listed}")


def unauthorized(token_given: bool) -> ApiError:
    """The 401 for a missing or unknown token."""
    if token_given:
        message = (
            "Authentication credentials not found. This API supports OAuth 2.0 authentication"
            " and you can find more details at"
            " https://developers.hubspot.com/docs/methods/auth/oauth-overview"
        )
        return ApiError(401, "INVALID_AUTHENTICATION", message)
    return ApiError(
        401,
        "INVALID_AUTHENTICATION",
        "Any of the listed authentication credentials are missing",
        context={"authenticationMethods": ["OAuth 2.0", "private app access token"]},
    )


def rate_limited_body(policy: str) -> dict[str, Any]:
    """The 429 body of the limit `policy` names (TEN_SECONDLY_ROLLING, SECONDLY, DAILY)."""
    return {
        "status": "error",
        "message": f"You have reached your {policy.lower()} limit.",
        "errorType": "RATE_LIMIT",
        "correlationId": correlation_id(),
        "policyName": policy,
        "requestId": correlation_id(),
    }
