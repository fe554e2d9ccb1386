"""Where a HubSpot read stands, as stored between pages and runs (JSON, versioned).

A read moves through phases:

    full      list every live record by id (`after` = HubSpot's paging token)
    search    keyset over (last-modified, id): records modified at or after `since`,
              minus `seen`, the ids already delivered at exactly `since`
    tie       more records share the timestamp `since` than one search page holds: walk them
              by id (`after` = last id delivered) with an EQ filter, then go on at since + 1
    archived  list archived records (`after` = paging token) and report those archived at or
              after `archived_since` (all of them after a full read) as deletions

and rests in `search` between runs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from syncd.errors import FatalConnectorError

Phase = Literal["full", "search", "tie", "archived"]
VERSION = 1


@dataclass(frozen=True)
class ReadCursor:
    """The resumable position of one stream's read."""

    phase: Phase
    since: int = 0
    seen: tuple[str, ...] = ()
    after: str | None = None
    archived_since: int | None = None
    started: int = 0

    @classmethod
    def full(cls, started: int) -> ReadCursor:
        """A read from the beginning, started (less clock skew) at `started`."""
        return cls(phase="full", since=started, started=started)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict to store as the stream's cursor."""
        data = asdict(self)
        data["seen"] = list(self.seen)
        return {"v": VERSION, **data}

    @classmethod
    def from_json(cls, data: Any) -> ReadCursor:
        """Load a stored cursor, refusing one this version cannot resume from."""
        if not isinstance(data, dict) or data.get("v") != VERSION:
            raise FatalConnectorError(
                f"unrecognized HubSpot cursor {data!r}; run with --full to start over"
            )
        fields = {k: v for k, v in data.items() if k != "v"}
        fields["seen"] = tuple(fields.get("seen", ()))
        try:
            return cls(**fields)
        except TypeError as error:
            raise FatalConnectorError(f"corrupt HubSpot cursor: {error}") from None

    def with_phase(self, phase: Phase, **changes: Any) -> ReadCursor:
        """The same position in another phase."""
        return replace(self, phase=phase, **changes)
