"""One run at a time per store.

Two runs of one store at once (a daemon pass and a manual `run-once`, or two daemon passes)
would each read what the other is half-way through writing: a pull trusting that a stream it
found empty stays its own, a resolution of records another run is re-pulling, two pushes of
one change. So a run holds this lock from start to finish, and a second one waits for it.
The operating system (SQLite: a lock on a file beside the store) or the server (PostgreSQL:
an advisory lock of the run's session) releases it when the holder dies, even by kill -9.
"""

from __future__ import annotations

import fcntl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from syncd.log import get_logger
from syncd.store.db import in_memory

ADVISORY_KEY = 0x73796E6364  # "syncd": the lock's number among the server's advisory locks


@contextmanager
def run_lock(engine: Engine, waiting: Callable[[], None]) -> Iterator[None]:
    """Hold the store's run lock; `waiting` is called once if another run holds it."""
    if engine.dialect.name == "postgresql":
        with _advisory_lock(engine, waiting):
            yield
        return
    if in_memory(engine.url):
        yield  # a store only this process can see
        return
    with _file_lock(Path(f"{engine.url.database}.run-lock"), waiting):
        yield


@contextmanager
def _file_lock(path: Path, waiting: Callable[[], None]) -> Iterator[None]:
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            waiting()
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


KEEPALIVE_SECONDS = 20.0
"""How often the session holding a PostgreSQL run lock is used: a session idle for longer
than the server's `idle_session_timeout` (or a proxy's idle limit) is ended, and its lock
with it, while the run goes on."""


@contextmanager
def _advisory_lock(engine: Engine, waiting: Callable[[], None]) -> Iterator[None]:
    with engine.connect() as connection:
        held = connection.exec_driver_sql(
            "SELECT pg_try_advisory_lock(%s)", (ADVISORY_KEY,)
        ).scalar_one()
        if not held:
            waiting()
            connection.exec_driver_sql("SELECT pg_advisory_lock(%s)", (ADVISORY_KEY,))
        # The lock belongs to the session, not to this transaction: end it, keep the lock.
        connection.commit()
        stop, lost = threading.Event(), threading.Event()
        keeper = threading.Thread(
            target=_keep_alive,
            args=(connection, stop, lost),
            name="run lock keepalive",
            daemon=True,
        )
        keeper.start()
        try:
            yield
        finally:
            stop.set()
            keeper.join()
            if lost.is_set():
                # Said here, where the run's id is bound, not in the keepalive's thread.
                get_logger().error(
                    "the server ended the session holding the run lock during this run; "
                    "another run may have run beside it"
                )
            else:
                # A session the server ended took its lock with it: nothing is left to release.
                with suppress(SQLAlchemyError):
                    connection.exec_driver_sql("SELECT pg_advisory_unlock(%s)", (ADVISORY_KEY,))
                    connection.commit()


def _keep_alive(connection: Connection, stop: threading.Event, lost: threading.Event) -> None:
    while not stop.wait(KEEPALIVE_SECONDS):
        try:
            connection.exec_driver_sql("SELECT 1")
            connection.commit()
        except SQLAlchemyError:
            lost.set()
            with suppress(SQLAlchemyError):
                connection.rollback()
            return
