"""Refreshing profiles: one ordered pass over every record (a first load, a rebuild) and
lookups of the touched profiles write the same rows, skip unchanged profiles and drop removed
ones, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import json
import random
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine

import syncd.profiles
from syncd.mapping.model import ComputedTrait, ProfileMapping
from syncd.mapping.transforms import format_timestamp
from syncd.profiles import (
    Computed,
    EventView,
    RecordView,
    RowsFromElsewhere,
    compute,
    encode_traits,
    merge_traits,
    refresh_profiles,
    rows_of_members,
)
from syncd.store.db import Bulk, to_json, transaction
from syncd.store.tables import encode_ids

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
RULES = ProfileMapping.model_validate(
    {
        "traits": {
            "email": {"rule": "source_priority", "sources": ["crm", "shop"]},
            "score": {"rule": "max"},
            "low": {"rule": "min"},
            "city": {"rule": "first_non_null"},
            "tags": {"rule": "union"},
        },
        "computed": {
            "sources": {"op": "sources", "over": "records"},
            "records": {"op": "count", "over": "records"},
            "shop_total": {"op": "sum", "over": "records", "stream": "people", "property": "score"},
            "seen": {"op": "last_seen", "over": "records"},
            "orders": {"op": "count", "event": "Order"},
            "spent": {"op": "sum", "event": "Order", "property": "total"},
        },
    }
)
PROFILES = [f"p_{n:016x}" for n in range(0, 90 * 7919, 7919)]
NOWHERE = "p_ffffffffffffffff"
"""Touched, yet nothing in the store belongs to it."""
ONLY_LINKS = PROFILES[:4]
"""Profiles left with link nodes and deleted records only."""
TIMES = [None, "2025-01-01T00:00:00.000Z", "2025-06-01T00:00:00.000Z", "2025-06-01T00:00:00.000Z"]


@pytest.fixture(autouse=True)
def frozen_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(syncd.profiles, "utcnow", lambda: NOW)


def _traits(rng: random.Random) -> dict[str, Any]:
    offered: dict[str, Any] = {
        "email": rng.choice([None, "a@x.com", "b@x.com", "C@x.com"]),
        "score": rng.choice([None, 3, 7.5, -2, "12", True, 40]),
        "low": rng.choice([None, 1, 0.5, "z"]),
        "city": rng.choice([None, "Oslo", "Lima", "Århus"]),
        "tags": rng.choice([None, "vip", ["a", "b"], ["b", 3], []]),
        "name": rng.choice([None, "Ann", "Bo", 'Quote "me"', "back\\u0000slash"]),
    }
    return {name: value for name, value in offered.items() if rng.random() < 0.8}


def _store(engine: Engine, seed: int = 7) -> None:
    """A few hundred records, links, events and strays across PROFILES."""
    rng = random.Random(seed)
    records: list[tuple[Any, ...]] = []
    edges: list[tuple[int, int]] = []
    events: list[tuple[Any, ...]] = []
    event_edges: list[tuple[int, int]] = []
    for number, profile in enumerate(PROFILES):
        identifier = 1_000_000 + number
        live = 0 if profile in ONLY_LINKS else rng.choice([1, 1, 2, 3, 6])
        others = rng.choice([[], [], [("link", False)], [("record", True)]])
        if profile in ONLY_LINKS:
            others = [("link", False), *others]
        for kind, deleted in [("record", False)] * live + others:
            key = rng.getrandbits(63) - 2**62
            traits = {} if kind == "link" else _traits(rng)
            records.append(_record(key, rng, kind, deleted, traits, profile, identifier))
            if not deleted:  # as the writer does: a deleted record leaves the graph
                edges.append((identifier, key))
        for order in range(rng.choice([0, 0, 1, 3])):
            event = identifier * 10 + order
            total = rng.choice([10, 2.5, "7", None])
            events.append((event, "shop", "orders", str(event), "Order", "2025-02-01", total))
            event_edges.append((event, identifier))
    for stray in range(20):  # never resolved: no profile
        records.append(_record(-stray - 1, rng, "record", False, _traits(rng), None, None))
    rng.shuffle(records)  # a profile's records are not stored side by side
    with transaction(engine) as bulk:
        bulk.upsert(
            "source_record",
            (
                "id",
                "source",
                "stream",
                "external_id",
                "node_kind",
                "updated_at",
                "deleted",
                "content_hash",
                "payload",
                "traits",
                "last_run",
                "identifier_ids",
            ),
            [(*record[:10], *record[11:]) for record in records],
            ("id",),
        )
        bulk.upsert(
            "record_profile",
            ("record_id", "profile_id"),
            sorted((record[0], record[10]) for record in records if record[10] is not None),
            ("record_id",),
        )
        bulk.upsert("identifier", ("id", "kind", "value"), _identifiers(), ("id",))
        bulk.insert_ignore(
            "record_identifier",
            ("identifier_id", "record_id"),
            edges,
            ("identifier_id", "record_id"),
        )
        bulk.upsert(
            "event",
            (
                "id",
                "source",
                "stream",
                "event_id",
                "name",
                "occurred_at",
                "properties",
                "needs_profile",
                "run_id",
            ),
            [(*row[:6], to_json({"total": row[6]}), False, "r0") for row in events],
            ("id",),
        )
        bulk.insert_ignore(
            "event_identifier",
            ("event_id", "identifier_id"),
            event_edges,
            ("event_id", "identifier_id"),
        )


def _identifiers() -> list[tuple[int, str, str]]:
    return [(1_000_000 + n, "email", f"{n}@x.com") for n in range(len(PROFILES))]


def _record(
    key: int,
    rng: random.Random,
    kind: str,
    deleted: bool,
    traits: dict[str, Any],
    profile: str | None,
    identifier: int | None,
) -> tuple[Any, ...]:
    source, stream = rng.choice([("crm", "people"), ("shop", "people"), ("web", "visits")])
    return (
        key,
        source,
        stream,
        str(key),
        kind,
        rng.choice(TIMES),
        deleted,
        "h",
        "{}",
        Bulk.encode(traits),
        profile,
        "r0",
        None if deleted or identifier is None else encode_ids([identifier]),
    )


def _rows(bulk: Bulk) -> dict[str, tuple[Any, ...]]:
    return {
        row[0]: (Bulk.decode(row[1]), *row[2:])
        for row in bulk.connection.exec_driver_sql(
            "SELECT id, traits, traits_hash, record_count, updated_at, run_id FROM profile"
        )
    }


class _InTwoBatches:
    """Batches as the workers' results come: the first ready at once, the second only when
    the rest is asked for."""

    def __init__(self, first: Computed, second: Computed) -> None:
        self._first: list[Computed] = [first]
        self._second = second

    def ready(self) -> Iterator[Computed]:
        while self._first:
            yield self._first.pop()

    def rest(self) -> Iterator[Computed]:
        yield from self.ready()
        yield self._second


def _by_members(
    bulk: Bulk, touched: set[str], run_id: str
) -> tuple[RowsFromElsewhere | None, set[str]]:
    """What the mapping workers compute for a large resolution: the touched profiles that
    hold live nodes, read by node id as `rows_of_members` reads them; and the touched
    profiles left to the refresh itself. Half of the workers' are written before the
    refresh, as they are between slices of a resolution's write-back."""
    if not BY_MEMBERS:
        return None, touched
    held: dict[str, list[int]] = {}
    for profile, node in bulk.connection.exec_driver_sql(
        "SELECT rp.profile_id, sr.id FROM record_profile rp "
        f"JOIN source_record sr ON sr.id = rp.record_id WHERE sr.deleted = {bulk.false}"
    ):
        if profile in touched:
            held.setdefault(profile, []).append(int(node))
    members = sorted(held.items())
    now = format_timestamp(NOW)
    batches = [
        (None, rows_of_members(bulk, RULES, part, now, run_id))
        for part in (members[: len(members) // 2], members[len(members) // 2 :])
    ]
    elsewhere = RowsFromElsewhere(bulk, _InTwoBatches(*batches))
    elsewhere.write_ready()
    return elsewhere, touched - set(held)


WAYS = ["one pass", "lookups", "by members"]


@pytest.fixture(params=WAYS)
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test once per way of reading the records, whatever share of the store it touches."""
    one_pass = request.param == "one pass"
    monkeypatch.setattr(syncd.profiles, "_one_pass_pays", lambda _bulk, _touched: one_pass)
    monkeypatch.setattr(sys.modules[__name__], "BY_MEMBERS", request.param == "by members")
    return str(request.param)


BY_MEMBERS = False


def _refresh(
    engine: Engine, touched: set[str], run_id: str, removed: frozenset[str] = frozenset()
) -> tuple[int, int]:
    with transaction(engine) as bulk:
        elsewhere, left = _by_members(bulk, touched, run_id)
        # A profile the workers compute holds nodes: a resolution never counts it removed.
        removed = removed - (touched - left)
        return refresh_profiles(bulk, RULES, left, set(removed), run_id, elsewhere)


def _snapshot(engine: Engine) -> dict[str, tuple[Any, ...]]:
    with transaction(engine, commit=False) as bulk:
        return _rows(bulk)


@pytest.mark.parametrize(("decode", "chunk"), [(5000, 2000), (3, 2)])
def test_one_pass_and_lookups_write_the_same_profiles(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, decode: int, chunk: int
) -> None:
    # Small batches split profiles across parses and chunks.
    monkeypatch.setattr(syncd.profiles, "DECODE_ROWS", decode)
    monkeypatch.setattr(syncd.profiles, "PROFILE_CHUNK", chunk)
    _store(engine)
    touched = {*PROFILES, NOWHERE}
    written = {}
    rows = {}
    for way in WAYS:
        one_pass = way == "one pass"
        monkeypatch.setattr(syncd.profiles, "_one_pass_pays", lambda _b, _t, v=one_pass: v)
        with transaction(engine, commit=False) as bulk:
            monkeypatch.setattr(sys.modules[__name__], "BY_MEMBERS", way == "by members")
            elsewhere, left = _by_members(bulk, touched, "r1")
            written[way], _ = refresh_profiles(bulk, RULES, left, set(), "r1", elsewhere)
            rows[way] = _rows(bulk)
    assert rows["one pass"] == rows["lookups"] == rows["by members"]
    assert set(written.values()) == {len(touched)}
    assert set(rows["one pass"]) == touched
    for profile in ONLY_LINKS:
        traits, _, count, *_ = rows["one pass"][profile]
        assert count == 0
        assert traits["records"] == 0
        assert traits["sources"] == []


def test_stored_hashes_are_those_of_the_canonical_traits_text(engine: Engine, path: str) -> None:
    _store(engine)
    _refresh(engine, {*PROFILES, NOWHERE}, "r1")
    for traits, digest, *_ in _snapshot(engine).values():
        text = json.dumps(traits, sort_keys=True, separators=(",", ":"), default=str)
        assert digest == hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()


def test_unchanged_profiles_are_not_rewritten(engine: Engine, path: str) -> None:
    _store(engine)
    everything = {*PROFILES, NOWHERE}
    assert _refresh(engine, everything, "r1") == (len(everything), 0)
    before = _snapshot(engine)
    edited, emptied = [profile for profile in PROFILES if before[profile][2] > 1][:2]
    with transaction(engine) as bulk:
        bulk.connection.exec_driver_sql(
            bulk.sql(
                "UPDATE source_record SET traits = ? WHERE id IN (SELECT record_id FROM "
                "record_profile WHERE profile_id = ?) AND node_kind = 'record' AND deleted = ?"
            ),
            (Bulk.encode({"city": "Quito", "score": 10_000}), edited, False),
        )
        bulk.connection.exec_driver_sql(
            bulk.sql(
                "UPDATE source_record SET deleted = ? "
                "WHERE id IN (SELECT record_id FROM record_profile WHERE profile_id = ?)"
            ),
            (True, emptied),
        )

    assert _refresh(engine, everything, "r2") == (2, 0)

    after = _snapshot(engine)
    changed = {profile for profile in after if after[profile] != before[profile]}
    assert changed == {edited, emptied}
    assert after[edited][0]["score"] == 10_000
    assert after[emptied][2] == 0
    assert {row[-1] for profile, row in after.items() if profile not in changed} == {"r1"}
    assert {after[profile][-1] for profile in changed} == {"r2"}


def test_removed_profiles_are_deleted(engine: Engine, path: str) -> None:
    _store(engine)
    _refresh(engine, set(PROFILES), "r1")
    dropped, merged_into = PROFILES[20], PROFILES[21]

    written, deleted = _refresh(
        engine, {merged_into}, "r2", removed=frozenset({dropped, merged_into})
    )

    assert (written, deleted) == (0, 1)
    assert set(_snapshot(engine)) == set(PROFILES) - {dropped}


def test_one_pass_is_taken_for_a_large_share_of_the_profiles(engine: Engine) -> None:
    _store(engine)
    with transaction(engine, commit=False) as bulk:
        assert syncd.profiles._one_pass_pays(bulk, set(PROFILES))
        refresh_profiles(bulk, RULES, set(PROFILES), set(), "r1")
        assert syncd.profiles._one_pass_pays(bulk, set(PROFILES))
        assert not syncd.profiles._one_pass_pays(bulk, set(PROFILES[:5]))
        assert not syncd.profiles._one_pass_pays(bulk, set())


def test_encoded_traits_keep_the_hash_of_the_text_before_nul_removal() -> None:
    traits = {"name": "Ann\x00", "tags": ["x\x00y"]}
    text, digest = encode_traits(traits)
    with_nul = json.dumps(traits, sort_keys=True, separators=(",", ":"), default=str)
    assert text == to_json(traits) == '{"name":"Ann","tags":["xy"]}'
    assert digest == hashlib.sha1(with_nul.encode(), usedforsecurity=False).hexdigest()


def test_a_lone_record_survives_every_rule_as_it_is_except_union() -> None:
    record = RecordView(5, "web", "visits", None, {"tags": ["b", "a", "b"], "score": 3, "x": None})
    assert merge_traits(RULES, [record]) == (
        {"score": 3, "tags": ["a", "b"]},
        {"score": 5, "tags": 5},
    )


def test_union_and_distinct_keep_objects_and_tell_true_from_one() -> None:
    older = RecordView(1, "crm", "people", "2025-01-01", {"tags": [{"sku": "a"}, True, 1.0]})
    newer = RecordView(2, "shop", "people", "2025-02-01", {"tags": [1, {"sku": "a"}, "x"]})
    expected = [True, 1, 1.0, "x", {"sku": "a"}]
    assert merge_traits(RULES, [newer, older])[0]["tags"] == expected
    assert merge_traits(RULES, [older, newer])[0]["tags"] == expected
    items = [
        EventView("order", "orders", f"2025-01-0{n}T00:00:00.000Z", {"items": items})
        for n, items in ((1, [{"sku": "a"}, {"sku": "b"}]), (2, [{"sku": "a"}]))
    ]
    distinct = ComputedTrait.model_validate(
        {"op": "distinct", "over": "events", "property": "items"}
    )
    assert compute(distinct, [], items, "2025-02-01T00:00:00.000Z") == [{"sku": "a"}, {"sku": "b"}]


def test_survivorship_over_several_records() -> None:
    old = RecordView(2, "shop", "people", "2025-01-01", {"email": "s@x", "city": "Oslo", "low": 4})
    tie = RecordView(1, "web", "visits", "2025-02-01", {"name": "Bo", "score": "12", "low": 2})
    new = RecordView(3, "crm", "people", "2025-02-01", {"email": "c@x", "city": "Lima", "tags": 1})
    traits, origin = merge_traits(RULES, [new, tie, old])
    assert traits == {
        "city": "Oslo",
        "email": "c@x",
        "low": 2,
        "name": "Bo",
        "score": "12",
        "tags": [1],
    }
    assert origin == {"city": 2, "email": 3, "low": 1, "name": 1, "score": 1, "tags": 3}


TRAIT_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=4),
    st.lists(st.integers(), max_size=3),
)


@settings(max_examples=200, deadline=None)
@given(
    traits=st.dictionaries(st.sampled_from(["a", "b", "c", "d", "e"]), TRAIT_VALUES),
    rules=st.dictionaries(
        st.sampled_from(["a", "b", "c", "x"]),
        st.sampled_from(["latest", "first_non_null", "max", "min", "source_priority"]),
    ),
)
def test_a_lone_record_takes_the_short_way_to_what_the_rules_give(
    traits: dict[str, Any], rules: dict[str, str]
) -> None:
    # One record without a union rule skips survivorship: it must give what the rules give.
    mapping = ProfileMapping.model_validate(
        {
            "traits": {
                name: {"rule": rule, **({"sources": ["crm"]} if rule == "source_priority" else {})}
                for name, rule in rules.items()
            }
        }
    )
    record = RecordView(7, "crm", "people", "2026-01-01T00:00:00+00:00", traits)
    assert merge_traits(mapping, [record]) == syncd.profiles._survivors(mapping, [record])


@pytest.mark.parametrize(
    ("totals", "expected"),
    [
        ([0.1, 0.2], 0.3),
        ([760.0, 0.6, 0.07], 760.67),
        ([3, 4], 7),
        ([2**80, 1], 2**80 + 1),
        ([10**400, 0.5], None),
        ([1e308, 1e308], None),
    ],
)
def test_a_sum_is_the_float_nearest_the_exact_one_and_whole_numbers_stay_exact(
    totals: list[float], expected: object
) -> None:
    spent = ComputedTrait(op="sum", event="Order", property="total")
    orders = [EventView("Order", "orders", "2025-01-01", {"total": total}) for total in totals]
    summed = compute(spent, [], orders, "2025-02-01T00:00:00.000Z")
    assert summed == expected and type(summed) is type(expected)
