"""Identity resolution: which records (nodes) form one profile. A pure function of its input.

Nodes are source records and links (identifiers an event saw together); an edge says a node
carries an identifier. Edges are taken in one global order, (kind priority, identifier id,
node id), never in arrival order, so the same set of records always gives the same profiles
and the same profile ids, and resolving a closed part of the graph (every node reachable from
the changed ones) gives exactly what resolving the whole store would.

Two passes keep memory flat on large stores:
1. Unconstrained union-find over all edges: the connected components.
2. Components that would break a per-kind limit (two user ids, six emails) are resolved
   again, greedily in the same order: a merge that would push a kind over its limit is
   refused and reported. Other components are profiles as they are.

A profile's id derives from its smallest record node id (links only when it has no record),
so it survives every change that does not remove that record or merge it with a smaller one.
"""

from __future__ import annotations

import re
from array import array
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Protocol

Edge = tuple[int, int, int]
"""(kind index, identifier id, node id); kind indexes are ranked by priority."""


class EdgesByKind:
    """Edges in resolution order as flat columns: for each kind index, in priority order, the
    identifier ids and node ids of its edges, sorted by (identifier, node). 16 bytes an edge
    and no tuple per edge: a million-record store has millions of edges.

    Edges read in parts (ranges of identifiers, in order) are joined without a copy: each
    kind's columns are then the parts' columns one after the other (`chunks`)."""

    def __init__(self, kinds: int) -> None:
        self.columns = [(array("q"), array("q")) for _ in range(kinds)]
        self._after: list[EdgesByKind] = []

    @classmethod
    def of(cls, edges: Iterable[Edge], kinds: int) -> EdgesByKind:
        """From edges sorted by (kind index, identifier id, node id)."""
        found = cls(kinds)
        for kind, identifier, node in edges:
            identifiers, nodes = found.columns[kind]
            identifiers.append(identifier)
            nodes.append(node)
        return found

    def extend(self, after: EdgesByKind) -> None:
        """Add the edges of identifiers that all come after these ones."""
        self._after.append(after)

    def chunks(self) -> list[list[tuple[array[int], array[int]]]]:
        """For each kind, in priority order, its columns part after part."""
        parts = [self, *self._after]
        return [[part.columns[kind] for part in parts] for kind in range(len(self.columns))]

    def clear(self) -> None:
        self.columns.clear()
        self._after.clear()


@dataclass(frozen=True)
class Refusal:
    """A merge that was not made: which nodes the identifier would have joined, and why."""

    node_a: int
    node_b: int
    identifier_id: int
    reason: str


class Unions:
    """The merges made, as (node a, node b, identifier) triples, stored in flat arrays."""

    def __init__(self) -> None:
        self._columns = (array("q"), array("q"), array("q"))

    def append(self, union: tuple[int, int, int]) -> None:
        for column, value in zip(self._columns, union, strict=True):
            column.append(value)

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        return zip(*self._columns, strict=True)

    def __len__(self) -> int:
        return len(self._columns[0])


@dataclass
class Resolution:
    """Each node's profile id, the merges made (spanning edges) and the merges refused."""

    profile_of: dict[int, str] = field(default_factory=dict)
    unions: Unions = field(default_factory=Unions)
    refusals: list[Refusal] = field(default_factory=list)


def profile_id_for(anchor: int) -> str:
    """The profile id of a group whose smallest record node id is `anchor`."""
    return f"p_{anchor & 0xFFFFFFFFFFFFFFFF:016x}"


PROFILE_ID = re.compile(r"p_[0-9a-f]{16}")
"""What `profile_id_for` writes (to tell a profile id from an identifier such as p_x@y.com)."""


def profile_range(profile: str, ranges: int) -> int:
    """Which of `ranges` equal ranges of the profile id order holds `profile`: ids are hashes
    in hexadecimal, so the ranges hold about as many profiles each."""
    return int(profile[2:6], 16) * ranges >> 16


