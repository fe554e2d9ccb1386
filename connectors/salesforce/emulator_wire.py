"""What goes over the wire from the emulator: Salesforce's error shape and value formats."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from connectors.salesforce.org import OBJECTS

Handler = Callable[[Request], Awaitable[Response]]
NOT_FOUND = "The requested resource does not exist"


def sf_error(status: int, code: str, message: str) -> JSONResponse:
    """An error the way the REST API sends it: a JSON list of {message, errorCode}."""
    return JSONResponse([{"message": message, "errorCode": code}], status_code=status)


def rest_datetime(value: datetime) -> str:
    """2024-01-02T03:04:05.000+0000, the REST API's dateTime format."""
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}+0000"


def bulk_datetime(value: datetime) -> str:
    """2024-01-02T03:04:05.000Z, the Bulk API's dateTime format."""
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def find_sobject(name: str) -> str | None:
    """The object's name as Salesforce spells it (names are case-insensitive), or None."""
    return next((o for o in OBJECTS if o.lower() == name.lower()), None)
