"""Where the ingest endpoint commits events: the one seam between HTTP and storage."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from syncd.ingest.spec import IngestMessage


class EventSink(Protocol):
    """Commits validated messages durably.

    `write` returns only once the messages are on stable storage (an fsync'd transaction)
    and raises otherwise; the endpoint acknowledges a request only after `write` returned.
    A message whose `message_id` is already stored must be ignored, not stored twice: SDKs
    retry whole requests. `write` is only ever called from one thread at a time.
    """

    def write(self, messages: Sequence[IngestMessage]) -> None:
        """Commit `messages` in one transaction, or raise and commit none of them."""
        ...