def anchor_range(anchor: int, ranges: int) -> int:
    """`profile_range` of `profile_id_for(anchor)`, without writing the id out."""
    return ((anchor & 0xFFFFFFFFFFFFFFFF) >> 48) * ranges >> 16


class Settling(Protocol):
    """Told what a resolution has settled before it ends, so that work on it can start."""

    def lone(self, nodes: Sequence[int], grouped: AbstractSet[int]) -> None:
        """`nodes` share no identifier with any other node: each is a profile of its own,
        `profile_id_for(node)`. Every other node is in `grouped`. Known after the first
        pass over the edges, long before the rest of the resolution."""

    def tick(self) -> None:
        """Called every few tens of thousands of nodes while the rest is resolved, for work
        beside it (taking what that work has finished) to go on."""


TICK_NODES = 50_000


def _slices(values: Sequence[int], settling: Settling | None) -> Iterator[Sequence[int]]:
    """`values` a slice at a time, ticking `settling` after each."""
    for start in range(0, len(values), TICK_NODES):
        yield values[start : start + TICK_NODES]
        if settling is not None:
            settling.tick()


def _anchor_rank(node: int, links: set[int]) -> tuple[bool, int]:
    """The smallest rank names a profile: its smallest record, or its smallest link when it
    has no record (links sort after records by the flag)."""
    return node in links, node


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[int, int] = {}

    def find(self, node: int) -> int:
        parent = self.parent
        root = parent.get(node, node)
        if root == node:
            return node
        path = [node]
        while True:
            up = parent.get(root, root)
            if up == root:
                break
            path.append(root)
            root = up
        for item in path:
            parent[item] = root
        return root

    def union(self, a: int, b: int) -> int:
        """Join the groups of roots a and b; the smaller root survives (deterministic)."""
        keep, drop = (a, b) if a < b else (b, a)
        self.parent[drop] = keep
        return keep


def _runs(edges: Iterable[Edge]) -> Iterable[tuple[int, int, list[int]]]:
    """Group consecutive edges by identifier: (kind index, identifier id, node ids)."""
    current: tuple[int, int] | None = None
    nodes: list[int] = []
    for kind, identifier, node in edges:
        if current is not None and identifier != current[1]:
            yield current[0], current[1], nodes
            nodes = []
        current = (kind, identifier)
        nodes.append(node)
    if current is not None:
        yield current[0], current[1], nodes


