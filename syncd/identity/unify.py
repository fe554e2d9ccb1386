"""The store side of identity resolution: find what changed, resolve its closure, write it back.

Only the closure of the changed records is resolved: every node reachable from them through
shared identifiers, plus the other records of their old profiles (a record that lost the
identifier joining two profiles must be able to split them). Because resolution is a pure
function of the nodes and edges it is given, and a closure has no edge leaving it, the result
equals a rebuild of the whole store; `syncd rebuild --verify` checks exactly that.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain

from sqlmodel import SQLModel

from syncd.config import IdentityConfig
from syncd.identity.resolve import Edge, EdgesByKind, Resolution, Settling, resolve
from syncd.mapping.transforms import format_timestamp
from syncd.store.db import Bulk
from syncd.store.graph import identifiers_of, kinds_and_values
from syncd.store.marks import mark_resolved, resolved_generation
from syncd.store.tables import MergeLog, RecordProfile
from syncd.timeutil import utcnow

LOG_BATCH = 20_000


def _index_names(table: type[SQLModel]) -> tuple[str, ...]:
    return tuple(sorted(str(index.name) for index in table.__table__.indexes))  # type: ignore[attr-defined]


MERGE_LOG_INDEXES = _index_names(MergeLog)
RECORD_PROFILE_INDEXES = _index_names(RecordProfile)
FULL_RESOLVE_SHARE = 0.3
"""Above this share of changed nodes, resolve the whole store in one streaming pass."""


@dataclass
class UnifyResult:
    """What a resolution changed: profiles to (re)compute, profiles gone, and log counts."""

    touched: set[str] = field(default_factory=set)
    removed: set[str] = field(default_factory=set)
    renamed: dict[str, str] = field(default_factory=dict)
    """Profiles whose records all went to one other profile id: old id to new."""
    survivors: set[str] = field(default_factory=set)
    """The new ids in `renamed` that were profiles before (merged into, not named anew)."""
    profile_of: Mapping[int, str] = field(default_factory=dict)
    """The profile of every node resolved: the store's live nodes on a full pass."""
    merges: int = 0
    splits: int = 0
    refusals: int = 0
    nodes: int = 0


class Marked:
    """The records waiting for resolution (`syncd.store.marks`): sorted ids in a flat array
    (8 bytes each, where a dict would take five times as much), which of them were deleted,
    and the generation they wait for."""

    def __init__(self, ids: Iterable[int], deleted: set[int], generation: int) -> None:
        self.ids = array("q", sorted(ids))
        self.deleted = deleted
        self.generation = generation

    @classmethod
    def read(cls, bulk: Bulk) -> Marked:
        resolved = resolved_generation(bulk)
        ids = array("q")
        deleted: set[int] = set()
        for key, is_deleted in bulk.stream(
            "SELECT id, deleted FROM source_record WHERE unify_generation > ?", (resolved,)
        ):
            ids.append(int(key))
            if is_deleted:
                deleted.add(int(key))
        return cls(ids, deleted, resolved + 1)

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, node: int) -> bool:
        at = bisect_left(self.ids, node)
        return at < len(self.ids) and self.ids[at] == node


class KindOrder:
    """Identifier kinds ranked by priority; ranks index the limits the resolver checks."""

    def __init__(self, identity: IdentityConfig) -> None:
        ranked = sorted(identity.kinds.items(), key=lambda item: (item[1].priority, item[0]))
        self.names = [name for name, _ in ranked]
        self.limits = [spec.limit for _, spec in ranked]
        self.rank = {name: index for index, name in enumerate(self.names)}


IdRange = tuple[int | None, int | None]
"""Ids from the first (included) to the second (excluded); None leaves that end open."""


