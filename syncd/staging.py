"""Mapping pages of raw records into what the store writes, in worker processes when large.

Mapping is pure CPU (phone parsing dominates it), so a large pull maps the next pages in
worker processes while the main process writes the current one. Pages are still committed
strictly in order, so each cursor is stored after everything before it. Workers compile the
mappings themselves from the config file: compiled mappings are closures and do not pickle.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from array import array
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any, Generic, TypeVar

from sqlalchemy import Engine

from syncd.connector import Header
from syncd.errors import ConfigError, Problem, RecordError
from syncd.identity.resolve import EdgesByKind, anchor_range, profile_id_for, profile_range
from syncd.identity.unify import IdRange, all_edges, id_ranges
from syncd.log import get_logger
from syncd.mapping.compiler import CompiledStream, MappedEvent, Mappings
from syncd.mapping.model import ProfileMapping
from syncd.process import tune_garbage_collector
from syncd.profiles import ComputedElsewhere, ProfileRow, rows_of_members
from syncd.store.db import CACHE_KIB, SMALL_CACHE_KIB, Bulk, in_memory, open_engine
from syncd.store.writer import (
    StagedRecord,
    Unchanged,
    record_id,
    stage_record,
    stored_content,
    stored_hashes,
)


@dataclass
class StagedPage:
    """A page after mapping: what to store, what the store holds already, what to quarantine,
    and how many records the page held (counted where it was mapped: a page may be parsed
    there first)."""

    read: int = 0
    records: list[StagedRecord] = field(default_factory=list)
    events: list[MappedEvent] = field(default_factory=list)
    quarantined: list[tuple[str, str, Any]] = field(default_factory=list)
    unchanged: Unchanged = field(default_factory=Unchanged)

    def __reduce__(self) -> tuple[Any, ...]:
        # A page crosses from a worker by pickle. A named tuple pickles through copyreg, a
        # Python call per record; a plain tuple pickles natively: 3.8 µs a record became 1.9
        # in the worker, and the writing process's unpickling got no slower.
        records = [tuple(record) for record in self.records]
        return (_staged_page, (self.read, records, self.events, self.quarantined, self.unchanged))


def _staged_page(
    read: int,
    records: list[tuple[Any, ...]],
    events: list[MappedEvent],
    quarantined: list[tuple[str, str, Any]],
    unchanged: Unchanged,
) -> StagedPage:
    return StagedPage(read, list(map(StagedRecord._make, records)), events, quarantined, unchanged)


T = TypeVar("T")
R = TypeVar("R")
StoredHashes = Callable[[Sequence[int]], Mapping[int, str]]
"""The content hashes the store holds for some record ids."""
RANGES_PER_WORKER = 16
"""Tasks per worker a resolution's profiles are split into: enough to keep every worker busy
to the end, while the rows of only a few tasks wait in memory to be written."""


def stage_page(
    compiled: CompiledStream, page: Any, stored_hashes: StoredHashes | None = None
) -> StagedPage:
    """Map every record of a page; a bad one is set aside with its reason, the rest go on.

    With `stored_hashes`, a record whose content the store already holds is not mapped at
    all: a re-read of unchanged data (`run-once --full`) then costs a hash per record.
    """
    staged = StagedPage(read=len(page.records))
    contents = (
        {}
        if compiled.is_events
        else {
            position: stored_content(compiled.fingerprint, raw.payload)
            for position, raw in enumerate(page.records)
            if raw.error is None
        }
    )
    if stored_hashes:
        staged.unchanged = _unchanged(compiled, page, contents, stored_hashes)
    skipped = set(staged.unchanged.positions)
    for position, raw in enumerate(page.records):
        if raw.error is not None:
            staged.quarantined.append((raw.location, raw.error, raw.payload))
            continue
        if position in skipped:
            continue
        try:
            if compiled.is_events:
                staged.events.append(compiled.map_event(raw.payload))
            else:
                # Mapped as the store keeps it, so that a rebuild from the store maps the same;
                # but a key is taken as sent: cleaned, it could be another record's.
                kept, payload_json, digest = contents[position]
                if kept is not raw.payload:
                    compiled.external_id(raw.payload)
                mapped = compiled.map_record(kept)
                staged.records.append(
                    stage_record(compiled.source, compiled.stream, mapped, payload_json, digest)
                )
        except RecordError as error:
            staged.quarantined.append((raw.location, str(error), raw.payload))
    if skipped:
        # The page's last version of a record wins: an earlier one beside it is history.
        held = set(staged.unchanged.ids)
        staged.records = [record for record in staged.records if record.id not in held]
    return staged


def warn_what_files_lack(compiled: CompiledStream, pages: Iterable[Any]) -> Iterator[Any]:
    """The pages, with a warning for each header (a CSV file's) that lacks names the mapping
    reads: the one line that explains a file's records failing, or missing traits, all alike.
    """
    checked: set[Header] = set()
    for page in pages:
        header = page.header
        if header is not None and header not in checked:
            checked.add(header)
            lacking = compiled.lacking(header.names)
            if lacking:
                # Never the header's own names: a file without a header row has a record
                # there, personal data.
                get_logger().warning(
                    "file lacks columns the mapping reads",
                    source=compiled.source,
                    stream=compiled.stream,
                    file=header.of,
                    missing=lacking,
                )
        yield page


def _unchanged(
    compiled: CompiledStream,
    page: Any,
    contents: Mapping[int, tuple[Any, str, str]],
    stored_hashes: StoredHashes,
) -> Unchanged:
    """The records of a page whose content hash the store already has (last occurrences)."""
    last: dict[int, tuple[str, int]] = {}
    for position, (_, _, digest) in contents.items():
        try:
            external_id = compiled.external_id(page.records[position].payload)
        except RecordError:
            continue  # mapped in full, which quarantines it with the reason
        last[record_id(compiled.source, compiled.stream, external_id)] = (digest, position)
    stored = stored_hashes(list(last))
    unchanged = Unchanged()
    for key, (digest, position) in last.items():
        if stored.get(key) == digest:
            unchanged.add(key, digest, position)
    return unchanged


_worker_mappings: Mappings | None = None
_worker_engine: Engine | None = None


def _exit_with_parent(parent: int) -> None:
    # A worker whose run was killed (kill -9 leaves no chance to shut the pool down) must
    # not linger: once re-parented, it exits.
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


def _start_worker(config_path: str, store_url: str | None) -> None:
    global _worker_mappings, _worker_engine  # one of each per worker process
    from syncd.config import load_config
    from syncd.mapping.compiler import compile_mappings

    # The run decides when to stop: a Ctrl-C or a service manager's SIGTERM reaches every
    # process of the group, and a pass under way must still finish (its workers with it).
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    _worker_mappings = compile_mappings(load_config(Path(config_path)))
    # The run's own store, not the one the file names now: read beside the run's writer.
    _worker_engine = None if store_url is None else open_engine(store_url)
    tune_garbage_collector()


@contextmanager
def _worker_store(scan: bool = False) -> Iterator[Bulk]:
    """A read of the run's store through this worker's own connection.

    A `scan` (every edge, the records of many profiles) reads most pages once, so it gets a
    small cache: a full one would stay with the worker, 64 MB more for each. Lookups of
    stored hashes hit the same index pages again and keep the full cache.
    """
    assert _worker_engine is not None
    with _worker_engine.connect() as connection:
        if connection.dialect.name == "sqlite":
            cache = SMALL_CACHE_KIB if scan else CACHE_KIB
            connection.exec_driver_sql(f"PRAGMA cache_size={cache}")
        yield Bulk(connection)


def _stored_hashes_in_worker(ids: Sequence[int]) -> Mapping[int, str]:
    with _worker_store() as bulk:
        return stored_hashes(bulk, ids)


def _stage_in_worker(
    source: str, stream: str, fingerprint: str, look_up: bool, page: Any
) -> StagedPage:
    assert _worker_mappings is not None
    compiled = _worker_mappings.for_stream(source, stream)
    if compiled.fingerprint != fingerprint:
        # The file changed on disk after the run started: never map one run two ways.
        raise ConfigError(
            [
                Problem(
                    f"{source}/{stream}",
                    "(mapping)",
                    "the mapping file changed during the run",
                    "run again",
                )
            ]
        )
    reader = _stored_hashes_in_worker if look_up and _worker_engine is not None else None
    return stage_page(compiled, page, reader)


def _profiles_in_worker(
    rules: ProfileMapping,
    nodes: Sequence[int],
    profiles: Sequence[str] | None,
    now: str,
    run_id: str,
) -> list[ProfileRow]:
    """The changed rows of the profiles of some nodes (`profiles[i]` holds `nodes[i]`; with
    no `profiles`, each node is a profile of its own)."""
    held: dict[str, list[int]] = defaultdict(list)
    if profiles is None:
        profiles = [profile_id_for(node) for node in nodes]
    for node, profile in zip(nodes, profiles, strict=True):
        held[profile].append(node)
    with _worker_store(scan=True) as bulk:
        return rows_of_members(bulk, rules, sorted(held.items()), now, run_id)


def _edges_in_worker(kinds: Sequence[str], identifiers: IdRange) -> EdgesByKind:
    with _worker_store(scan=True) as bulk:
        return all_edges(bulk, kinds, identifiers)


class InOrder(Generic[T, R]):
    """The results of tasks as (tag, result), in the order they were submitted, with `ahead`
    tasks submitted at a time: one more than there are workers keeps every worker busy, and
    no result waits in memory long. `submitted` submits a task as it is iterated."""

    def __init__(self, submitted: Iterator[tuple[T, Future[R]]], ahead: int) -> None:
        self._submitted = submitted
        self._ahead = ahead
        self._pending: deque[tuple[T, Future[R]]] = deque()
        self._fill()

    def _fill(self) -> None:
        while len(self._pending) < self._ahead:
            task = next(self._submitted, None)
            if task is None:
                return
            self._pending.append(task)

    def _take(self) -> tuple[T, R]:
        tag, future = self._pending.popleft()
        return tag, future.result()

    # The next task is submitted only once the result before it was taken: should the source
    # fail while giving it, every result taken by then has been handed on.
    def ready(self) -> Iterator[tuple[T, R]]:
        """The results finished by now, without waiting for any."""
        self._fill()
        while self._pending and self._pending[0][1].done():
            yield self._take()
            self._fill()

    def rest(self) -> Iterator[tuple[T, R]]:
        """Every result not yet taken, waiting for each."""
        self._fill()
        while self._pending:
            yield self._take()
            self._fill()


class PageMapper:
    """Stages pages in order; from a stream's second page on, in `workers` processes. The
    same processes compute the profiles of a large resolution (`profile_rows`)."""

    def __init__(self, config_path: Path, workers: int, store_url: str) -> None:
        self._config_path = config_path
        self._workers = workers
        # A store in memory lives in this process alone: workers cannot read it.
        self._store_url = None if in_memory(store_url) else store_url
        self._pool: ProcessPoolExecutor | None = None

    def _ensure_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            context = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(
                self._workers,
                mp_context=context,
                initializer=_start_worker,
                initargs=(str(self._config_path), self._store_url),
            )
        return self._pool

    def stage(
        self, compiled: CompiledStream, pages: Iterable[Any], look_up: bool = True
    ) -> Iterator[tuple[Any, StagedPage]]:
        """Yield (page, staged page) in the order the source gave them.

        `look_up`: workers skip records whose content the store holds; pointless (a read per
        page for nothing) when the stream had no record stored as the pull began.
        """
        iterator = warn_what_files_lack(compiled, pages)
        first = next(iterator, None)
        if first is None:
            return
        second = next(iterator, None)
        if second is None or self._workers < 2:
            yield first, stage_page(compiled, first)
            if second is not None:
                yield second, stage_page(compiled, second)
                for page in iterator:
                    yield page, stage_page(compiled, page)
            return
        pool = self._ensure_pool()
        key = (compiled.source, compiled.stream, compiled.fingerprint, look_up)
        yield from self._in_order(
            (page, pool.submit(_stage_in_worker, *key, page))
            for page in chain((first, second), iterator)
        ).rest()

    def _in_order(self, submitted: Iterable[tuple[T, Future[R]]]) -> InOrder[T, R]:
        return InOrder(iter(submitted), self._workers + 1)

    def profile_rows(
        self,
        rules: ProfileMapping,
        profile_of: Iterable[tuple[int, str]],
        run_id: str,
        now: str,
    ) -> ComputedElsewhere | None:
        """Start computing the profiles of a large resolution in the workers, one range of
        profile ids per task, in id order; None without `_readers` (a pull that needed no
        workers is small). `profile_of` gives every node of those profiles with its profile.

        The workers read the records through connections of their own, so they see what is
        committed: use it only where the records were committed before the resolution.
        """
        pool = self._readers()
        if pool is None:
            return None
        parts = RANGES_PER_WORKER * self._workers
        ranges = [(array("q"), list[str]()) for _ in range(parts)]
        for node, profile in profile_of:
            nodes, profiles = ranges[profile_range(profile, parts)]
            nodes.append(node)
            profiles.append(profile)
        return self._profile_tasks(pool, rules, ranges, run_id, now)

    def lone_profile_rows(
        self, rules: ProfileMapping, lone: Sequence[int], run_id: str, now: str
    ) -> ComputedElsewhere | None:
        """`profile_rows` of nodes that are each a profile of its own (`Settling.lone`): the
        workers write their ids, the run only sorts the nodes into ranges."""
        pool = self._readers()
        if pool is None:
            return None
        parts = RANGES_PER_WORKER * self._workers
        ranges: list[tuple[array[int], None]] = [(array("q"), None) for _ in range(parts)]
        for node in lone:
            ranges[anchor_range(node, parts)][0].append(node)
        return self._profile_tasks(pool, rules, ranges, run_id, now)

    def _profile_tasks(
        self,
        pool: ProcessPoolExecutor,
        rules: ProfileMapping,
        ranges: Sequence[tuple[array[int], list[str] | None]],
        run_id: str,
        now: str,
    ) -> ComputedElsewhere:
        # Only a few tasks run ahead, and a task's rows are dropped once written: the rows
        # of a million profiles held at once would double the run's memory.
        return self._in_order(
            (None, pool.submit(_profiles_in_worker, rules, nodes, profiles, now, run_id))
            for nodes, profiles in ranges
        )

    def all_edges(self, kinds: Sequence[str]) -> Callable[[], EdgesByKind] | None:
        """Start reading every edge of the store in the workers (`unify.all_edges`), one range
        of identifiers each, and give what waits for them; None without `_readers`. As with
        `profile_rows`, only for what was committed before the resolution."""
        pool = self._readers()
        if pool is None:
            return None
        parts = [
            pool.submit(_edges_in_worker, kinds, identifiers)
            for identifiers in id_ranges(self._workers)
        ]

        def joined() -> EdgesByKind:
            # Taken out of the list: a future holds its result, and resolution frees the
            # edges as it goes.
            edges = parts.pop(0).result()
            while parts:
                edges.extend(parts.pop(0).result())
            return edges

        return joined

    def _readers(self) -> ProcessPoolExecutor | None:
        """The workers, if the pull started them (starting them late would read the config
        files again) and they can read the store."""
        return None if self._store_url is None else self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None