def resolve(
    nodes: Sequence[int],
    links: set[int],
    edges: EdgesByKind,
    limits: Sequence[int],
    kind_names: Sequence[str],
    edges_of: Callable[[set[int]], list[Edge]],
    settling: Settling | None = None,
) -> Resolution:
    """Resolve the nodes into profiles.

    `edges` is emptied on the way. `edges_of(nodes)` returns the edges of a subset again,
    sorted by (kind index, identifier id, node id), for the components that need the second
    pass. `settling` hears of the lone nodes as soon as they are known, and ticks after.
    """
    found = _UnionFind()
    find, parent = found.find, found.parent
    result = Resolution()
    # The first node of each identifier, in a flat array, and where each kind's ends: a
    # million-record store has millions of identifiers.
    # Most identifiers belong to one node and join nothing: the loop only looks for a root
    # when an identifier's second node comes (the runs of `_runs`, without a list per run).
    run_nodes = array("q")
    kind_ends: list[int] = []
    current: int | None = None
    first = root = 0
    for chunks in edges.chunks():
        for identifiers, carriers in chunks:
            for identifier, node in zip(identifiers, carriers, strict=True):
                if identifier != current:
                    current, first, root = identifier, node, 0
                    run_nodes.append(node)
                    continue
                if not root:
                    root = find(first)
                other = find(node)
                if other != root:
                    root = found.union(root, other)
                    result.unions.append((first, node, identifier))
        kind_ends.append(len(run_nodes))
    # Consumed, as an iterator of edges would be: their memory goes before the profile map
    # grows (a million-record store has 40 MB of them).
    edges.clear()

    # Only a component of several nodes can be over a limit in a way that matters: a lone
    # node over one (a record with two loyalty numbers) merges nothing either way.
    grouped = set(parent)
    grouped.update(parent.values())
    if settling is not None:
        settling.lone(array("q", (node for node in nodes if node not in grouped)), grouped)
    # Distinct identifiers per component, one kind at a time, so only one kind's counts are
    # ever held.
    conflicted: set[int] = set()
    start = 0
    for kind, end in enumerate(kind_ends):
        counts: Counter[int] = Counter()
        for firsts in _slices(run_nodes[start:end], settling):
            counts.update(find(first) for first in firsts if first in grouped)
        conflicted.update(root for root, count in counts.items() if count > limits[kind])
        del counts
        start = end
    del run_nodes

    # Each component's anchor, without holding its member list; a lone node is its own.
    anchors: dict[int, tuple[bool, int]] = {}
    conflict_nodes = set()
    for part in _slices(nodes, settling):
        for node in part:
            if node not in grouped:
                continue
            root = find(node)
            if root in conflicted:
                conflict_nodes.add(node)
                continue
            candidate = _anchor_rank(node, links)
            best = anchors.get(root)
            if best is None or candidate < best:
                anchors[root] = candidate
    profiles = {root: profile_id_for(anchor) for root, (_, anchor) in anchors.items()}
    del anchors
    profile_of = result.profile_of
    for part in _slices(nodes, settling):
        for node in part:
            if node not in grouped:
                profile_of[node] = profile_id_for(node)
            elif (root := find(node)) not in conflicted:
                profile_of[node] = profiles[root]
    del profiles, grouped
    if conflicted:
        kept = Unions()
        for union in result.unions:
            if found.find(union[0]) not in conflicted:
                kept.append(union)
        result.unions = kept
        groups = _resolve_with_limits(conflict_nodes, edges_of, limits, kind_names, result)
        for members in groups.values():
            _, anchor = min(_anchor_rank(node, links) for node in members)
            profile = profile_id_for(anchor)
            for node in members:
                result.profile_of[node] = profile
    return result


def _resolve_with_limits(
    nodes: set[int],
    edges_of: Callable[[set[int]], list[Edge]],
    limits: Sequence[int],
    kind_names: Sequence[str],
    result: Resolution,
) -> dict[int, list[int]]:
    """The greedy second pass for components where some kind is over its limit."""
    found = _UnionFind()
    held: dict[int, dict[int, set[int]]] = defaultdict(lambda: defaultdict(set))
    edges = edges_of(nodes)
    for kind, identifier, node in edges:
        held[node][kind].add(identifier)

    def blocking_kind(a: int, b: int) -> int | None:
        for kind, values in held[b].items():
            mine = held[a].get(kind, set())
            union = len(mine) + len(values - mine)
            if union > limits[kind] and union > max(len(mine), len(values)):
                return kind
        return None

    for _kind, identifier, members in _runs(edges):
        root = found.find(members[0])
        for node in members[1:]:
            other = found.find(node)
            if other == root:
                continue
            blocked = blocking_kind(root, other)
            if blocked is not None:
                limit = limits[blocked]
                result.refusals.append(
                    Refusal(
                        members[0],
                        node,
                        identifier,
                        f"would give one profile more than {limit} {kind_names[blocked]} "
                        f"value{'s' if limit > 1 else ''}",
                    )
                )
                continue
            keep = found.union(root, other)
            drop = other if keep == root else root
            for kind, values in held.pop(drop, {}).items():
                held[keep][kind] |= values
            root = keep
            result.unions.append((members[0], node, identifier))
    groups: dict[int, list[int]] = defaultdict(list)
    for node in nodes:
        groups[found.find(node)].append(node)
    return groups