def id_ranges(parts: int) -> list[IdRange]:
    """`parts` ranges of the signed 64-bit ids, in order: ids are hashes, so each range holds
    about as many of them."""
    bounds = [-(1 << 63) + (part << 64) // parts for part in range(1, parts)]
    return list(zip([None, *bounds], [*bounds, None], strict=True))


def all_edges(bulk: Bulk, kinds: Sequence[str], identifiers: IdRange = (None, None)) -> EdgesByKind:
    """Every edge of these kinds (in priority order) in resolution order, with memory for
    the edges alone (16 bytes each); only those of the `identifiers` range, which the edges
    of the ranges after it extend in order (`EdgesByKind.extend`).

    Identifiers and edges are both read in identifier order straight off their keys and
    merged here, so the database never sorts; each edge goes to its kind's columns.
    """
    rank_of = {kind: rank for rank, kind in enumerate(kinds)}
    edges = EdgesByKind(len(kinds))
    of_identifiers, bounds = _in_range("id", identifiers)
    of_edges, _ = _in_range("identifier_id", identifiers)
    identifier_kinds = bulk.stream(
        f"SELECT id, kind FROM identifier {of_identifiers} ORDER BY id", bounds
    )
    current, rank = None, None
    for identifier, node in bulk.stream(
        f"SELECT identifier_id, record_id FROM record_identifier "
        f"{of_edges} ORDER BY identifier_id, record_id",
        bounds,
    ):
        while current != identifier:
            current, kind = next(identifier_kinds)
            rank = rank_of.get(kind)
        if rank is not None:
            identifiers_of_kind, nodes = edges.columns[rank]
            identifiers_of_kind.append(identifier)
            nodes.append(node)
    identifier_kinds.close()
    return edges


def _in_range(column: str, identifiers: IdRange) -> tuple[str, tuple[int, ...]]:
    """A WHERE clause keeping `column` in a range, and its parameters."""
    low, high = identifiers
    conditions = [] if low is None else [f"{column} >= ?"]
    conditions += [] if high is None else [f"{column} < ?"]
    bounds = tuple(bound for bound in identifiers if bound is not None)
    return ("WHERE " + " AND ".join(conditions) if conditions else ""), bounds


EdgesElsewhere = Callable[[Sequence[str]], Callable[[], EdgesByKind] | None]
"""Starts `all_edges` of these kinds in another process, reading beside the transaction,
and gives what waits for its result; or gives None when it cannot."""


def _edges_of(bulk: Bulk, order: KindOrder, nodes: set[int]) -> list[Edge]:
    """The edges of some nodes, in resolution order; kinds no longer configured are ignored."""
    carried = identifiers_of(bulk, nodes)
    kinds = {
        key: kind for key, (kind, _) in kinds_and_values(bulk, chain(*carried.values())).items()
    }
    edges = []
    for node, identifiers in carried.items():
        for identifier in identifiers:
            rank = order.rank.get(kinds.get(identifier, ""))
            if rank is not None:
                edges.append((rank, identifier, node))
    return sorted(edges)


def _closure(bulk: Bulk, seeds: set[int]) -> set[int]:
    """Every live node reachable from `seeds` through shared identifiers."""
    nodes: set[int] = set()
    identifiers: set[int] = set()
    frontier = set(seeds)
    while frontier:
        nodes |= frontier
        found = set(chain(*identifiers_of(bulk, frontier).values()))
        new_identifiers = found - identifiers
        identifiers |= new_identifiers
        reached = {
            int(row[0])
            for row in bulk.select_in(
                "SELECT DISTINCT record_id FROM record_identifier WHERE identifier_id IN ({in})",
                sorted(new_identifiers),
            )
        }
        frontier = reached - nodes
    return nodes


@dataclass
class Resolved:
    """A resolution not yet written: what it read and what it found."""

    dirty: Marked
    old: dict[int, str]
    resolution: Resolution
    full: bool

    @property
    def profile_of(self) -> Mapping[int, str]:
        return self.resolution.profile_of


def unify(
    bulk: Bulk, identity: IdentityConfig, run_id: str, everything: bool = False
) -> UnifyResult:
    """Resolve the records marked as changed (or all of them) and write profiles ids and logs."""
    resolved = resolve_marked(bulk, identity, everything)
    return UnifyResult() if resolved is None else write_resolution(bulk, run_id, resolved)


def resolve_marked(
    bulk: Bulk,
    identity: IdentityConfig,
    everything: bool = False,
    edges_elsewhere: EdgesElsewhere | None = None,
    settling: Settling | None = None,
) -> Resolved | None:
    """Resolve the records marked as changed (or all of them); None when none is marked.

    `edges_elsewhere` reads every edge in another process while this one reads the nodes, on
    a pass over the whole store: only where this transaction has written nothing yet.
    `settling` is told what the resolution settles early (`resolve`).
    """
    order = KindOrder(identity)
    dirty = Marked.read(bulk)
    if not dirty and not everything:
        return None
    live_count = int(
        bulk.connection.exec_driver_sql(
            f"SELECT COUNT(*) FROM source_record WHERE deleted = {bulk.false}"
        ).scalar_one()
    )
    full = everything or len(dirty) > FULL_RESOLVE_SHARE * max(live_count, 1)
    false = bulk.false

    old: dict[int, str] = {}
    if full:
        edges_later = edges_elsewhere(order.names) if edges_elsewhere is not None else None
        for node, profile in bulk.stream("SELECT record_id, profile_id FROM record_profile"):
            old[int(node)] = profile
        # One pass over the records for the nodes and which of them are links. In key order,
        # so that the profile map comes out as the write-back takes it; sorted by the database
        # (on SQLite, `+id` keeps it from walking the key's index instead, which would read
        # the rows in random order).
        listed: array[int] = array("q")
        links: set[int] = set()
        for key, kind in bulk.stream(
            f"SELECT id, node_kind FROM source_record WHERE deleted = {false} "
            f"ORDER BY {'+id' if bulk.dialect == 'sqlite' else 'id'}"
        ):
            listed.append(int(key))
            if kind == "link":
                links.add(int(key))
        nodes: Sequence[int] = listed
        edges = edges_later() if edges_later is not None else all_edges(bulk, order.names)
    else:
        for node, profile in bulk.select_in(
            "SELECT record_id, profile_id FROM record_profile WHERE record_id IN ({in})",
            dirty.ids,
        ):
            old[int(node)] = profile
        seeds = {node for node in dirty.ids if node not in dirty.deleted}
        for node, profile in bulk.select_in(
            "SELECT rp.record_id, rp.profile_id FROM record_profile rp "
            "JOIN source_record sr ON sr.id = rp.record_id "
            f"WHERE rp.profile_id IN ({{in}}) AND sr.deleted = {false}",
            sorted(set(old.values())),
        ):
            old[int(node)] = profile
            seeds.add(int(node))
        closure = _closure(bulk, seeds)
        live = {}
        for node, deleted, kind, profile in bulk.select_in(
            "SELECT sr.id, sr.deleted, sr.node_kind, rp.profile_id FROM source_record sr "
            "LEFT JOIN record_profile rp ON rp.record_id = sr.id WHERE sr.id IN ({in})",
            sorted(closure),
        ):
            if profile is not None:
                old[int(node)] = profile
            if not deleted:
                live[int(node)] = kind
        nodes = sorted(live)
        links = {node for node, kind in live.items() if kind == "link"}
        edges = EdgesByKind.of(_edges_of(bulk, order, set(nodes)), len(order.names))

    resolution = resolve(
        nodes,
        links,
        edges,
        order.limits,
        order.names,
        lambda part: _edges_of(bulk, order, part),
        settling,
    )
    return Resolved(dirty, old, resolution, full)


def write_resolution(
    bulk: Bulk, run_id: str, resolved: Resolved, between: Callable[[], None] | None = None
) -> UnifyResult:
    """Write a resolution's profile ids and merge log; `between` runs between slices of the
    write-back, for other work of the transaction to go on meanwhile."""
    dirty, old, resolution = resolved.dirty, resolved.old, resolved.resolution
    new = resolution.profile_of
    result = UnifyResult(nodes=len(new), profile_of=new)

    # Only nodes whose profile changed are written: none of a rebuild that changes nothing.
    # The resolution lists its nodes in key order (but for a few resolved again under the
    # limits), so a first load's million rows append to the table's B-tree.
    def moved() -> Iterator[tuple[int, str]]:
        return ((node, profile) for node, profile in new.items() if old.get(node) != profile)

    with bulk.indexes_set_aside(
        "record_profile",
        _when_outnumbered(
            bulk, "record_profile", RECORD_PROFILE_INDEXES, lambda: sum(1 for _ in moved())
        ),
    ):
        bulk.upsert(
            "record_profile", ("record_id", "profile_id"), moved(), ("record_id",), between=between
        )
    # A node resolved before and gone from the resolution now is deleted: it leaves its profile.
    bulk.execute_in(
        "DELETE FROM record_profile WHERE record_id IN ({in})",
        sorted(node for node in old if node not in new),
    )
    mark_resolved(bulk, dirty.generation)

    old_members: dict[str, set[str]] = defaultdict(set)
    for node, profile in old.items():
        old_members[profile].add(new.get(node, ""))
    # A closure is small, except on a full pass that recomputes everything anyway: recompute
    # every profile in it rather than reason about which traits a move could have changed.
    result.touched = set(new.values())
    result.removed = {profile for profile in old_members if profile not in result.touched}

    # A first load logs a merge for most records: then the log's indexes are built once,
    # after its rows, instead of taking each row at a random place (on SQLite).
    def logs() -> int:
        return sum(1 for a, b, _ in resolution.unions if not _were_one(old, a, b))

    with bulk.indexes_set_aside(
        "merge_log", _when_outnumbered(bulk, "merge_log", MERGE_LOG_INDEXES, logs)
    ):
        _log(bulk, run_id, resolved, old_members, result, between)
    return result


def _when_outnumbered(
    bulk: Bulk, table: str, indexes: Sequence[str], count: Callable[[], int]
) -> Sequence[str]:
    """The indexes to set aside while `count()` rows are written to `table`: all of them when
    they are more than the table holds (on SQLite, where building an index again is cheaper
    than taking each row at a random place of it), else none. PostgreSQL never counts."""
    if bulk.dialect != "sqlite":
        return ()
    rows = count()
    return indexes if bulk.count_up_to(table, rows) < rows else ()


def _were_one(old: Mapping[int, str], a: int, b: int) -> bool:
    """Whether two nodes were one profile before this resolution: a union of them is no merge
    to log, and a refusal between them parts them."""
    before = old.get(a)
    return before is not None and before == old.get(b)


def _log(
    bulk: Bulk,
    run_id: str,
    resolved: Resolved,
    old_members: Mapping[str, set[str]],
    result: UnifyResult,
    between: Callable[[], None] | None,
) -> None:
    """Log the merges, refusals, splits, renames and removals of a resolution, counted in
    `result` (whose `renamed` and `survivors` it fills)."""
    dirty, old, resolution = resolved.dirty, resolved.old, resolved.resolution
    new = resolution.profile_of
    at = format_timestamp(utcnow())
    insert = bulk.sql(
        "INSERT INTO merge_log (run_id, at, action, profile_id, to_profile_id, "
        "identifier_id, record_a, record_b, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )
    logs: list[tuple[object, ...]] = []
    for a, b, identifier in resolution.unions:
        if _were_one(old, a, b):
            continue
        reason = "records share this identifier"
        logs.append((run_id, at, "merge", new[a], None, identifier, a, b, reason))
        result.merges += 1
        if len(logs) >= LOG_BATCH:
            # A first load logs a merge per joined record: write them as they come.
            bulk.executemany(insert, logs, between)
            logs = []
    for refusal in resolution.refusals:
        # A refusal between nodes that did not change is logged once, when it parts them
        # (a change elsewhere in their profile made it); later runs find it again, unlogged.
        a, b = refusal.node_a, refusal.node_b
        if a in dirty or b in dirty or _were_one(old, a, b):
            logs.append(
                (
                    run_id,
                    at,
                    "refused",
                    new[a],
                    new[b],
                    refusal.identifier_id,
                    a,
                    b,
                    refusal.reason,
                )
            )
            result.refusals += 1
    for profile, successors in old_members.items():
        live_successors = sorted(s for s in successors if s)
        if len(live_successors) > 1:
            result.splits += 1
            reason = (
                "its records no longer join (an identifier they shared is gone, or a merge is "
                "now refused: see the refused rows); now " + ", ".join(live_successors)
            )
            logs.extend(
                (run_id, at, "split", profile, successor, None, None, None, reason)
                for successor in live_successors
            )
        elif live_successors and live_successors[0] != profile:
            result.renamed[profile] = live_successors[0]
            if live_successors[0] in old_members:
                result.survivors.add(live_successors[0])
            reason = f"merged or re-anchored into {live_successors[0]}"
            logs.append(
                (run_id, at, "renamed", profile, live_successors[0], None, None, None, reason)
            )
        elif not live_successors:
            logs.append(
                (
                    run_id,
                    at,
                    "removed",
                    profile,
                    None,
                    None,
                    None,
                    None,
                    "all its records were deleted",
                )
            )
    bulk.executemany(insert, logs)
