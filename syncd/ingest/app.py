"""The event ingest endpoint: an ASGI app that SDKs post identify/track/page/... calls to.

    POST /v1/{identify,track,page,screen,group,alias,batch}   (and /v1/{i,t,p,s,g,a,b})
    GET  /health

A request is authenticated by its write key (HTTP basic auth user name, or `writeKey` in the
body), decompressed (gzip or deflate) and size-checked as it streams in, parsed and validated
as a whole, handed to the group-commit writer, and answered 200 `{"success": true}` only
after the commit that holds its messages is done.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import sys
import zlib
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from syncd.ingest.sink import EventSink
from syncd.ingest.spec import (
    MAX_BATCH_BYTES,
    MAX_MESSAGE_BYTES,
    MAX_NESTING,
    PATH_KINDS,
    IngestMessage,
    SpecError,
    TooLarge,
    parse_batch,
    parse_message,
    write_key_in_body,
)
from syncd.ingest.writer import CommitFailed, GroupCommitWriter, Overloaded

_OK = b'{"success":true}'
_RETRY_AFTER = {"Retry-After": "1"}


class _Unauthorized(Exception):
    pass


def _fail(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"success": False, "error": message}, status, headers=headers)


def _header_key(request: Request) -> str | None:
    """The write key of an `Authorization: Basic` header; None when there is no header."""
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "basic":
        raise _Unauthorized("Authorization must be Basic, with the write key as user name")
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise _Unauthorized("Authorization header is not valid base64") from None
    # SDKs send "key:" (empty password); some older ones send the bare key.
    return decoded.partition(":")[0]


class _UnsupportedEncoding(SpecError):
    status = 415


_WBITS = {
    "gzip": 16 + zlib.MAX_WBITS,
    "x-gzip": 16 + zlib.MAX_WBITS,
    # HTTP's deflate is the zlib format, header and checksum included.
    "deflate": zlib.MAX_WBITS,
}


class _Inflater:
    """Decodes a gzip or deflate request body chunk by chunk, as it arrives."""

    def __init__(self, encoding: str) -> None:
        self._encoding = encoding
        self._zlib = zlib.decompressobj(_WBITS[encoding])

    def inflate(self, data: bytes, room: int) -> bytes:
        """What `data` decodes to, cut one byte past `room`: enough to know that the body is
        over its limit without inflating a compression bomb in memory."""
        try:
            return self._zlib.decompress(data, room + 1)
        except zlib.error as error:
            raise SpecError(f"body: is not valid {self._encoding} data ({error})", "body") from None

    def finish(self) -> None:
        """Refuse a body whose compressed data ended early or was followed by more."""
        if not self._zlib.eof:
            raise SpecError(f"body: its {self._encoding} data is cut short", "body")
        if self._zlib.unused_data:
            raise SpecError(f"body: has bytes after the end of its {self._encoding} data", "body")


def _inflater(request: Request) -> _Inflater | None:
    """The decoder of the request's Content-Encoding; None when the body is sent as it is."""
    encoding = request.headers.get("content-encoding", "").strip().lower()
    if encoding in ("", "identity"):
        return None
    if encoding not in _WBITS:
        raise _UnsupportedEncoding(
            f"body: Content-Encoding {encoding[:40]!r} is not supported; "
            "send gzip, deflate or no encoding",
            "body",
        )
    return _Inflater(encoding)


async def _read_body(request: Request, limit: int, what: str) -> bytes:
    """The body, decoded; the limit holds for the bytes sent and for what they decode to."""
    inflater = _inflater(request)
    too_large = TooLarge(f"{what} is larger than the {limit // 1024} KB limit", "body")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    sent = size = 0
    async for chunk in request.stream():
        sent += len(chunk)
        data = chunk if inflater is None else inflater.inflate(chunk, limit - size)
        size += len(data)
        if sent > limit or size > limit:
            raise too_large
        chunks.append(data)
    if inflater is not None:
        inflater.finish()
    return b"".join(chunks)


