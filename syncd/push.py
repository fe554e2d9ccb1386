"""Drain the plan through the destinations and record every outcome in the push ledger.

For each enabled destination and each of its mappings, the planner yields chunks of desired
states that differ from the ledger; they go out in batches of the destination's
`max_batch_size`, and each batch's outcomes are committed to the ledger before the next
batch, so a crash loses at most one batch's record (and re-sending it is an idempotent
upsert). A rejected record never blocks the rest of its batch. A ConnectorError fails that
destination for this run: its batch is recorded as RETRY with the error, and the other
destinations go on.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import Engine

from syncd.config import Config, ConnectorEntry
from syncd.connector import ConnectorContext, Destination, Outcome, PushItem, PushResult
from syncd.errors import ConfigError, ConnectorError, SyncdError
from syncd.log import get_logger
from syncd.mapping.destinations import CompiledDestination, DestinationMappings
from syncd.mapping.destinations import compile_destinations as _compile
from syncd.mapping.transforms import format_timestamp
from syncd.plan.ledger import Recorded, record_outcomes
from syncd.plan.planner import PlannedPush, plan_chunks
from syncd.store.db import transaction
from syncd.timeutil import utcnow

COUNTS = ("planned", "pushed_ok", "retry", "rejected", "skipped_no_key", "unchanged")
DestinationFactory = Callable[[ConnectorEntry, Config], Destination]
_COUNTED = {Outcome.OK: "pushed_ok", Outcome.RETRY: "retry", Outcome.REJECTED: "rejected"}


@dataclass
class PushReport:
    """What a push pass did: counts over every destination, and the destinations that failed."""

    counts: Counter[str] = field(default_factory=lambda: Counter(dict.fromkeys(COUNTS, 0)))
    errors: list[str] = field(default_factory=list)


class _DestinationFailed(Exception):
    """Stops the pass over one destination after a ConnectorError (already recorded)."""


def _make_destination(entry: ConnectorEntry, config: Config) -> Destination:
    factory = entry.spec.make_destination
    assert factory is not None  # config validation refuses a connector without one
    return factory(ConnectorContext(entry.name, entry.options, config.base_dir))


class _Pusher:
    """Pushes the mappings of one destination, opening its connection on the first batch."""

    def __init__(
        self,
        engine: Engine,
        entry: ConnectorEntry,
        config: Config,
        make: DestinationFactory,
        run_id: str,
        report: PushReport,
    ) -> None:
        self.engine = engine
        self.entry = entry
        self.config = config
        self.make = make
        self.run_id = run_id
        self.report = report
        self.destination: Destination | None = None
        self.log = get_logger().bind(destination=entry.name)

    def run(self, mappings: Sequence[CompiledDestination], dry_run: bool) -> None:
        try:
            for mapping in mappings:
                counts: Counter[str] = Counter()
                # Planned pushes wait for a full batch across planner chunks: a chunk boundary
                # must not cost a short request against the destination's rate limit.
                pending: list[PlannedPush] = []
                try:
                    for chunk in plan_chunks(self.engine, mapping):
                        counts.update(chunk.counts)
                        if dry_run or not chunk.items:
                            continue
                        pending.extend(chunk.items)
                        size = max(1, self._open().max_batch_size)
                        full = len(pending) - len(pending) % size
                        self._drain(mapping.target, pending[:full], counts)
                        pending = pending[full:]
                    self._drain(mapping.target, pending, counts)
                finally:
                    self.report.counts.update(counts)
                    self.log.info("target pushed", target=mapping.target, **counts)
        except _DestinationFailed:
            pass
        finally:
            if self.destination is not None:
                self.destination.close()

    def _open(self) -> Destination:
        if self.destination is None:
            try:
                self.destination = self.make(self.entry, self.config)
            except (ConnectorError, ConfigError) as error:  # ConfigError: a secret unset
                self._fail(error)
        assert self.destination is not None
        return self.destination

    def _fail(self, error: SyncdError) -> None:
        self.report.errors.append(f"{self.entry.name}: {error}")
        self.report.counts["destinations_failed"] += 1
        self.log.error("destination failed", error=str(error), error_type=type(error).__name__)
        raise _DestinationFailed from error

    def _drain(self, target: str, items: Sequence[PlannedPush], counts: Counter[str]) -> None:
        if not items:
            return
        destination = self._open()
        size = max(1, destination.max_batch_size)
        for start in range(0, len(items), size):
            batch = items[start : start + size]
            pushes = [
                PushItem(p.state.profile_id, p.state.match_value, p.state.fields) for p in batch
            ]
            failure: ConnectorError | ConfigError | None = None
            try:
                results = destination.push(target, pushes)
            # ConfigError: a secret the connector reads only when it first logs in.
            except (ConnectorError, ConfigError) as error:
                failure = error
                results = [PushResult(p.key, Outcome.RETRY, reason=str(error)) for p in pushes]
            self._record(target, batch, results, counts)
            if failure is not None:
                self._fail(failure)

    def _record(
        self,
        target: str,
        batch: Sequence[PlannedPush],
        results: Sequence[PushResult],
        counts: Counter[str],
    ) -> None:
        by_key = {result.key: result for result in results}
        recorded = []
        for planned in batch:
            profile_id = planned.state.profile_id
            result = by_key.get(profile_id) or PushResult(
                profile_id, Outcome.RETRY, reason="the destination gave no result for it"
            )
            counts[_COUNTED[result.outcome]] += 1
            if result.outcome is Outcome.REJECTED:
                self.log.warning(
                    "record rejected", target=target, profile_id=profile_id, reason=result.reason
                )
            recorded.append(
                Recorded(
                    planned.state,
                    result.outcome,
                    result.external_id,
                    None if result.outcome is Outcome.OK else result.reason,
                )
            )
        with transaction(self.engine) as bulk:
            record_outcomes(
                bulk,
                self.entry.name,
                target,
                recorded,
                self.run_id,
                format_timestamp(utcnow()),
            )


def run_push(
    config: Config,
    engine: Engine,
    run_id: str,
    only: list[str] | None = None,
    dry_run: bool = False,
    mappings: DestinationMappings | None = None,
    make_destination: DestinationFactory | None = None,
) -> PushReport:
    """Push every enabled destination (or only the named ones); see `push_destinations`."""
    compiled = mappings if mappings is not None else _compile(config)
    report = PushReport()
    for name, entry in config.destinations.items():
        if (only and name not in only) or not entry.enabled:
            continue
        pusher = _Pusher(
            engine, entry, config, make_destination or _make_destination, run_id, report
        )
        pusher.run(compiled.of(name), dry_run)
    return report


def push_destinations(
    config: Config,
    engine: Engine,
    run_id: str,
    only: list[str] | None = None,
    dry_run: bool = False,
) -> dict[str, int]:
    """Push what changed since the ledger's last acknowledged state to every destination.

    Returns counts: planned, pushed_ok, retry, rejected, skipped_no_key, unchanged (and
    skipped_invalid, not_selected, left, destinations_failed when they occur). With `dry_run`
    nothing is sent and the ledger is left alone: `planned` says what would go.
    """
    return dict(run_push(config, engine, run_id, only, dry_run).counts)


def preview(
    config: Config, engine: Engine, mappings: DestinationMappings | None = None
) -> list[PlannedPush]:
    """Every desired state the next push would send, without sending or recording anything."""
    compiled = mappings if mappings is not None else _compile(config)
    planned: list[PlannedPush] = []
    for name, entry in config.destinations.items():
        if not entry.enabled:
            continue
        for mapping in compiled.of(name):
            for chunk in plan_chunks(engine, mapping):
                planned.extend(chunk.items)
    return planned


__all__ = ["COUNTS", "PushReport", "preview", "push_destinations", "run_push"]
