"""One pass of the pipeline: pull → map → store, then unify → profiles, with a sync_run row.

Each page is committed with the cursor that follows it, so a run killed at any point resumes
where it stopped; records are marked for the identity stage in the same transaction, so the
identity and profile work a killed run did not finish is picked up by the next one.
"""

from __future__ import annotations

import functools
import json
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Concatenate, ParamSpec, Protocol, TypeVar

from sqlalchemy import Engine

from syncd.config import Config, ConnectorEntry
from syncd.connector import ConnectorContext, Page, RawRecord, Source
from syncd.errors import ConfigError, ConnectorError, SyncdError
from syncd.identity.unify import UnifyResult, resolve_marked, unify, write_resolution
from syncd.jsontext import canonical_json
from syncd.log import bind_run, get_logger
from syncd.mapping.compiler import CompiledStream, Mappings
from syncd.mapping.destinations import DestinationMappings, compile_destinations
from syncd.mapping.model import ProfileMapping
from syncd.mapping.transforms import format_timestamp
from syncd.plan.ledger import follow_renames
from syncd.profiles import (
    RowsFromElsewhere,
    clear_pending_events,
    leaving_windows,
    pending_events,
    refresh_profiles,
    refresh_time,
)
from syncd.push import run_push
from syncd.staging import PageMapper, StagedPage, stage_page
from syncd.store.db import Bulk, PageGroups, transaction
from syncd.store.marks import mark_profiles_as_of, profiles_as_of
from syncd.store.runlock import run_lock
from syncd.store.writer import (
    DELETED_HASH,
    PageWriter,
    StagedRecord,
    WriteCounts,
    WrittenIds,
    load_cursor,
)
from syncd.timeutil import utcnow

PARALLEL_PROFILE_NODES = 100_000
"""From this many nodes resolved on, the mapping workers compute the profiles: below it,
starting them and handing them the work costs more than they save."""


class Progress(Protocol):
    """How a run reports what it does as it goes (a progress bar, or plain lines)."""

    def stream_started(self, source: str, stream: str) -> None: ...

    def page_done(self, source: str, stream: str, records: int, counts: WriteCounts) -> None: ...

    def stage(self, name: str) -> None: ...


class SilentProgress:
    def stream_started(self, source: str, stream: str) -> None:
        """Report nothing."""

    def page_done(self, source: str, stream: str, records: int, counts: WriteCounts) -> None:
        """Report nothing."""

    def stage(self, name: str) -> None:
        """Report nothing."""


