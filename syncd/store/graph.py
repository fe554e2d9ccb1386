"""Reading the identity graph from a record's side.

Edges are keyed by identifier (see `RecordIdentifier`); a record lists its own identifier ids
on its row, so these reads touch the records and then the identifiers, never a second index.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from itertools import chain

from syncd.store.db import Bulk
from syncd.store.tables import decode_ids


def identifiers_of(bulk: Bulk, records: Iterable[int]) -> dict[int, list[int]]:
    """The identifier ids each of `records` carries; records that carry none are left out."""
    rows = bulk.select_in(
        "SELECT id, identifier_ids FROM source_record "
        "WHERE id IN ({in}) AND identifier_ids IS NOT NULL",
        sorted(records),
    )
    return {int(record): decode_ids(listed) for record, listed in rows}


def identifiers_of_profiles(bulk: Bulk, profiles: Iterable[str]) -> dict[str, set[int]]:
    """The identifier ids the nodes of each profile carry; profiles without any are left out."""
    carried: dict[str, set[int]] = defaultdict(set)
    rows = bulk.select_in(
        "SELECT rp.profile_id, sr.identifier_ids FROM record_profile rp "
        "JOIN source_record sr ON sr.id = rp.record_id "
        "WHERE rp.profile_id IN ({in}) AND sr.identifier_ids IS NOT NULL",
        sorted(set(profiles)),
    )
    for profile, listed in rows:
        carried[profile].update(decode_ids(listed))
    return dict(carried)


def kinds_and_values(bulk: Bulk, identifiers: Iterable[int]) -> dict[int, tuple[str, str]]:
    return {
        int(key): (kind, value)
        for key, kind, value in bulk.select_in(
            "SELECT id, kind, value FROM identifier WHERE id IN ({in})", sorted(set(identifiers))
        )
    }


def profile_identifiers(bulk: Bulk, profiles: Iterable[str]) -> dict[str, set[tuple[str, str]]]:
    """The (kind, value) of every identifier each profile's nodes carry."""
    carried = identifiers_of_profiles(bulk, profiles)
    named = kinds_and_values(bulk, chain(*carried.values()))
    return {
        profile: {named[key] for key in identifiers if key in named}
        for profile, identifiers in carried.items()
    }
