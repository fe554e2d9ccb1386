"""The long-running side of syncd: scheduled passes per source, and the ingest endpoint.

`run_daemon` (behind `syncd run`) runs one pass per source on that source's `schedule`
(every N seconds, or a crontab line) with an APScheduler background scheduler, and serves
the ingest endpoint when an ingest source is configured. `serve_ingest` (behind
`syncd serve`) serves the endpoint alone. Both stop cleanly on SIGTERM or SIGINT: the
endpoint drains its last group commit, a pass under way finishes, then they return.

Passes run one at a time: two passes unifying at once would resolve overlapping parts of
the identity graph in two transactions. A source whose pass is still running when its next
turn comes is not started twice (max_instances=1), and turns missed meanwhile collapse into
one (coalescing).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime
from types import FrameType
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import Engine
from starlette.applications import Starlette

from connectors.ingest.options import IngestOptions
from syncd.config import Config, ConnectorEntry, Schedule
from syncd.errors import ConfigError, Problem
from syncd.ingest.app import create_app
from syncd.ingest.server import running
from syncd.ingest.store_sink import StoreEventSink
from syncd.log import bind_service, get_logger, unbind_run
from syncd.mapping.compiler import Mappings, compile_mappings
from syncd.runner import Pipeline, new_run_id, record_failed_run

INGEST_KIND = "ingest"

Ready = Callable[[str], None]
"""Called with the endpoint's base URL (e.g. http://127.0.0.1:8787) once it accepts requests."""


def ingest_source(config: Config) -> ConnectorEntry | None:
    """The enabled source of type ingest, if any (the first by name when there are several)."""
    for name in sorted(config.sources):
        entry = config.sources[name]
        if entry.enabled and entry.spec.kind == INGEST_KIND:
            return entry
    return None


def ingest_app(config: Config, engine: Engine) -> Starlette:
    """The ingest endpoint committing to `engine`'s spool, with the ingest source's write keys.

    Raises ConfigError when no ingest source is configured or a write key's variable is unset.
    """
    entry = ingest_source(config)
    if entry is None:
        raise ConfigError(
            [
                Problem(
                    str(config.path),
                    "sources",
                    'no enabled source has type = "ingest"; the endpoint has no write keys',
                    'add [sources.web] with type = "ingest" (see docs/INGEST.md)',
                )
            ]
        )
    options = _ingest_options(entry)
    keys = [
        key.resolve(f"{config.path}:sources.{entry.name}.options.write_keys")
        for key in options.write_keys
    ]
    return create_app(
        StoreEventSink(engine),
        keys,
        max_commit_messages=options.max_commit_messages,
        max_pending_requests=options.max_pending_requests,
    )


