"""The narrow interface between the engine and the outside systems.

A source turns a system's API into pages of raw records plus the cursor that resumes after
the page; a destination turns a batch of desired states into API calls and answers with a
per-record outcome. Connectors know HTTP and their system's API; they never see profiles.
The engine owns state (cursors, ledger), retries, budgets and logging.
"""

from __future__ import annotations

import enum
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from pydantic import BaseModel, ConfigDict, model_validator

from syncd.errors import ConfigError, Problem

JsonValue = Any
"""A value that survives a JSON round trip (cursor state, raw payloads)."""


class RawRecord(NamedTuple):
    """One object as the source system gave it.

    `location` says where it came from (a file and line, an object URL) so that a quarantined
    record can be found again. `error` is set when the connector could not even parse it.
    A named tuple: pages of them go to the mapping workers by pickle, far cheaper for tuples.
    """

    payload: Mapping[str, Any]
    location: str
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Header:
    """The names every record of a page has, when the source reads them apart from the
    records (a CSV file's header row), and what they head (the file's name)."""

    names: tuple[str, ...]
    of: str


@dataclass(frozen=True, slots=True)
class Page:
    """A batch of records and deletions, and the cursor to store once they are committed."""

    records: Sequence[RawRecord]
    cursor: JsonValue
    deleted_ids: Sequence[str] = ()
    header: Header | None = None
    """Lets the run say once per file which names its mapping reads that the file lacks,
    instead of leaving that to be guessed from every record that then fails."""


class Source(Protocol):
    """Reads streams of records from one account of an outside system."""

    def streams(self) -> Sequence[str]:
        """The stream names this source can read (e.g. contacts, companies)."""
        ...

    def read(self, stream: str, cursor: JsonValue | None) -> Iterator[Page]:
        """Yield pages after `cursor` (None: from the beginning)."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


class Outcome(enum.Enum):
    """What a destination did with one pushed record."""

    OK = "ok"
    RETRY = "retry"
    REJECTED = "rejected"


LIST_PREFIX = "list:"
"""A target named `list:<id>` is a list of members, not an object to upsert into."""
MEMBER = "member"
"""The field of a list target's item that says whether its record belongs to the list: the
record is added unless it is false, then it is removed."""


@dataclass(frozen=True, slots=True)
class PushItem:
    """The desired state of one profile at a destination, keyed by our profile id."""

    key: str
    match_value: str
    fields: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class PushResult:
    """The outcome of one PushItem; `external_id` is the destination's id when known."""

    key: str
    outcome: Outcome
    external_id: str | None = None
    reason: str | None = None


_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.]*")


def refusal_reason(code: str, fields: Iterable[str] = (), explanation: str | None = None) -> str:
    """Why a destination refused a record, in words that may go to logs and the ledger.

    Systems quote the refused value in their error messages (an address, a phone number, a
    name), in ways no pattern can foresee, so a message is never passed on: only the error code
    and the names of the fields the system reports, each kept only if it is shaped like a name,
    and the connector's own explanation of the code. `CODE (Field, Other): explanation`.
    """
    named = ", ".join(dict.fromkeys(name for name in fields if _NAME.fullmatch(name)))
    said = (code if _NAME.fullmatch(code) else "UNKNOWN") + (f" ({named})" if named else "")
    return f"{said}: {explanation}" if explanation else said


def distinct_rounds(
    items: Sequence[PushItem], key: Callable[[PushItem], str]
) -> list[list[PushItem]]:
    """`items` split into rounds in which no two share a `key`, in order, the first the largest.

    Upserts by a unique value refuse two records with the same value in one request (HubSpot
    the whole batch, Salesforce each of those records): two profiles can share a match value,
    after a refused merge for one, so each round is sent apart.
    """
    rounds: list[list[PushItem]] = []
    keys: list[set[str]] = []
    for item in items:
        value = key(item)
        for members, taken in zip(rounds, keys, strict=True):
            if value not in taken:
                members.append(item)
                taken.add(value)
                break
        else:
            rounds.append([item])
            keys.append({value})
    return rounds


class Destination(Protocol):
    """Writes desired states to one account of an outside system."""

    max_batch_size: int

    def push(self, target: str, items: Sequence[PushItem]) -> list[PushResult]:
        """Upsert `items` into `target` (an object or list); one result per item, in order."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


class EnvRef(BaseModel):
    """A secret given by the name of the environment variable that holds it, never literally."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    env: str

    @model_validator(mode="before")
    @classmethod
    def _refuse_literal(cls, value: Any) -> Any:
        if isinstance(value, str):
            # pydantic turns ValueError (not TypeError) into a located validation error.
            raise ValueError(  # noqa: TRY004
                "a literal secret is not allowed in the config file; write "
                '{ env = "NAME" } and export NAME in the environment'
            )
        return value

    def resolve(self, where: str) -> str:
        """The secret's value; a ConfigError naming `where` when the variable is unset."""
        value = os.environ.get(self.env)
        if not value:
            raise ConfigError(
                [Problem(where, self.env, "environment variable is not set", f"export {self.env}")]
            )
        return value


def database_url_without_secret(url: str, key: str) -> str:
    """`url` when it is a database URL that holds no password; raises ValueError otherwise
    (for pydantic validators of a URL given literally in the config file as `key`)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise ValueError(
            "not a database URL; write one such as sqlite:///var/syncd.db or "
            'postgresql+psycopg://syncd@db/syncd, or { env = "NAME" }'
        ) from None
    if parsed.password is not None or any("password" in key.lower() for key in parsed.query):
        raise ValueError(
            f'the URL holds a password; write {key} = {{ env = "SYNCD_STORE_URL" }} '
            "and export SYNCD_STORE_URL"
        )
    return url


class ConnectorOptions(BaseModel):
    """Base of each connector's typed options; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class ConnectorContext:
    """What a connector factory gets: its configured name, typed options and the config folder."""

    name: str
    options: ConnectorOptions
    config_dir: Path
    store_url: str | None = None
    """The profile store's URL, for a connector that reads what syncd itself stored (the
    ingest spool); other connectors ignore it."""
    read_only: bool = False
    """The run stores nothing (a dry run): a source must not change what it reads from."""


@dataclass(frozen=True)
class ConnectorSpec:
    """What a connector package exports as `CONNECTOR`: its options model and factories."""

    kind: str
    options_model: type[ConnectorOptions]
    make_source: Callable[[ConnectorContext], Source] | None = None
    make_destination: Callable[[ConnectorContext], Destination] | None = None
    declared_streams: Callable[[Any], Sequence[str]] | None = None
    """For sources whose streams are named in their options: lets validation check mappings."""
    describe_cursor: Callable[[JsonValue], str] | None = None
    """For `syncd status`: a stored cursor of the source in a few words (where the read
    stands), never a secret; without it, status shows the cursor's JSON, shortened."""
    local_reads: bool = False
    """The source reads local data (files, the store's own spool), so its pages come without
    waiting on another system and consecutive pages may share one commit. A source of a
    remote system has each page committed alone: a slow answer or a retry wait must never
    hold a write transaction open."""
