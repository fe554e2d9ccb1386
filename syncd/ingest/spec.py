"""The identify / track / page / screen / group / alias / batch event spec.

This is the spec that analytics SDKs speak (Segment's HTTP Tracking API is the de-facto
reference): every message names a person by `userId` and/or `anonymousId`, carries a
`messageId` that de-duplicates retries, and a `timestamp`. Validation is strict about what
the spec requires and keeps every other field as sent, because SDKs add their own
(`_metadata`, `channel`, `version`...) and downstream mappings may want them.

Errors are `SpecError`s that say which field (and for a batch, which message index) is wrong;
the HTTP layer turns them into 400 or 413 answers.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError

from syncd.jsontext import first_unstorable, unstorable

MAX_MESSAGE_BYTES = 32 * 1024
"""The largest message the spec allows (a single call, or one message of a batch)."""

MAX_BATCH_BYTES = 500 * 1024
"""The largest batch request body the spec allows."""

MAX_ID_BYTES = 1024
"""The longest id (userId, anonymousId, messageId...) in UTF-8 bytes."""

MAX_NESTING = 64
"""The deepest a message may nest objects and arrays, itself being the first level.

Far more than events use, and far less than what the JSON code of Python (about 1,000 with
the frames below it) and orjson (255) can read and write, in the endpoint and in the pull.
"""

EVENT_TYPES = ("identify", "track", "page", "screen", "group", "alias")

PATH_KINDS: Mapping[str, str] = {
    **{kind: kind for kind in (*EVENT_TYPES, "batch")},
    # analytics.js posts to the first letter of the call (`/v1/t`, `/v1/b` for batches).
    "i": "identify",
    "t": "track",
    "p": "page",
    "s": "screen",
    "g": "group",
    "a": "alias",
    "b": "batch",
}
"""The `/v1/<kind>` path segments the endpoint answers, long and short form."""


class SpecError(Exception):
    """A request the spec does not allow; `field` and `index` say where the fault is."""

    status = 400

    def __init__(self, message: str, field: str | None = None, index: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.index = index

    def answer(self) -> dict[str, Any]:
        """The JSON body of the 4xx answer."""
        body: dict[str, Any] = {"success": False, "error": self.message}
        if self.field is not None:
            body["field"] = self.field
        if self.index is not None:
            body["index"] = self.index
        return body


class TooLarge(SpecError):
    """A message or batch over the size limit of the spec."""

    status = 413


@dataclass(frozen=True, slots=True)
class IngestMessage:
    """One validated message, ready to commit.

    `payload` is the message as the SDK sent it, with `messageId`, `timestamp` and
    `receivedAt` filled in and the write key removed; it is plain JSON.
    """

    message_id: str
    type: str
    user_id: str | None
    anonymous_id: str | None
    timestamp: datetime
    received_at: datetime
    payload: Mapping[str, Any]


def _identifier(value: Any) -> Any:
    # Server SDKs often send numeric user ids; the spec treats ids as strings.
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str):
        value = value.strip()
        if not value:
            raise ValueError("must not be empty")
        # Counted in bytes: a unique index on PostgreSQL takes at most 2,704 bytes a row, and
        # 1,024 characters of CJK text are 3,072 (an id refused there would be a 503 for ever).
        if len(value.encode("utf-8", "surrogatepass")) > MAX_ID_BYTES:
            raise ValueError(f"must be at most {MAX_ID_BYTES} bytes of UTF-8")
    return value


def _iso_timestamp(value: Any) -> Any:
    if not isinstance(value, str):
        raise ValueError("must be an ISO-8601 timestamp string")  # noqa: TRY004
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value[:40]!r} is not an ISO-8601 timestamp") from None
    # A timestamp without an offset is read as UTC, as the SDKs write UTC.
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # the first hour of year 1 east of UTC, the last of 9999 west
        raise ValueError(f"{value[:40]!r} is outside the years 1 to 9999 in UTC") from None


def _non_empty(value: Any) -> Any:
    if isinstance(value, str) and not value.strip():
        raise ValueError("must not be empty")
    return value


Identifier = Annotated[str, BeforeValidator(_identifier)]
Timestamp = Annotated[datetime, BeforeValidator(_iso_timestamp)]
Name = Annotated[str, BeforeValidator(_non_empty)]
JsonObject = dict[str, Any]


class _Common(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True, strict=True)

    userId: Identifier | None = None
    anonymousId: Identifier | None = None
    messageId: Identifier | None = None
    timestamp: Timestamp | None = None
    originalTimestamp: Timestamp | None = None
    sentAt: Timestamp | None = None
    context: JsonObject | None = None
    integrations: JsonObject | None = None


class _Identify(_Common):
    type: Literal["identify"]
    traits: JsonObject | None = None


class _Track(_Common):
    type: Literal["track"]
    event: Name
    properties: JsonObject | None = None


class _Page(_Common):
    type: Literal["page", "screen"]
    name: str | None = None
    category: str | None = None
    properties: JsonObject | None = None


class _Group(_Common):
    type: Literal["group"]
    groupId: Identifier
    traits: JsonObject | None = None


class _Alias(_Common):
    type: Literal["alias"]
    previousId: Identifier


_MODELS: Mapping[str, type[_Common]] = {
    "identify": _Identify,
    "track": _Track,
    "page": _Page,
    "screen": _Page,
    "group": _Group,
    "alias": _Alias,
}


def _where(prefix: str, field: str) -> str:
    return f"{prefix}.{field}" if prefix else field


def _unstorable(text: str) -> str | None:
    """What in `text` no store can hold (`jsontext.unstorable`), in words; None when it is
    fine. JSON may spell both: a NUL, and a lone surrogate, which has no UTF-8 form."""
    found = first_unstorable(text) if unstorable(text) else None  # most text: one cheap look
    if found is None:
        return None
    if found == "\x00":
        return "a NUL character (\\u0000)"
    return f"a lone surrogate (\\u{ord(found):04x})"


def _path(parent: str, key: str | int | None) -> str:
    if key is None:
        return parent
    if isinstance(key, int):
        return f"{parent}[{key}]"
    return _where(parent, key)


def _check_storable(value: Any, where: str, index: int | None) -> None:
    """Refuse `value` when it nests deeper than MAX_NESTING levels, or when a key or string
    anywhere in it holds text no store can hold."""
    # Each entry holds its parent's path and its key, joined only when needed: most values
    # are fine, and this runs on every message.
    stack: list[tuple[Any, str, str | int | None, int]] = [(value, where, None, 1)]
    while stack:
        item, parent, key, level = stack.pop()
        if isinstance(item, str):
            problem = _unstorable(item)
            if problem is not None:
                field = _path(parent, key)
                raise SpecError(f"{field}: contains {problem}", field, index)
            continue
        if not isinstance(item, dict | list):
            continue
        path = _path(parent, key)
        if level > MAX_NESTING:
            raise SpecError(f"{path}: is nested deeper than {MAX_NESTING} levels", path, index)
        if isinstance(item, list):
            stack.extend((child, path, n, level + 1) for n, child in enumerate(item))
            continue
        for name, child in item.items():
            problem = _unstorable(name)
            if problem is not None:
                # The answer names the object, as the key is the text it cannot encode.
                field = path or "body"
                raise SpecError(f"{field}: has a key that contains {problem}", field, index)
            stack.append((child, path, name, level + 1))


def _first_problem(error: ValidationError, prefix: str, index: int | None) -> SpecError:
    problem = error.errors(include_url=False)[0]
    field = ".".join(str(part) for part in problem["loc"]) or "message"
    message = problem["msg"].removeprefix("Value error, ")
    if problem["type"] == "missing":
        message = "is required"
    return SpecError(f"{_where(prefix, field)}: {message}", _where(prefix, field), index)


def _message_id(raw: Mapping[str, Any], timestamped: bool) -> str:
    """A messageId for a message that came without one.

    A message that carries its own timestamp gets a hash of its content, so that an SDK
    retrying the same request is de-duplicated; one without a timestamp cannot be told apart
    from a later identical event, so it gets a random id, as the reference server does.
    """
    if not timestamped:
        return f"syncd-{uuid.uuid4()}"
    canonical = json.dumps(raw, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "syncd-" + hashlib.sha256(canonical.encode()).hexdigest()[:32]


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_message(raw: Any, *, kind: str, received_at: datetime) -> IngestMessage:
    """Validate the message of a single call; `kind` is the type its path implies."""
    _check_storable(raw, "", None)
    return _parse_message(raw, kind=kind, received_at=received_at)


def _parse_message(
    raw: Any,
    *,
    kind: str | None,
    received_at: datetime,
    defaults: Mapping[str, Any] | None = None,
    index: int | None = None,
) -> IngestMessage:
    """Validate one message whose text is checked; `kind` is None inside a batch.

    `defaults` are batch-level `context`, `integrations` and `sentAt`, which the message's
    own values override.
    """
    prefix = f"batch[{index}]" if index is not None else ""
    if not isinstance(raw, dict):
        raise SpecError(f"{prefix or 'body'}: must be a JSON object", prefix or "body", index)
    message = {key: value for key, value in raw.items() if key != "writeKey"}
    if kind is not None:
        message["type"] = kind
    as_sent = dict(message)
    event_type = message.get("type")
    if not isinstance(event_type, str) or event_type not in _MODELS:
        raise SpecError(
            f"{_where(prefix, 'type')}: must be one of {', '.join(EVENT_TYPES)}",
            _where(prefix, "type"),
            index,
        )
    for key, value in (defaults or {}).items():
        if isinstance(value, dict) and isinstance(message.get(key), dict):
            message[key] = {**value, **message[key]}
        else:
            message.setdefault(key, value)
    try:
        model = _MODELS[event_type].model_validate(message)
    except ValidationError as error:
        raise _first_problem(error, prefix, index) from None
    if model.userId is None and model.anonymousId is None:
        field = _where(prefix, "userId")
        raise SpecError(f"{field}: userId or anonymousId is required", field, index)
    if isinstance(model, _Alias) and model.userId is None:
        field = _where(prefix, "userId")
        raise SpecError(f"{field}: alias needs the new userId", field, index)

    if model.timestamp is not None:
        timestamp = model.timestamp
    elif model.originalTimestamp is not None and model.sentAt is not None:
        # The device clock may be wrong: shift the device time by the device's own skew.
        try:
            timestamp = received_at - (model.sentAt - model.originalTimestamp)
        except OverflowError:
            field = _where(prefix, "originalTimestamp")
            raise SpecError(
                f"{field}: corrected by the device's clock skew (sentAt - originalTimestamp), "
                "it is outside the years 1 to 9999",
                field,
                index,
            ) from None
    else:
        timestamp = model.originalTimestamp or received_at
    message_id = model.messageId or _message_id(as_sent, model.timestamp is not None)
    message.update(
        messageId=message_id,
        timestamp=_iso(timestamp),
        receivedAt=_iso(received_at),
    )
    for key in ("userId", "anonymousId", "groupId", "previousId"):
        if message.get(key) is not None:
            message[key] = getattr(model, key)
    return IngestMessage(
        message_id=message_id,
        type=event_type,
        user_id=model.userId,
        anonymous_id=model.anonymousId,
        timestamp=timestamp,
        received_at=received_at,
        payload=message,
    )


def _encoded_size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


def parse_batch(raw: Any, *, received_at: datetime) -> list[IngestMessage]:
    """Validate a batch body; all messages or none (the first bad one is named)."""
    if not isinstance(raw, dict):
        raise SpecError("body: must be a JSON object", "body")
    batch = raw.get("batch")
    if not isinstance(batch, list):
        raise SpecError("batch: must be a list of messages", "batch")
    if not batch:
        raise SpecError("batch: must hold at least one message", "batch")
    defaults = {key: raw[key] for key in ("context", "integrations", "sentAt") if key in raw}
    if "context" in defaults and not isinstance(defaults["context"], dict):
        raise SpecError("context: must be a JSON object", "context")
    _check_storable(defaults, "", None)
    messages: list[IngestMessage] = []
    for index, item in enumerate(batch):
        _check_storable(item, f"batch[{index}]", index)
        if _encoded_size(item) > MAX_MESSAGE_BYTES:
            raise TooLarge(
                f"batch[{index}]: message is larger than the 32 KB limit per message",
                f"batch[{index}]",
                index,
            )
        messages.append(
            _parse_message(item, kind=None, received_at=received_at, defaults=defaults, index=index)
        )
    return messages


def write_key_in_body(raw: Any) -> str | None:
    """The `writeKey` a browser SDK puts in the body instead of an Authorization header."""
    if isinstance(raw, dict):
        key = raw.get("writeKey")
        if isinstance(key, str) and key:
            return key
    return None
