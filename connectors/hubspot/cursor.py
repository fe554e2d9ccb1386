"""Where a HubSpot read stands, as stored between pages and runs (JSON, versioned).

A read moves through phases:

    full      list every live record by id (`after` = HubSpot's paging token); `since` is
              when the read started, less the clock skew
    search    records modified at or after `since`, the newest last-modified time
              delivered, or a look-back before `started`, when the read that stored it began
              (less the clock skew), if earlier; `started` 0 (cursors stored before) looks
              back from `since` (see the source)
    archived  list archived records (`after` = paging token) and report those archived at or
              after `archived_since` (all of them after a full read) as deletions

and rests in `search` between runs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from syncd.errors import FatalConnectorError

Phase = Literal["full", "search", "archived"]
VERSION = 1


@dataclass(frozen=True)
class ReadCursor:
    """The resumable position of one stream's read."""

    phase: Phase
    since: int = 0
    after: str | None = None
    archived_since: int | None = None
    started: int = 0

    @classmethod
    def full(cls, started: int) -> ReadCursor:
        """A read from the beginning, started (less clock skew) at `started`."""
        return cls(phase="full", since=started, started=started)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict to store as the stream's cursor."""
        return {"v": VERSION, **asdict(self)}

    @classmethod
    def from_json(cls, data: Any) -> ReadCursor:
        """Load a stored cursor, refusing one this version cannot resume from."""
        if not isinstance(data, dict) or data.get("v") != VERSION:
            raise FatalConnectorError(
                f"unrecognized HubSpot cursor {data!r}; run with --full to start over"
            )
        # Cursors stored before reads looked back also hold the ids delivered at `since`, and
        # a run killed while walking one timestamp by id rests in a `tie` phase: the look-back
        # from `since` reads all of those again.
        fields = {k: v for k, v in data.items() if k not in ("v", "seen")}
        if fields.get("phase") == "tie":
            fields |= {"phase": "search", "after": None}
        try:
            return cls(**fields)
        except TypeError as error:
            raise FatalConnectorError(f"corrupt HubSpot cursor: {error}") from None

    def with_phase(self, phase: Phase, **changes: Any) -> ReadCursor:
        """The same position in another phase."""
        return replace(self, phase=phase, **changes)