def serve_ingest(
    config: Config,
    engine: Engine,
    host: str | None = None,
    port: int | None = None,
    *,
    ready: Ready | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Serve the ingest endpoint alone until SIGTERM/SIGINT (or until `stop` is set).

    `host` and `port` default to the ingest source's options; port 0 picks a free port,
    reported to `ready`. Signal handlers are installed only when called from the main
    thread; elsewhere, set `stop` to end it.
    """
    bind_service(new_run_id())
    app = ingest_app(config, engine)
    options = _ingest_options(ingest_source(config))
    log = get_logger()
    with running(app, host or options.host, options.port if port is None else port) as url:
        log.info("ingest endpoint listening", url=url)
        if ready is not None:
            ready(url)
        _wait(stop)
    log.info("ingest endpoint stopped")


def run_daemon(
    config: Config,
    mappings: Mappings,
    engine: Engine,
    *,
    ready: Ready | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Run every enabled source on its schedule, and the ingest endpoint when one is configured.

    Sources on `every_seconds` run once at start, then every N seconds; sources on `cron`
    at the crontab's times (UTC). Returns after SIGTERM/SIGINT (or once `stop` is set), when
    the pass under way has finished. `ready` gets the endpoint's URL, or "" without one.
    Raises ConfigError for a crontab line APScheduler cannot read, before anything runs.
    """
    bind_service(new_run_id())
    log = get_logger()
    triggers = _triggers(config, mappings)
    scheduler = BackgroundScheduler(
        timezone=UTC,
        executors={"default": ThreadPoolExecutor(max_workers=1)},
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
    )
    for name, trigger in triggers.items():
        first = datetime.now(UTC) if isinstance(trigger, IntervalTrigger) else None
        scheduler.add_job(
            _pass,
            trigger,
            args=(config, engine, name),
            id=name,
            name=f"pass of {name}",
            **({"next_run_time": first} if first else {}),
        )
    endpoint = ingest_source(config)
    serving = (
        running(ingest_app(config, engine), *_address(endpoint))
        if endpoint is not None
        else nullcontext("")
    )
    with serving as url:
        scheduler.start()
        log.info("daemon started", sources=sorted(triggers), ingest=url or None)
        try:
            if ready is not None:
                ready(url)
            _wait(stop)
        finally:
            log.info("daemon stopping")
            scheduler.shutdown(wait=True)
    log.info("daemon stopped")


def _pass(config: Config, engine: Engine, name: str) -> None:
    log = get_logger()
    # This thread's last pass bound its run id; until this pass's run starts, lines are the
    # daemon's.
    unbind_run()
    try:
        # Mapping files edited since start apply from the next pass on, in this process and
        # in its mapping workers alike (a bad edit fails the pass, not the daemon).
        try:
            current = compile_mappings(config)
        except ConfigError as error:
            # No run could start; one is recorded failed, so `syncd status` shows the pass.
            record_failed_run(engine, "incremental", f"{name}: {error}")
            raise
        Pipeline(config, current, engine).run_once(only_sources=[name])
    except Exception as error:  # noqa: BLE001 - the daemon outlives any one failed pass
        # The pass failed as a whole (a mapping broke, the store went away); the next turn
        # tries again. Only the error's type and text: SQL parameters are hidden by the engine.
        log.error(  # noqa: TRY400 - a traceback's locals and SQL could show record values
            "scheduled pass failed", source=name, error=str(error), error_type=type(error).__name__
        )


def _triggers(config: Config, mappings: Mappings) -> dict[str, BaseTrigger]:
    triggers: dict[str, BaseTrigger] = {}
    problems: list[Problem] = []
    for name, entry in config.sources.items():
        if not entry.enabled or not mappings.streams_of(name):
            continue
        try:
            trigger = _trigger(entry.schedule)
        except ValueError as error:
            problems.append(
                Problem(
                    str(config.path),
                    f"sources.{name}.schedule.cron",
                    str(error),
                    'write five fields: minute hour day month weekday, e.g. "*/15 * * * *"',
                )
            )
            continue
        if trigger is not None:
            triggers[name] = trigger
    if problems:
        raise ConfigError(problems)
    return triggers


def _trigger(schedule: Schedule) -> BaseTrigger | None:
    if schedule.cron is not None:
        return CronTrigger.from_crontab(schedule.cron, timezone=UTC)
    if schedule.every_seconds is not None:
        return IntervalTrigger(seconds=schedule.every_seconds, timezone=UTC)
    return None


def _ingest_options(entry: ConnectorEntry | None) -> IngestOptions:
    options = entry.options if entry is not None else None
    if not isinstance(options, IngestOptions):
        raise TypeError("an ingest source's options must be IngestOptions")
    return options


def _address(entry: ConnectorEntry) -> tuple[str, int]:
    options = _ingest_options(entry)
    return options.host, options.port


def _wait(stop: threading.Event | None) -> None:
    event = stop or threading.Event()
    with _signals_set(event):
        # Short waits: the signal handler runs between them at the latest.
        while not event.wait(0.2):
            pass


@contextmanager
def _signals_set(event: threading.Event) -> Iterator[None]:
    """SIGTERM and SIGINT set `event` while inside; only the main thread may install them."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum: int, frame: FrameType | None) -> None:
        event.set()

    previous: dict[signal.Signals, Any] = {}
    for signum in (signal.SIGTERM, signal.SIGINT):
        previous[signum] = signal.signal(signum, handle)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
