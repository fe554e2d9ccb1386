"""What a connector's test module provides so that the standard suite can drive it.

A harness wraps one connector and the emulator it talks to. The suite only ever speaks to the
system through the connector under test and inspects the system through the harness, so the
same tests run unchanged against every source and destination of the project.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from syncd.connector import Destination, PushItem, RawRecord, Source

Sleep = Callable[[float], None]
"""What connectors call to wait between retries; the suite passes a FakeSleep."""


class Fault(enum.Enum):
    """A failure the emulator can be told to produce on the connector's next request(s)."""

    RATE_LIMIT = "rate_limit"
    """The system's "too many requests" answer (HTTP 429, or 403 REQUEST_LIMIT_EXCEEDED)."""
    SERVER_ERROR = "server_error"
    """A 5xx answer."""
    TIMEOUT = "timeout"
    """An answer slower than the client's configured timeout."""
    RESET = "reset"
    """The connection is reset before any answer."""
    AUTH = "auth"
    """Credentials are refused, and stay refused when the connector logs in again."""


@dataclass
class FakeSleep:
    """A sleep that returns at once and remembers every wait it was asked for."""

    waits: list[float] = field(default_factory=list)

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


class SourceHarness(Protocol):
    """One source under test and the controls of its emulator.

    The emulator must hold enough records in `stream` for a full read to span at least three
    pages, over more time than the source's look-back (so that its last cursor leaves records
    behind), and the source must be configured with a client timeout short enough that
    `Fault.TIMEOUT` costs about a second.
    """

    stream: str
    """The stream every standard test reads."""
    rate_limit_retry_after: float | None
    """Seconds of Retry-After the emulator sends with RATE_LIMIT; None if the system sends none."""

    def make_source(self, sleep: Sleep) -> Source:
        """A fresh source, waiting between retries with `sleep`."""
        ...

    def record_id(self, record: RawRecord) -> str:
        """The system's id of a record read from `stream` (what `Page.deleted_ids` holds)."""
        ...

    def live_ids(self) -> set[str]:
        """Ids of every record currently in `stream` at the emulator, deleted ones excluded."""
        ...

    def change(self, ids: Sequence[str]) -> None:
        """Modify these records at the emulator, as a user editing them would."""
        ...

    def delete(self, ids: Sequence[str]) -> None:
        """Delete these records at the emulator."""
        ...

    def inject(self, fault: Fault, times: int = 1) -> None:
        """Make the next `times` requests of the connector fail with `fault`."""
        ...


class DestinationHarness(Protocol):
    """One destination under test and the controls of its emulator."""

    target: str
    """The object or list every standard test pushes to."""
    system_max_batch: int
    """The most records the system accepts in one write request."""

    def make_destination(self, sleep: Sleep) -> Destination:
        """A fresh destination, waiting between retries with `sleep`."""
        ...

    def item(self, index: int) -> PushItem:
        """A valid desired state for person `index` (same index, same item)."""
        ...

    def invalid_item(self, index: int) -> PushItem:
        """A desired state for person `index` that the system rejects record by record."""
        ...

    def write_batches(self) -> list[int]:
        """Records per write request the emulator received so far, in order."""
        ...

    def stored(self) -> Mapping[str, Mapping[str, Any]]:
        """The records at the emulator keyed by match value, with the fields we push only."""
        ...

    def inject(self, fault: Fault, times: int = 1) -> None:
        """Make the next `times` write requests of the connector fail with `fault`."""
        ...