@dataclass
class RunSummary:
    """What a run did; `status` is ok or failed."""

    run_id: str
    status: str = "ok"
    counts: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    seconds: dict[str, float] = field(default_factory=dict)
    """Wall time per stage (pull, unify, profiles, push), for the operator reading the log."""

    def bump(self, name: str, amount: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + amount

    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            spent = self.seconds.get(stage, 0.0) + time.perf_counter() - started
            self.seconds[stage] = round(spent, 3)


def new_run_id() -> str:
    """Sortable by time, unique across processes."""
    return f"{utcnow():%Y%m%dT%H%M%S.%f}-{uuid.uuid4().hex[:8]}"


INTERRUPTED = (
    "the run stopped before it finished (killed, or the machine went down); the next run "
    "took over its work"
)


def start_run(engine: Engine, kind: str) -> RunSummary:
    """Record a run as started (its sync_run row); every line logged from here carries its id."""
    summary = RunSummary(new_run_id())
    bind_run(summary.run_id)
    with transaction(engine) as bulk:
        bulk.executemany(
            bulk.sql(
                "INSERT INTO sync_run (id, kind, started_at, status, counts) "
                "VALUES (?, ?, ?, 'running', ?)"
            ),
            [(summary.run_id, kind, format_timestamp(utcnow()), "{}")],
        )
    get_logger().info("run started", kind=kind)
    return summary


def finish_run(engine: Engine, summary: RunSummary) -> RunSummary:
    """Record how a run ended, with its counts and errors, and log it."""
    with transaction(engine) as bulk:
        bulk.executemany(
            bulk.sql(
                "UPDATE sync_run SET finished_at = ?, status = ?, counts = ?, error = ? "
                "WHERE id = ?"
            ),
            [
                (
                    format_timestamp(utcnow()),
                    summary.status,
                    json.dumps(summary.counts, sort_keys=True),
                    "\n".join(summary.errors) or None,
                    summary.run_id,
                )
            ],
        )
    log = get_logger()
    (log.info if summary.status == "ok" else log.error)(
        "run finished", status=summary.status, seconds=summary.seconds, **summary.counts
    )
    return summary


def record_failed_run(engine: Engine, kind: str, error: str) -> RunSummary:
    """A run that failed before it could begin (its mappings did not compile), recorded like
    any other, so that `syncd status` shows it."""
    summary = start_run(engine, kind)
    summary.status = "failed"
    summary.errors.append(error)
    return finish_run(engine, summary)


P = ParamSpec("P")
R = TypeVar("R")


def _one_run_at_a_time(
    method: Callable[Concatenate[Pipeline, P], R],
) -> Callable[Concatenate[Pipeline, P], R]:
    """The run holds the store's run lock from start to finish (see `store/runlock.py`)."""

    @functools.wraps(method)
    def locked(pipeline: Pipeline, /, *args: P.args, **kwargs: P.kwargs) -> R:
        def waiting() -> None:
            pipeline.log.warning("another run of this store is under way; waiting for it to end")

        with run_lock(pipeline.engine, waiting):
            return method(pipeline, *args, **kwargs)

    return locked


class Pipeline:
    """Runs passes of the pipeline against one store."""

    def __init__(
        self,
        config: Config,
        mappings: Mappings,
        engine: Engine,
        progress: Progress | None = None,
        make_source: Callable[[ConnectorEntry, Config, bool], Source] | None = None,
        destinations: DestinationMappings | None = None,
    ) -> None:
        self.config = config
        self.mappings = mappings
        self.engine = engine
        self.progress = progress or SilentProgress()
        self.make_source = make_source or _make_source
        self.mapper = PageMapper(config.path, config.workers, config.store_url)
        self.destinations = destinations
        self.log = get_logger()

    def _start(self, kind: str) -> RunSummary:
        # Callers hold the run lock, so no other run is alive: a row still running belongs to
        # a run that was killed. Its committed work stays and this run finishes the rest.
        with transaction(self.engine) as bulk:
            bulk.connection.exec_driver_sql(
                bulk.sql(
                    "UPDATE sync_run SET status = 'interrupted', finished_at = ?, error = ? "
                    "WHERE status = 'running'"
                ),
                (format_timestamp(utcnow()), INTERRUPTED),
            )
        return start_run(self.engine, kind)

    def _finish(self, summary: RunSummary) -> RunSummary:
        return finish_run(self.engine, summary)

    @_one_run_at_a_time
    def run_once(
        self,
        only_sources: list[str] | None = None,
        full: bool = False,
        dry_run: bool = False,
        only_destinations: list[str] | None = None,
        push: bool = True,
    ) -> RunSummary:
        """Pull every enabled source (or only the named ones), unify, refresh profiles, then
        push to every enabled destination (or only the named ones)."""
        summary = self._start("dry-run" if dry_run else ("full" if full else "incremental"))
        with self._recorded(summary):
            for name, entry in self.config.sources.items():
                if (only_sources and name not in only_sources) or not entry.enabled:
                    continue
                try:
                    source = self.make_source(entry, self.config, dry_run)
                except (ConnectorError, ConfigError) as error:  # ConfigError: a secret unset
                    self._fail(summary, name, error)
                    continue
                try:
                    with summary.timed("pull"):
                        for stream in self.mappings.streams_of(name):
                            self._pull(
                                summary, name, stream, source, full, dry_run, entry.spec.local_reads
                            )
                # ConfigError: a secret the connector reads only when it first logs in.
                except (ConnectorError, ConfigError) as error:
                    self._fail(summary, name, error)
                finally:
                    source.close()
            if not dry_run:
                self._resolve(summary)
            self.mapper.close()
            if push:
                self._push(summary, only_destinations, dry_run)
        return self._finish(summary)

    @contextmanager
    def _recorded(self, summary: RunSummary) -> Iterator[None]:
        """On an unexpected error (the store went away), stop the mapping workers and leave
        the run recorded as failed before the error goes on: committed pages stay marked,
        so the next run finishes their identity and profile work."""
        try:
            yield
        except BaseException as error:
            self.mapper.close()
            summary.status = "failed"
            summary.errors.append(f"{type(error).__name__}: the run stopped")
            self.log.error(  # noqa: TRY400 - a traceback, like the error's text, may quote records
                "run stopped by an unexpected error", error_type=type(error).__name__
            )
            with suppress(Exception):
                self._finish(summary)
            raise

    def _push(self, summary: RunSummary, only: list[str] | None, dry_run: bool) -> None:
        if not any(entry.enabled for entry in self.config.destinations.values()):
            return
        if self.destinations is None:
            self.destinations = compile_destinations(self.config)
        self.progress.stage("push")
        with summary.timed("push"):
            report = run_push(
                self.config, self.engine, summary.run_id, only, dry_run, mappings=self.destinations
            )
        for name, value in report.counts.items():
            if value:
                summary.bump(f"push_{name}", value)
        if report.errors:
            summary.status = "failed"
            summary.errors.extend(report.errors)

    def _fail(self, summary: RunSummary, source: str, error: SyncdError) -> None:
        summary.status = "failed"
        summary.errors.append(f"{source}: {error}")
        self.log.error(
            "source failed", source=source, error=str(error), error_type=type(error).__name__
        )

    def _pull(
        self,
        summary: RunSummary,
        source_name: str,
        stream: str,
        source: Source,
        full: bool,
        dry_run: bool,
        local_reads: bool,
    ) -> None:
        compiled = self.mappings.for_stream(source_name, stream)
        with transaction(self.engine) as bulk:
            cursor = None if full else load_cursor(bulk, source_name, stream)
            stored = bulk.connection.exec_driver_sql(
                bulk.sql("SELECT 1 FROM source_record WHERE source = ? AND stream = ? LIMIT 1"),
                (source_name, stream),
            ).first()
        self.progress.stream_started(source_name, stream)
        written = WrittenIds(stream_was_empty=stored is None)
        pages = self.mapper.stage(compiled, source.read(stream, cursor), look_up=stored is not None)
        with PageGroups(self.engine, commit=not dry_run, grouped=local_reads) as groups:
            for page, staged in pages:
                writer = PageWriter(groups.page(), summary.run_id, written)
                counts = self._store(writer, compiled, page, staged)
                groups.page_done(staged.read)
                self._report_page(summary, source_name, stream, staged, counts)

    def _report_page(
        self,
        summary: RunSummary,
        source_name: str,
        stream: str,
        staged: StagedPage,
        counts: WriteCounts,
    ) -> None:
        summary.bump("records_read", staged.read)
        summary.bump("quarantined", len(staged.quarantined))
        for name, value in vars(counts).items():
            if value:
                summary.bump(name, value)
        self.progress.page_done(source_name, stream, staged.read, counts)
        self.log.info(
            "page stored",
            source=source_name,
            stream=stream,
            records=staged.read,
            quarantined=len(staged.quarantined),
            **vars(counts),
        )
        for location, reason, _ in staged.quarantined:
            self.log.warning(
                "record quarantined",
                source=source_name,
                stream=stream,
                location=location,
                reason=reason,
            )

    @staticmethod
    def _store(
        writer: PageWriter, compiled: CompiledStream, page: Page, staged: StagedPage
    ) -> WriteCounts:
        def remap(position: int) -> StagedRecord:
            (record,) = stage_page(compiled, Page([page.records[position]], None)).records
            return record

        source, stream = compiled.source, compiled.stream
        counts = writer.write_records(source, stream, staged.records, staged.unchanged, remap)
        counts.add(writer.write_events(source, stream, staged.events))
        counts.deleted += writer.delete_records(source, stream, page.deleted_ids)
        writer.quarantine(source, stream, staged.quarantined)
        writer.set_cursor(source, stream, page.cursor)
        return counts

    def _resolve(self, summary: RunSummary, everything: bool = False) -> None:
        """Identity and profiles in one transaction: a crash leaves the records marked to redo."""
        self.progress.stage("unify")
        with transaction(self.engine) as bulk:
            with summary.timed("unify"):
                now = refresh_time()
                workers = ProfilesInWorkers(
                    self.mapper, self.mappings.profile, bulk, summary.run_id, now
                )
                resolved = resolve_marked(
                    bulk, self.config.identity, everything, self.mapper.all_edges, workers
                )
                elsewhere = None if resolved is None else workers.resolved(resolved.profile_of)
                result = UnifyResult()
                if resolved is not None:
                    between = elsewhere.write_ready if elsewhere is not None else None
                    result = write_resolution(bulk, summary.run_id, resolved, between)
                # What the resolution read (a full pass's old profile of every record) is
                # not needed for the profiles: free it before them.
                del resolved
                follow_renames(bulk, result.renamed, result.survivors)
            with summary.timed("profiles"):
                event_profiles, events = pending_events(bulk)
                aged = leaving_windows(bulk, self.mappings.profile, now)
                self.progress.stage("profiles")
                touched = event_profiles | aged
                # The workers compute every profile the resolution touched.
                if elsewhere is not None:
                    touched -= result.touched
                else:
                    touched |= result.touched
                written, removed = refresh_profiles(
                    bulk,
                    self.mappings.profile,
                    touched,
                    result.removed,
                    summary.run_id,
                    elsewhere,
                    now,
                )
                clear_pending_events(bulk, events)
        summary.bump("merges", result.merges)
        summary.bump("splits", result.splits)
        summary.bump("merges_refused", result.refusals)
        summary.bump("profiles_written", written)
        summary.bump("profiles_removed", removed)
        self.log.info(
            "identity resolved",
            nodes=result.nodes,
            merges=result.merges,
            splits=result.splits,
            refused=result.refusals,
            profiles_written=written,
            profiles_removed=removed,
        )

    @_one_run_at_a_time
    def replay_quarantine(self) -> RunSummary:
        """Map quarantined records again with today's mappings; the ones that pass are stored.

        Fix the mapping (or the config) that rejected them first; a record that fails again
        stays in quarantine with its original reason.
        """
        summary = self._start("replay")
        with self._recorded(summary):
            with transaction(self.engine) as bulk:
                rows = bulk.connection.exec_driver_sql(
                    "SELECT id, run_id, source, stream, location, payload FROM quarantine "
                    "WHERE replayed_at IS NULL ORDER BY id"
                ).all()
                writer = PageWriter(bulk, summary.run_id)
                replayed = []
                for key, run_id, source, stream, location, payload in rows:
                    if (source, stream) not in self.mappings.streams:
                        continue
                    compiled = self.mappings.for_stream(source, stream)
                    raw = RawRecord(Bulk.decode(payload), location)
                    staged = stage_page(compiled, Page([raw], None))
                    if staged.quarantined:
                        continue
                    if _superseded(bulk, staged.records, run_id):
                        # A later pull stored a newer version (or the deletion) of this record:
                        # the quarantined version is history, not something to restore.
                        replayed.append(key)
                        continue
                    writer.write_records(source, stream, staged.records)
                    writer.write_events(source, stream, staged.events)
                    replayed.append(key)
                bulk.execute_in(
                    "UPDATE quarantine SET replayed_at = ? WHERE id IN ({in})",
                    replayed,
                    before=(format_timestamp(utcnow()),),
                )
            summary.bump("replayed", len(replayed))
            summary.bump("still_quarantined", len(rows) - len(replayed))
            self._resolve(summary)
        return self._finish(summary)

    @_one_run_at_a_time
    def rebuild(self) -> RunSummary:
        """Map every stored raw record again with today's mappings, then resolve everything."""
        summary = self._start("rebuild")
        with self._recorded(summary), transaction(self.engine) as bulk:
            self._rebuild_in(bulk, summary, refresh_time())
        return self._finish(summary)

    def _rebuild_in(self, bulk: Bulk, summary: RunSummary, now: str) -> None:
        """Re-map every stored record, resolve everything, and compute every profile at
        `now`, which becomes the time the profiles are as of."""
        writer = PageWriter(bulk, summary.run_id)
        for (source, stream), compiled in self.mappings.streams.items():
            if compiled.is_events:
                continue
            rows = bulk.connection.exec_driver_sql(
                bulk.sql(
                    "SELECT external_id, payload FROM source_record "
                    "WHERE source = ? AND stream = ? "
                    # Deleted upstream stays out; deleted by a mapping expression is re-mapped.
                    f"AND node_kind = 'record' AND content_hash <> '{DELETED_HASH}'"
                ),
                (source, stream),
            ).all()
            page = Page(
                [
                    RawRecord(Bulk.decode(payload), f"{source}/{stream}/{external_id}")
                    for external_id, payload in rows
                ],
                None,
            )
            staged = stage_page(compiled, page)
            counts = writer.write_records(source, stream, staged.records)
            writer.quarantine(source, stream, staged.quarantined)
            summary.bump("records_remapped", counts.changed)
        result = unify(bulk, self.config.identity, summary.run_id, everything=True)
        follow_renames(bulk, result.renamed, result.survivors)
        written, removed = refresh_profiles(
            bulk, self.mappings.profile, result.touched, result.removed, summary.run_id, now=now
        )
        mark_profiles_as_of(bulk, now)
        summary.bump("profiles_written", written)
        summary.bump("profiles_removed", removed)

    @_one_run_at_a_time
    def verify(self, most: int = 20) -> list[str]:
        """Rebuild inside a transaction, compare with the stored state, roll back.

        Returns the first `most` differences, naming the traits that differ (never their
        values: personal data); none means the incremental state equals a rebuild.
        """
        summary = RunSummary(new_run_id())
        with self.engine.connect() as connection:
            transaction_ = connection.begin()
            bulk = Bulk(connection)
            before = _snapshot(bulk)
            # At the time the stored profiles were computed at: an event that has left a
            # window of days since is not a difference.
            self._rebuild_in(bulk, summary, profiles_as_of(bulk) or refresh_time())
            after = _snapshot(bulk)
            # The traits of only as many changed profiles as can be listed: after an edited
            # mapping that may be every profile, twice over.
            changed = sorted(
                profile
                for profile in before[1].keys() & after[1].keys()
                if before[1][profile] != after[1][profile]
            )[:most]
            rebuilt = _traits(bulk, changed)
            transaction_.rollback()
            stored = _traits(bulk, changed)
        return _differences(before, after, stored, rebuilt, most)


def _superseded(bulk: Bulk, records: list[StagedRecord], quarantined_in: str) -> bool:
    """Whether a run after the one that quarantined these records stored any of them."""
    later = bulk.select_in(
        "SELECT 1 FROM source_record WHERE id IN ({in}) AND last_run > ?",
        [record.id for record in records],
        after=(quarantined_in,),
    )
    return any(True for _ in later)


class ProfilesInWorkers:
    """The profiles of a large resolution, computed by the mapping workers while the run goes
    on: those of lone nodes as soon as the resolution knows them (`Settling`), the others
    once it is found.

    Every record a resolution reads was committed before it began, so the workers, reading
    beside the run's transaction, see what it sees. The run writes their rows as they come:
    while it resolves, between slices of its write-back, and the rest at the refresh.
    """

    def __init__(
        self, mapper: PageMapper, rules: ProfileMapping, bulk: Bulk, run_id: str, now: str
    ) -> None:
        self._mapper = mapper
        self._rules = rules
        self._bulk = bulk
        self._run_id = run_id
        self._now = now
        self._grouped: AbstractSet[int] | None = None
        self._rows: RowsFromElsewhere | None = None

    def lone(self, nodes: Sequence[int], grouped: AbstractSet[int]) -> None:
        if len(nodes) < PARALLEL_PROFILE_NODES:
            return
        computed = self._mapper.lone_profile_rows(self._rules, nodes, self._run_id, self._now)
        if computed is not None:
            self._rows = RowsFromElsewhere(self._bulk, computed)
            self._grouped = grouped

    def tick(self) -> None:
        if self._rows is not None:
            self._rows.write_ready()

    def resolved(self, profile_of: Mapping[int, str]) -> RowsFromElsewhere | None:
        """Start on the profiles not started yet; what writes all of their rows, or None
        when the run computes them itself (a small resolution)."""
        grouped, self._grouped = self._grouped, None
        pairs: Iterable[tuple[int, str]] = profile_of.items()
        if grouped is not None:
            pairs = ((node, profile) for node, profile in pairs if node in grouped)
        elif len(profile_of) < PARALLEL_PROFILE_NODES:
            return None
        computed = self._mapper.profile_rows(self._rules, pairs, self._run_id, self._now)
        if computed is None:
            # The workers that took the lone profiles would take these too.
            assert self._rows is None, "the workers read the store, or they took nothing"
            return None
        if self._rows is None:
            self._rows = RowsFromElsewhere(self._bulk, computed)
        else:
            self._rows.add(computed)
        return self._rows


Snapshot = tuple[dict[int, str | None], dict[str, str]]


def _snapshot(bulk: Bulk) -> Snapshot:
    assignment = {
        int(row[0]): row[1]
        for row in bulk.connection.exec_driver_sql(
            "SELECT sr.id, rp.profile_id FROM source_record sr "
            f"LEFT JOIN record_profile rp ON rp.record_id = sr.id WHERE sr.deleted = {bulk.false}"
        )
    }
    traits = {
        row[0]: row[1]
        for row in bulk.connection.exec_driver_sql("SELECT id, traits_hash FROM profile")
    }
    return assignment, traits


def _traits(bulk: Bulk, profiles: Sequence[str]) -> dict[str, dict[str, object]]:
    return {
        profile: Bulk.decode(traits)
        for profile, traits in bulk.select_in(
            "SELECT id, traits FROM profile WHERE id IN ({in})", profiles
        )
    }


def _differences(
    before: Snapshot,
    after: Snapshot,
    stored: Mapping[str, Mapping[str, object]],
    rebuilt: Mapping[str, Mapping[str, object]],
    most: int = 20,
) -> list[str]:
    """What differs, with the names of the traits that differ in the profiles given in both
    `stored` and `rebuilt`."""
    found = []
    for node in sorted(set(before[0]) | set(after[0])):
        if before[0].get(node) != after[0].get(node):
            found.append(
                f"record {node}: profile {before[0].get(node)} != rebuilt {after[0].get(node)}"
            )
    for profile in sorted(set(before[1]) | set(after[1])):
        if before[1].get(profile) == after[1].get(profile):
            continue
        if profile not in after[1]:
            found.append(f"profile {profile}: in the store, not made by the rebuild")
            continue
        if profile not in before[1]:
            found.append(f"profile {profile}: made by the rebuild, not in the store")
            continue
        old, new = stored.get(profile, {}), rebuilt.get(profile, {})
        # Compared as JSON, as the traits hash is: 1 and true are two values. Names only:
        # the values are personal data.
        names = sorted(
            name
            for name in old.keys() | new.keys()
            if (name in old, canonical_json(old.get(name)))
            != (name in new, canonical_json(new.get(name)))
        )
        found.append(
            f"profile {profile}: traits differ from the rebuild"
            + (f": {', '.join(names)}" if names else "")
        )
    return found[:most] + ([f"... and {len(found) - most} more"] if len(found) > most else [])


def _make_source(entry: ConnectorEntry, config: Config, read_only: bool) -> Source:
    factory = entry.spec.make_source
    assert factory is not None  # config validation refuses a connector without one
    return factory(
        ConnectorContext(entry.name, entry.options, config.base_dir, config.store_url, read_only)
    )
