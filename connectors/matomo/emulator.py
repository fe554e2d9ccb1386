"""A loopback emulator of Matomo's Reporting API, as far as syncd reads it.

    GET|POST /index.php?module=API&method=Live.getLastVisitsDetails&idSite=1&format=JSON
             &period=range&date=2024-01-01,today&filter_limit=100&filter_offset=0
             &filter_sort_order=asc&minTimestamp=1704067200      (token_auth in the query or
                                                                   the form body)
    GET|POST /index.php?module=API&method=API.getMatomoVersion&format=JSON

It behaves as Matomo 5 does where syncd can tell: parameters are read from the query string
and the form body alike; a missing or unknown token_auth is HTTP 401 with
`{"result": "error", "message": ...}`; other API errors (unknown method, missing idSite, bad
date) are that same body with HTTP 200, as Matomo sends them; visits are filtered by
`minTimestamp` (last action strictly later), ordered by last action time
(`filter_sort_order`, descending unless `asc`) and paged by `filter_limit` (10 when absent,
-1 for all) and `filter_offset`. Limits of the emulator, each answered with an error rather
than ignored: format=JSON only, no `segment`, periods `day` and `range` only.

Faults for tests and demos: `inject("rate_limit" | "server_error" | "slow" | "reset" | "auth",
times)` scripts the next API requests; `fault_rate` makes a seeded share of requests fail.
"""

from __future__ import annotations

import collections
import contextlib
import json
import random
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from connectors.emulated import ready_text, wait_until_stopped
from connectors.matomo.emulator_data import PAGES, Counter, pageview, seed_visits, visit_summary

DEFAULT_TOKEN = "matomo-emulator-token"  # noqa: S105 - the emulator's public demo token
FAULTS = ("rate_limit", "server_error", "slow", "reset", "auth")
MATOMO_VERSION = "5.1.2"

REFUSED_MESSAGE = (
    "Unable to authenticate with the provided token. It is either invalid, expired or is "
    "required to be sent as a POST parameter."
)


class ApiError(Exception):
    """An error Matomo answers as `{"result": "error", "message": ...}`."""

    def __init__(self, message: str, status: int = 200) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def _no_access(site: object) -> ApiError:
    return ApiError(
        f"You can't access this resource as it requires 'view' access for the website id = {site}.",
        401,
    )


def _day(text: str, today: date) -> date:
    if text in ("today", "now"):
        return today
    if text == "yesterday":
        return today - timedelta(days=1)
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ApiError(
            "Date format must be: YYYY-MM-DD, or 'today' or 'yesterday' or any keyword "
            f"supported by the strtotime function: {text}"
        ) from None


def _window(period: str, value: str, today: date) -> tuple[int | None, int | None]:
    """The [start, end) of last action times that `period` and `date` select, in epoch s."""

    def epoch(day: date) -> int:
        return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())

    if period == "day":
        first = last = _day(value, today)
    elif period == "range":
        start, comma, end = value.partition(",")
        if not comma:
            raise ApiError(f"The date '{value}' is not a correct date range")
        first, last = _day(start, today), _day(end, today)
    else:
        raise ApiError(f"The emulator supports period=day and period=range, not '{period}'")
    # A window ending today stays open, as Matomo's does: visits happening now are included.
    open_end = value.endswith(("today", "now"))
    return epoch(first), None if open_end else epoch(last + timedelta(days=1))


def _int(params: dict[str, str], name: str, default: int) -> int:
    raw = params.get(name, "")
    if raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ApiError(f"The parameter '{name}' must be an integer, got '{raw}'") from None


