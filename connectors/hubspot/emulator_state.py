"""What the emulator's endpoints share: its state and the parsed request they are handed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request

from connectors.hubspot.emulator_data import CrmData
from connectors.hubspot.emulator_errors import validation_error
from connectors.hubspot.emulator_faults import Fault, FaultInjector, RequestBudget, SlidingWindow


@dataclass
class EmulatorState:
    """Everything the endpoints share: the data, the faults, the limits, the valid tokens."""

    data: CrmData
    faults: FaultInjector
    budget: RequestBudget | None
    search_limit: SlidingWindow | None
    tokens: set[str] = field(default_factory=set)
    requests: list[tuple[str, int]] = field(default_factory=list)
    in_flight: int = 0


@dataclass(frozen=True)
class Body:
    """A parsed JSON body and the partial-failure fault to apply to it, if any."""

    json: Any
    partial: Fault | None


def query_list(request: Request, name: str) -> list[str]:
    """A repeated or comma-separated query parameter, as HubSpot accepts both."""
    return [part for value in request.query_params.getlist(name) for part in value.split(",")]


def query_int(request: Request, name: str, default: int, maximum: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isdigit():
        raise validation_error(f"{name} must be an integer, but was {raw!r}")
    value = int(raw)
    if value > maximum:
        raise validation_error(f"{name} must be at most {maximum}, but was {value}")
    return value