def _decode(body: bytes) -> Any:
    try:
        return json.loads(body)
    except UnicodeDecodeError:
        raise SpecError("body: is not UTF-8 text", "body") from None
    except json.JSONDecodeError as error:
        raise SpecError(
            f"body: is not valid JSON ({error.msg} at line {error.lineno} column {error.colno})",
            "body",
        ) from None
    except RecursionError:
        raise SpecError(f"body: is nested deeper than {MAX_NESTING} levels", "body") from None
    except ValueError:
        # The one other ValueError json.loads raises: Python reads integers of so many
        # digits only, as reading them takes quadratic time.
        raise SpecError(
            f"body: holds an integer of more than {sys.get_int_max_str_digits()} digits", "body"
        ) from None


def _key_bytes(key: str) -> bytes:
    # A key in a JSON body may hold a lone surrogate, which has no UTF-8 form: it must only
    # fail to match, so it is compared through an encoding that has one.
    return key.encode("utf-8", "surrogatepass")


class _WriteKeys:
    def __init__(self, keys: Collection[str]) -> None:
        self._keys = [_key_bytes(key) for key in keys if key]
        if not self._keys:
            raise ValueError("the ingest endpoint needs at least one non-empty write key")

    def check(self, key: str | None) -> None:
        if key is None:
            raise _Unauthorized(
                "missing write key: send it as the basic auth user name or as writeKey"
            )
        if not any(hmac.compare_digest(_key_bytes(key), known) for known in self._keys):
            raise _Unauthorized("unknown write key")


async def _messages(
    request: Request, kind: str, keys: _WriteKeys, received_at: datetime
) -> list[IngestMessage]:
    """Authenticate, size-check and validate one request into the messages it carries."""
    header_key = _header_key(request)
    if header_key is not None:
        # A wrong header key is refused before the body is even read.
        keys.check(header_key)
    if kind == "batch":
        data = _decode(await _read_body(request, MAX_BATCH_BYTES, "batch"))
    else:
        data = _decode(await _read_body(request, MAX_MESSAGE_BYTES, "message"))
    if header_key is None:
        keys.check(write_key_in_body(data))
    if kind == "batch":
        return parse_batch(data, received_at=received_at)
    return [parse_message(data, kind=kind, received_at=received_at)]


def create_app(
    sink: EventSink,
    write_keys: Collection[str],
    *,
    max_commit_messages: int = 5000,
    max_pending_requests: int = 10_000,
) -> Starlette:
    """The ingest app committing to `sink`; requests must carry one of `write_keys`."""
    keys = _WriteKeys(write_keys)
    writer = GroupCommitWriter(sink, max_commit_messages, max_pending_requests)

    async def ingest(request: Request) -> Response:
        kind = PATH_KINDS.get(request.path_params["kind"])
        if kind is None:
            return _fail(404, f"unknown call {request.path_params['kind']!r}")
        try:
            messages = await _messages(request, kind, keys, datetime.now(UTC))
            await asyncio.wrap_future(writer.submit(messages))
        except _Unauthorized as error:
            return _fail(401, str(error), {"WWW-Authenticate": 'Basic realm="syncd ingest"'})
        except SpecError as error:
            return JSONResponse(error.answer(), error.status)
        except (Overloaded, CommitFailed) as error:
            return _fail(503, f"events not stored, retry later: {error}", _RETRY_AFTER)
        return Response(_OK, media_type="application/json")

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        writer.start()
        try:
            yield
        finally:
            writer.stop()

    return Starlette(
        routes=[
            Route("/v1/{kind}", ingest, methods=["POST"]),
            Route("/health", health, methods=["GET"]),
        ],
        # Browser SDKs post cross-origin (with text/plain, so usually without a preflight).
        middleware=[
            Middleware(
                CORSMiddleware,
                allow_origins=["*"],
                allow_methods=["POST"],
                allow_headers=["authorization", "content-type"],
            )
        ],
        lifespan=lifespan,
    )
