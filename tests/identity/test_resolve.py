"""The pure resolver: limits, refusals and deterministic ids, whatever the input order."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from collections.abc import Set as AbstractSet

import pytest
from hypothesis import given
from hypothesis import strategies as st

import syncd.identity.resolve
from syncd.identity.resolve import (
    PROFILE_ID,
    Edge,
    EdgesByKind,
    anchor_range,
    profile_id_for,
    profile_range,
    resolve,
)

KINDS = ["user_id", "email", "phone"]
LIMITS = [1, 5, 5]


def run(node_edges: dict[int, list[tuple[int, int]]], links: set[int] = frozenset()):  # type: ignore[assignment,no-untyped-def]
    edges: list[Edge] = sorted(
        (kind, identifier, node) for node, items in node_edges.items() for kind, identifier in items
    )

    def edges_of(nodes: set[int]) -> list[Edge]:
        return [edge for edge in edges if edge[2] in nodes]

    columns = EdgesByKind.of(edges, len(KINDS))
    return resolve(sorted(node_edges), set(links), columns, LIMITS, KINDS, edges_of)


def test_records_sharing_an_email_form_one_profile_named_after_the_smallest_record() -> None:
    result = run({10: [(1, 100)], 20: [(1, 100), (2, 200)], 30: [(2, 200)], 40: [(1, 101)]})
    assert (
        result.profile_of[10]
        == result.profile_of[20]
        == result.profile_of[30]
        == profile_id_for(10)
    )
    assert result.profile_of[40] == profile_id_for(40)
    assert {(a, b) for a, b, _ in result.unions} == {(10, 20), (20, 30)}


def test_two_user_ids_never_merge_and_the_refusal_says_why() -> None:
    # Records 1 and 2 have different user ids and share an email: the limit of one user id wins.
    result = run({1: [(0, 500), (1, 100)], 2: [(0, 501), (1, 100)]})
    assert result.profile_of[1] != result.profile_of[2]
    assert len(result.refusals) == 1
    assert "more than 1 user_id value" in result.refusals[0].reason
    assert result.refusals[0].identifier_id == 100


def test_shared_device_joins_the_first_user_only() -> None:
    # An anonymous id (kind 2 here, a weak kind) seen with two users.
    result = run({1: [(0, 500), (2, 900)], 2: [(0, 501), (2, 900)], 3: [(2, 900)]})
    assert result.profile_of[1] != result.profile_of[2]
    assert result.profile_of[3] == result.profile_of[1]


def test_a_profile_of_links_only_is_named_after_a_link_and_records_win_over_links() -> None:
    result = run({5: [(1, 100)], 7: [(1, 100)]}, links={5})
    assert result.profile_of[5] == result.profile_of[7] == profile_id_for(7)
    alone = run({5: [(1, 100), (2, 300)]}, links={5})
    assert alone.profile_of[5] == profile_id_for(5)


def test_a_record_with_no_identifier_is_its_own_profile() -> None:
    result = run({1: [], 2: [(1, 100)]})
    assert result.profile_of[1] == profile_id_for(1)


@given(
    st.dictionaries(
        st.integers(-50, 50),
        st.lists(st.tuples(st.integers(0, 2), st.integers(0, 6)), max_size=4),
        min_size=1,
        max_size=12,
    ),
    st.randoms(),
)
def test_resolution_ignores_input_order(
    nodes: dict[int, list[tuple[int, int]]], rng: random.Random
) -> None:
    # Identifier ids are per kind here: make them globally unique, as hashes are.
    normalized = {n: [(k, k * 100 + i) for k, i in items] for n, items in nodes.items()}
    shuffled = list(normalized.items())
    rng.shuffle(shuffled)
    assert run(dict(shuffled)).profile_of == run(normalized).profile_of
    # Limits hold in every profile.
    result = run(normalized)
    held: dict[str, dict[int, set[int]]] = {}
    for node, items in normalized.items():
        for kind, identifier in items:
            held.setdefault(result.profile_of[node], {}).setdefault(kind, set()).add(identifier)
    for kinds in held.values():
        for kind, values in kinds.items():
            largest_single = max(
                len({i for k, i in normalized[n] if k == kind})
                for n in normalized
                if result.profile_of[n] in held and kind in held[result.profile_of[n]]
            )
            assert len(values) <= max(LIMITS[kind], largest_single)


class Heard:
    """A `Settling` that keeps what it is told."""

    def __init__(self) -> None:
        self.told: list[int] = []
        self.ticks_before_lone = 0
        self.ticks = 0

    def lone(self, nodes: Sequence[int], grouped: AbstractSet[int]) -> None:
        self.ticks_before_lone = self.ticks
        self.told = list(nodes)
        assert not set(nodes) & grouped

    def tick(self) -> None:
        self.ticks += 1


@given(
    st.dictionaries(
        st.integers(1, 60),
        st.lists(st.tuples(st.integers(0, 2), st.integers(100, 130)), max_size=3, unique=True),
        max_size=40,
    )
)
def test_the_lone_nodes_told_early_are_exactly_the_profiles_of_one_node(
    node_edges: dict[int, list[tuple[int, int]]],
) -> None:
    # An identifier's id is a hash of its kind and value: never the same under two kinds.
    edges: list[Edge] = sorted(
        (kind, kind * 1000 + value, node)
        for node, items in node_edges.items()
        for kind, value in items
    )
    heard = Heard()
    result = resolve(
        sorted(node_edges),
        set(),
        EdgesByKind.of(edges, len(KINDS)),
        LIMITS,
        KINDS,
        lambda nodes: [edge for edge in edges if edge[2] in nodes],
        heard,
    )
    members = Counter(result.profile_of.values())
    alone = [node for node, profile in result.profile_of.items() if members[profile] == 1]
    # A node kept apart by a limit is alone too, but only after the whole resolution.
    assert set(heard.told) <= set(alone)
    carriers = Counter(identifier for _, identifier, _ in set(edges))
    shared = {node for _, identifier, node in edges if carriers[identifier] > 1}
    assert set(heard.told) == set(node_edges) - shared
    assert all(result.profile_of[node] == profile_id_for(node) for node in heard.told)


def test_a_large_resolution_ticks_while_it_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(syncd.identity.resolve, "TICK_NODES", 10)
    heard = Heard()
    node_edges = {node: [(1, 1000 + node // 2)] for node in range(1, 101)}
    edges: list[Edge] = sorted(
        (kind, identifier, node) for node, items in node_edges.items() for kind, identifier in items
    )
    resolve(
        sorted(node_edges), set(), EdgesByKind.of(edges, len(KINDS)), LIMITS, KINDS, list, heard
    )
    assert heard.ticks_before_lone == 0, "the lone nodes come first"
    assert heard.ticks >= 20, "after every 10 nodes of each pass over them"
    assert heard.told == [1, 100], "pairs 2-3, 4-5 … 98-99 share an identifier; 1 and 100 not"


@given(st.integers(-(2**63), 2**63 - 1), st.integers(1, 64))
def test_the_range_of_an_anchor_is_the_range_of_its_profile_id(anchor: int, ranges: int) -> None:
    assert anchor_range(anchor, ranges) == profile_range(profile_id_for(anchor), ranges)


@given(st.integers(-(2**63), 2**63 - 1))
def test_every_profile_id_is_recognised_as_one(anchor: int) -> None:
    assert PROFILE_ID.fullmatch(profile_id_for(anchor))
    assert not PROFILE_ID.fullmatch(profile_id_for(anchor) + "@example.com")
