"""Read-only views of the store for people: explain a profile, export profiles, status."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from syncd.config import IdentityConfig
from syncd.errors import SyncdError
from syncd.identity.normalize import IdentifierNormalizer
from syncd.identity.resolve import PROFILE_ID
from syncd.mapping.model import ProfileMapping
from syncd.mapping.transforms import TransformError
from syncd.profiles import EVENT_PROFILES, RecordView, merge_traits
from syncd.store.db import Bulk
from syncd.store.graph import profile_identifiers
from syncd.store.marks import count_waiting
from syncd.store.writer import identifier_id

EXPORT_CHUNK = 500
EVENTS_SHOWN = 20
CURSOR_TEXT = 32
CURSOR_LIST = 3
CURSOR_LINE = 160
SECRET_NAME = re.compile(r"token|secret|passw|auth|session|credential|api_?key", re.IGNORECASE)
CursorWords = Callable[[Any], str]


class NotFoundError(SyncdError):
    """Nothing in the store matches what was asked for."""


@dataclass
class Explanation:
    """Everything that says why a profile is what it is."""

    profile_id: str
    traits: dict[str, Any]
    trait_origin: dict[str, str]
    identifiers: list[tuple[str, str]]
    records: list[dict[str, Any]]
    merges: list[dict[str, Any]]
    events: list[dict[str, Any]] = field(default_factory=list)
    event_count: int = 0
    other_profiles: list[str] = field(default_factory=list)
    """The other profiles holding what was asked about (after a refused merge, or a value that
    is an identifier of several kinds), each to be explained by its own id."""


def find_profiles(bulk: Bulk, identity: IdentityConfig, query: str) -> list[str]:
    """The current profile ids for a profile id (old ids are followed: one), or for an email,
    phone or id (several after a refused merge), in id order."""
    query = query.strip()
    if PROFILE_ID.fullmatch(query):
        profile = query
        for _ in range(100):
            exists = bulk.connection.exec_driver_sql(
                bulk.sql("SELECT 1 FROM record_profile WHERE profile_id = ? LIMIT 1"), (profile,)
            ).first()
            if exists:
                return [profile]
            moved = bulk.connection.exec_driver_sql(
                bulk.sql(
                    "SELECT to_profile_id FROM merge_log WHERE profile_id = ? "
                    "AND action IN ('renamed', 'split') ORDER BY id DESC LIMIT 1"
                ),
                (profile,),
            ).first()
            if moved is None or moved[0] is None:
                break
            profile = moved[0]
        raise NotFoundError(f"no profile {query}")
    normalizer = IdentifierNormalizer(identity)
    candidates = []
    for kind in identity.kinds:
        try:
            value = normalizer.normalize(kind, query)
        except TransformError:
            continue
        if value is not None:
            candidates.append(identifier_id(kind, value))
    profiles = sorted(
        {
            str(profile)
            for (profile,) in bulk.select_in(
                "SELECT rp.profile_id FROM record_identifier ri JOIN record_profile rp "
                "ON rp.record_id = ri.record_id WHERE ri.identifier_id IN ({in})",
                candidates,
            )
        }
    )
    if not profiles:
        raise NotFoundError("no profile has that identifier")
    return profiles


def _record_names(bulk: Bulk, ids: Sequence[int]) -> dict[int, str]:
    """source/stream/external id of records by id, deleted ones too: what an operator can
    look up in the source system, where the internal id means nothing."""
    return {
        int(key): f"{source}/{stream}/{external_id}"
        for key, source, stream, external_id in bulk.select_in(
            "SELECT id, source, stream, external_id FROM source_record WHERE id IN ({in})", ids
        )
    }


def explain(bulk: Bulk, identity: IdentityConfig, rules: ProfileMapping, query: str) -> Explanation:
    """The profile matching `query` (the first by id when several hold it), with where every
    trait and merge came from."""
    profile_id, *other_profiles = find_profiles(bulk, identity, query)
    row = bulk.connection.exec_driver_sql(
        bulk.sql("SELECT traits FROM profile WHERE id = ?"), (profile_id,)
    ).first()
    traits = Bulk.decode(row[0]) if row else {}
    records = []
    views = []
    names: dict[int, str] = {}
    for (
        key,
        source,
        stream,
        external_id,
        kind,
        updated_at,
        record_traits,
        notes,
    ) in bulk.connection.exec_driver_sql(
        bulk.sql(
            "SELECT sr.id, sr.source, sr.stream, sr.external_id, sr.node_kind, sr.updated_at, "
            "sr.traits, sr.notes FROM record_profile rp JOIN source_record sr "
            f"ON sr.id = rp.record_id WHERE rp.profile_id = ? AND sr.deleted = {bulk.false} "
            "ORDER BY sr.id"
        ),
        (profile_id,),
    ):
        names[int(key)] = f"{source}/{stream}/{external_id}"
        records.append(
            {
                "source": source,
                "stream": stream,
                "id": external_id,
                "kind": kind,
                "updated_at": updated_at,
                "notes": Bulk.decode(notes) or [],
            }
        )
        if kind == "record":
            views.append(
                RecordView(int(key), source, stream, updated_at, Bulk.decode(record_traits))
            )
    _, origin = merge_traits(rules, views)
    identifiers = sorted(profile_identifiers(bulk, [profile_id]).get(profile_id, ()))
    merges = []
    rows: list[Sequence[Any]] = []
    for column in ("record_a", "record_b"):
        rows += bulk.select_in(
            "SELECT m.id, m.action, m.at, m.profile_id, m.to_profile_id, i.kind, i.value, "
            "m.record_a, m.record_b, m.reason FROM merge_log m "
            f"LEFT JOIN identifier i ON i.id = m.identifier_id WHERE m.{column} IN ({{in}})",
            sorted(names),
        )
    logged = {int(row[0]): row for row in rows}  # a merge inside the profile is found twice
    # The other record (record_a, record_b) of a refused merge or of a split is in another
    # profile now: named all the same.
    mentioned = {int(x) for row in logged.values() for x in row[7:9] if x is not None}
    names |= _record_names(bulk, sorted(mentioned - names.keys()))
    for key in sorted(logged):
        _, action, at, profile, to_profile, kind, value, a, b, reason = logged[key]
        merges.append(
            {
                "action": action,
                "at": at,
                "profile_id": profile,
                "to_profile_id": to_profile,
                "identifier": f"{kind}:{value}" if kind else None,
                "records": [names.get(int(x), str(x)) for x in (a, b) if x is not None],
                "reason": reason,
            }
        )
    events = [
        {
            "name": name,
            "occurred_at": occurred_at,
            "stream": stream,
            "properties": Bulk.decode(props),
        }
        for name, occurred_at, stream, props in bulk.connection.exec_driver_sql(
            bulk.sql(
                "SELECT e.name, e.occurred_at, e.stream, e.properties FROM event e "
                "WHERE e.id IN (SELECT ei.event_id FROM event_identifier ei "
                + EVENT_PROFILES
                + "WHERE rp.profile_id = ?) "
                "ORDER BY e.occurred_at, e.id"
            ),
            (profile_id,),
        )
    ]
    return Explanation(
        profile_id,
        traits,
        {name: names[key] for name, key in origin.items()},
        identifiers,
        records,
        merges,
        events[-EVENTS_SHOWN:],
        len(events),
        other_profiles,
    )


def export_profiles(bulk: Bulk) -> Iterator[dict[str, Any]]:
    """Every profile as {profile_id, traits, identifiers, records}, in profile id order."""
    last = ""
    while True:
        chunk = bulk.connection.exec_driver_sql(
            bulk.sql("SELECT id, traits FROM profile WHERE id > ? ORDER BY id LIMIT ?"),
            (last, EXPORT_CHUNK),
        ).all()
        if not chunk:
            return
        ids = [row[0] for row in chunk]
        identifiers = profile_identifiers(bulk, ids)
        records: dict[str, list[dict[str, str]]] = {pid: [] for pid in ids}
        for pid, source, stream, external_id in bulk.select_in(
            "SELECT rp.profile_id, sr.source, sr.stream, sr.external_id FROM record_profile rp "
            "JOIN source_record sr ON sr.id = rp.record_id "
            f"WHERE rp.profile_id IN ({{in}}) AND sr.node_kind = 'record' "
            f"AND sr.deleted = {bulk.false}",
            ids,
        ):
            records[pid].append({"source": source, "stream": stream, "id": external_id})
        for listed in records.values():
            # Sorted here, by code point: a database's ORDER BY on text follows its collation,
            # which on PostgreSQL may be a language's ("B2" after "a 3").
            listed.sort(key=itemgetter("source", "stream", "id"))
        for pid, traits in chunk:
            yield {
                "profile_id": pid,
                "traits": Bulk.decode(traits),
                "identifiers": [
                    {"kind": k, "value": v} for k, v in sorted(identifiers.get(pid, ()))
                ],
                "records": records[pid],
            }
        last = ids[-1]


def short_cursor(value: Any) -> str:
    """A cursor of a source that does not describe its own, as one short line of JSON: long
    lists as their length, long text cut, and whatever a name calls secret masked, since a
    connector written elsewhere may keep a session or a signed link there."""

    def shortened(value: Any, name: str = "") -> Any:
        if SECRET_NAME.search(name):
            return "***"
        if isinstance(value, dict):
            return {key: shortened(item, str(key)) for key, item in value.items()}
        if isinstance(value, list):
            if len(value) > CURSOR_LIST:
                return f"<{len(value)} items>"
            return [shortened(item) for item in value]
        if isinstance(value, str) and len(value) > CURSOR_TEXT:
            return value[: CURSOR_TEXT - 1] + "…"
        return value

    line = json.dumps(shortened(value), ensure_ascii=False, separators=(",", ":"))
    return line if len(line) <= CURSOR_LINE else line[: CURSOR_LINE - 1] + "…"


def status(
    bulk: Bulk, cursor_words: Mapping[str, CursorWords] | None = None, runs: int = 5
) -> dict[str, Any]:
    """Counts of what the store holds, where each stream's cursor stands, and the latest
    runs. `cursor_words` describes the cursors of a source by its name, for the sources whose
    connector can (`ConnectorSpec.describe_cursor`); the others are shown as `short_cursor`."""
    words = cursor_words or {}

    def count(sql: str) -> int:
        return int(bulk.connection.exec_driver_sql(sql).scalar_one())

    return {
        "records": count(
            "SELECT COUNT(*) FROM source_record "
            f"WHERE node_kind = 'record' AND deleted = {bulk.false}"
        ),
        "deleted_records": count(f"SELECT COUNT(*) FROM source_record WHERE deleted = {bulk.true}"),
        "profiles": count("SELECT COUNT(*) FROM profile"),
        "events": count("SELECT COUNT(*) FROM event"),
        "identifiers": count("SELECT COUNT(*) FROM identifier"),
        "quarantined": count("SELECT COUNT(*) FROM quarantine WHERE replayed_at IS NULL"),
        "pending_unify": count_waiting(bulk),
        "cursors": [
            {
                "source": s,
                "stream": t,
                "position": words.get(s, short_cursor)(bulk.decode_any(v)),
                "updated_at": u,
            }
            for s, t, v, u in bulk.connection.exec_driver_sql(
                "SELECT source, stream, value, updated_at FROM cursor ORDER BY source, stream"
            )
        ],
        "runs": [
            {
                "id": i,
                "kind": k,
                "status": st,
                "started_at": sa,
                "finished_at": fa,
                "counts": Bulk.decode(c),
                "error": e,
            }
            for i, k, st, sa, fa, c, e in bulk.connection.exec_driver_sql(
                bulk.sql(
                    "SELECT id, kind, status, started_at, finished_at, counts, error FROM sync_run "
                    "ORDER BY started_at DESC LIMIT ?"
                ),
                (runs,),
            )
        ],
    }
