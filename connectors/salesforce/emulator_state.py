"""What the emulator's APIs share: the org, the fault plan, sessions and counters."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from starlette.types import Scope

from connectors.salesforce.faults import FaultPlan
from connectors.salesforce.org import Org, RecordError, UpsertOutcome

PARTIAL_FLAG = "syncd.partial"
"""Set in the ASGI scope of a write the PARTIAL fault applies to."""
_VALIDATION = RecordError(
    "FIELD_CUSTOM_VALIDATION_EXCEPTION", "Record blocked by a validation rule: Syncd_Check"
)


@dataclass(frozen=True)
class Credentials:
    """Who may log in: a user with password and security token, and one connected app."""

    username: str
    password: str
    security_token: str
    client_id: str
    client_secret: str


@dataclass
class EmulatorState:
    """The org and everything about the emulator's callers; `base_url` is set once bound."""

    org: Org
    faults: FaultPlan
    credentials: Credentials
    base_url: str = "http://127.0.0.1"
    sessions: set[str] = field(default_factory=set)
    refused_logins: int = 0
    calls: int = 0
    _serial: int = 0

    def next_serial(self) -> int:
        """A fresh number for ids of query locators and jobs."""
        self._serial += 1
        return self._serial

    def upsert(
        self,
        sobject: str,
        ext: str,
        records: list[dict[str, Any]],
        api: str,
        scope: Scope,
        all_or_none: bool = False,
    ) -> list[UpsertOutcome]:
        """Upsert into the org, with the PARTIAL fault rejecting some records if it is on."""
        refused: Mapping[int, RecordError] = {}
        if scope.get(PARTIAL_FLAG):
            positions = self.faults.rejected_positions(len(records), self.next_serial())
            refused = dict.fromkeys(positions, _VALIDATION)
        return self.org.upsert(sobject, ext, records, api, all_or_none=all_or_none, refused=refused)