class MatomoEmulator:
    """A Matomo instance with one site of seeded visits, served on 127.0.0.1."""

    def __init__(
        self,
        people: int = 40,
        seed: int = 7,
        *,
        site_id: int = 1,
        token: str = DEFAULT_TOKEN,
        fault_rate: float = 0.0,
        fault_kinds: Sequence[str] = ("server_error", "rate_limit", "reset"),
        slow_seconds: float = 2.0,
        retry_after: int = 2,
        clock: Callable[[], float] = time.time,
    ) -> None:
        unknown = set(fault_kinds) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; known: {FAULTS}")
        self.site_id = site_id
        self.token = token
        self.fault_rate = fault_rate
        self.fault_kinds = tuple(fault_kinds)
        self.slow_seconds = slow_seconds
        self.retry_after = retry_after
        self.requests: list[dict[str, dict[str, str]]] = []
        """Every API request received: its `query` and `form` parameters."""
        self._clock = clock
        self._visits = {v["idVisit"]: v for v in seed_visits(people, seed, site_id)}
        self._page_ids = Counter(
            max(
                (a.get("pageId", 0) for v in self._visits.values() for a in v["actionDetails"]),
                default=0,
            )
        )
        self._script: collections.deque[str] = collections.deque()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- control -------------------------------------------------------------------------

    def start(self, port: int = 0) -> str:
        """Serve from a background thread; returns the base URL."""
        self._server = _Server(("127.0.0.1", port), _handler_for(self))
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},  # how soon stop() takes effect
            name="matomo-emulator",
            daemon=True,
        )
        self._thread.start()
        return self.url

    @property
    def url(self) -> str:
        """The base URL, e.g. http://127.0.0.1:PORT (what the source's `url` option takes)."""
        if self._server is None:
            raise RuntimeError("the emulator is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        """Stop serving, cutting kept-alive and slow connections short."""
        if self._server is None or self._thread is None:
            return
        self._stopping.set()
        self._server.shutdown()
        with self._lock:
            for connection in list(self._connections):
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
        self._server.server_close()
        self._thread.join()
        self._server = None

    def __enter__(self) -> MatomoEmulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def inject(self, fault: str, times: int = 1) -> None:
        """Make the next `times` API requests fail with `fault` (one of FAULTS)."""
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; known: {FAULTS}")
        with self._lock:
            self._script.extend([fault] * times)

    # --- data ----------------------------------------------------------------------------

    def visits(self) -> list[dict[str, Any]]:
        """A copy of every visit, in id order."""
        with self._lock:
            visits: list[dict[str, Any]] = json.loads(
                json.dumps([self._visits[k] for k in sorted(self._visits)])
            )
            return visits

    def now(self) -> int:
        """The emulator's clock: never earlier than the latest action it holds."""
        latest = max((v["lastActionTimestamp"] for v in self._visits.values()), default=0)
        return max(int(self._clock()), latest + 1)

    def record_pageview(self, id_visit: int, path: str = "/pricing", at: int | None = None) -> int:
        """The visitor of `id_visit` views one more page (at `at`, default now); its time."""
        with self._lock:
            visit = self._visits[id_visit]
            timestamp = self.now() if at is None else at
            title = dict(PAGES).get(path, path)
            visit["actionDetails"].append(pageview(self._page_ids, path, title, timestamp))
            visit_summary(visit)
            return timestamp

    def delete_visits(self, ids: Iterable[int]) -> None:
        """Erase visits, as a GDPR deletion or a raw-log purge does (the API never tells)."""
        with self._lock:
            for id_visit in ids:
                self._visits.pop(id_visit, None)

    # --- the API -------------------------------------------------------------------------

    def _next_fault(self) -> str | None:
        with self._lock:
            if self._script:
                return self._script.popleft()
            if self.fault_rate and self._rng.random() < self.fault_rate:
                return self._rng.choice(self.fault_kinds)
        return None

    def answer(self, params: dict[str, str]) -> Any:
        """The JSON result of one API call, or ApiError."""
        if params.get("format", "").lower() != "json":
            raise ApiError("The emulator answers format=JSON only", 400)
        if params.get("token_auth") != self.token:
            raise (
                ApiError(REFUSED_MESSAGE, 401)
                if params.get("token_auth")
                else _no_access(params.get("idSite", ""))
            )
        method = params.get("method", "")
        if method == "API.getMatomoVersion":
            return {"value": MATOMO_VERSION}
        if method == "Live.getLastVisitsDetails":
            return self._last_visits(params)
        module, _, name = method.partition(".")
        if module in ("API", "Live") and name:
            raise ApiError(
                f"The method '{name}' does not exist or is not available in the module "
                f"'\\Piwik\\Plugins\\{module}\\API'."
            )
        raise ApiError(f"The plugin {module or method} is not enabled.")

    def _last_visits(self, params: dict[str, str]) -> list[dict[str, Any]]:
        if params.get("idSite", "") == "":
            raise ApiError("Please specify a value for 'idSite'.")
        if _int(params, "idSite", 0) != self.site_id:
            raise _no_access(params["idSite"])
        if params.get("segment"):
            raise ApiError("The emulator does not support the segment parameter")
        limit = _int(params, "filter_limit", 10)
        offset = max(_int(params, "filter_offset", 0), 0)
        min_timestamp = _int(params, "minTimestamp", 0)
        period, day = params.get("period", ""), params.get("date", "")
        with self._lock:
            now = self.now()
            start: int | None
            end: int | None
            if period and day:
                start, end = _window(period, day, datetime.fromtimestamp(now, UTC).date())
            elif not (params.get("filter_limit") or params.get("filter_offset")):
                start, end = now - 86_400, None  # Matomo's default: the last 24 hours
            else:
                start, end = None, None
            chosen = [
                v
                for v in self._visits.values()
                if v["lastActionTimestamp"] > min_timestamp
                and (start is None or v["lastActionTimestamp"] >= start)
                and (end is None or v["lastActionTimestamp"] < end)
            ]
            descending = params.get("filter_sort_order", "").lower() != "asc"
            chosen.sort(key=lambda v: (v["lastActionTimestamp"], v["idVisit"]), reverse=descending)
            chosen = chosen[offset:] if limit < 0 else chosen[offset : offset + limit]
            result: list[dict[str, Any]] = json.loads(json.dumps(chosen))
        if params.get("doNotFetchActions") in ("1", "true"):
            for visit in result:
                visit["actionDetails"] = []
        return result


class _Server(ThreadingHTTPServer):
    # Handler threads are joined on close (their connections are shut down first), so no
    # thread outlives stop().
    daemon_threads = False


def _handler_for(emulator: MatomoEmulator) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in two writes: without this, Nagle and delayed ACKs add
        # 40 ms to every kept-alive request.
        disable_nagle_algorithm = True

        def setup(self) -> None:
            super().setup()
            with emulator._lock:
                emulator._connections.add(self.connection)

        def finish(self) -> None:
            with emulator._lock:
                emulator._connections.discard(self.connection)
            super().finish()

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: tests and demos read the emulator's `requests` instead."""

        def do_GET(self) -> None:
            self._serve(form={})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode("utf-8", "replace")
            self._serve(form=dict(parse_qsl(body, keep_blank_values=True)))

        def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def _reset(self) -> None:
            # SO_LINGER with a zero timeout makes close() send RST instead of FIN.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            self.connection.close()

        def _serve(self, form: dict[str, str]) -> None:
            url = urlsplit(self.path)
            if url.path not in ("/", "/index.php"):
                self._send(404, {"result": "error", "message": f"Not found: {url.path}"})
                return
            query = dict(parse_qsl(url.query, keep_blank_values=True))
            params = {**query, **form}
            if params.get("module") != "API":
                self._send(400, {"result": "error", "message": "The emulator serves module=API"})
                return
            with emulator._lock:
                emulator.requests.append({"query": query, "form": form})
            fault = emulator._next_fault()
            if fault == "reset":
                self._reset()
                return
            if fault == "slow":
                emulator._stopping.wait(emulator.slow_seconds)
            elif fault == "rate_limit":
                self._send(
                    429,
                    {"result": "error", "message": "Too many requests, slow down"},
                    {"Retry-After": str(emulator.retry_after)},
                )
                return
            elif fault == "server_error":
                self._send(500, {"result": "error", "message": "Internal Server Error"})
                return
            elif fault == "auth":
                self._send(401, {"result": "error", "message": REFUSED_MESSAGE})
                return
            try:
                result = emulator.answer(params)
            except ApiError as error:
                self._send(error.status, {"result": "error", "message": error.message})
                return
            self._send(200, result)

    return Handler


def serve_forever(port: int, people: int, seed: int, token: str = DEFAULT_TOKEN) -> None:
    """Run the emulator in the foreground on `port` until interrupted, after saying how to
    point syncd.toml at it."""
    emulator = MatomoEmulator(people, seed, token=token)
    holds = (
        f"site {emulator.site_id} with {len(emulator.visits())} visits of {people} sample "
        f"people (seed {seed})"
    )
    secrets = {"token_auth": ("MATOMO_TOKEN", token)}
    # A Ctrl-C from the moment it serves stops it cleanly.
    try:
        url = emulator.start(port)
        options: dict[str, str | int] = {"url": url, "site_id": emulator.site_id}
        print(ready_text("Matomo", url, holds, options, secrets, destination=False), flush=True)
        wait_until_stopped()
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()
