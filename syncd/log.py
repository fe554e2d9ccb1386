"""Structured JSON logs: one line per event, a run id on every line, no secret or raw PII.

Lines go to the log file (for `syncd logs`) and to stderr; on a terminal stderr only gets
warnings and errors, so the progress display stays readable.
"""

from __future__ import annotations

import atexit
import sys
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any, TextIO

import structlog

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}


class _Tee:
    """A structlog logger that writes each rendered line to the file and maybe to stderr."""

    def __init__(self, file: TextIO | None, stderr_level: int) -> None:
        self._file = file
        self._stderr_level = stderr_level

    def _write(self, message: str, level: int) -> None:
        if self._file is not None:
            self._file.write(message + "\n")
            self._file.flush()
        if level >= self._stderr_level:
            print(message, file=sys.stderr, flush=True)

    # structlog calls the method named after the level with the rendered line.
    def debug(self, message: str) -> None:
        self._write(message, LEVELS["debug"])

    def info(self, message: str) -> None:
        self._write(message, LEVELS["info"])

    def warning(self, message: str) -> None:
        self._write(message, LEVELS["warning"])

    def error(self, message: str) -> None:
        self._write(message, LEVELS["error"])

    msg = info
    critical = exception = error


_open_files: list[TextIO] = []


def close() -> None:
    """Close the log file (configure() does it before opening another)."""
    while _open_files:
        _open_files.pop().close()


def configure(
    level: str = "info", file: Path | None = None, quiet_terminal: bool | None = None
) -> None:
    """Set up structlog for this process; calling it again replaces the previous set-up."""
    handle = None
    if file is not None:
        # Opened before the previous file is closed: a path that cannot be written leaves
        # the set-up as it was, still writing where it wrote.
        file.parent.mkdir(parents=True, exist_ok=True)
        handle = file.open("a", encoding="utf-8")
    close()
    if handle is not None:
        _open_files.append(handle)
    terminal = sys.stderr.isatty() if quiet_terminal is None else quiet_terminal
    stderr_level = LEVELS["warning"] if terminal else LEVELS[level]
    sink = _Tee(handle, stderr_level)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            _service_run_id,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(sort_keys=True),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=lambda *_args: sink,
        cache_logger_on_first_use=False,
    )


atexit.register(close)


def bind_run(run_id: str) -> None:
    """Every line logged from now on in this context carries `run_id`."""
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(run_id=run_id)


def unbind_run() -> None:
    """Lines of this context belong to no run any more (see `bind_service`)."""
    structlog.contextvars.clear_contextvars()


_service: dict[str, str] = {}


def bind_service(run_id: str) -> None:
    """A long-running process (the daemon, the endpoint) gives its lines that belong to no
    run this id: its own start and stop, a pass that failed before its run began, and the
    lines of threads it did not start a run in (a new thread starts with no bound context)."""
    _service["run_id"] = run_id


def _service_run_id(
    _logger: Any, _method: str, line: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    if "run_id" not in line and _service:
        line["run_id"] = _service["run_id"]
    return line


def get_logger() -> Any:
    return structlog.get_logger("syncd")
