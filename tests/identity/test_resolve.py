"""The pure resolver: limits, refusals and deterministic ids, whatever the input order."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from syncd.identity.resolve import Edge, EdgesByKind, profile_id_for, resolve

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
