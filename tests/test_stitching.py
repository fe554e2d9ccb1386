"""Anonymous visitors become known people, whatever order their events arrive in.

Messages go through the store-backed sink into the spool, the web source reads them with the
shipped mappings (mappings/web_*.toml), and a pass unifies them. Events hang off
identifiers, so page views sent before a login belong to the person afterwards without being
rewritten; an anonymous id shared by two users (a family computer) never merges them.
"""

from __future__ import annotations

import itertools
import json
import shutil
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from syncd.config import Config, load_config
from syncd.identity.resolve import profile_id_for
from syncd.ingest.spec import IngestMessage, parse_message
from syncd.ingest.store_sink import StoreEventSink
from syncd.inspect import explain
from syncd.mapping.compiler import Mappings, compile_mappings
from syncd.runner import Pipeline
from syncd.store.db import open_store, transaction
from syncd.store.tables import stable_id
from tests.support.project import PEOPLE_MAPPING, Project, records_page

SHIPPED_MAPPINGS = Path(__file__).parent.parent / "mappings"
NOW = datetime.now(UTC).replace(microsecond=0)


def at(hours_ago: float) -> str:
    return (NOW - timedelta(hours=hours_ago)).isoformat()


def msg(kind: str, message_id: str, hours_ago: float, **fields: Any) -> IngestMessage:
    raw = {"messageId": message_id, "timestamp": at(hours_ago), **fields}
    return parse_message(raw, kind=kind, received_at=NOW)


# One person: two page views on the laptop before logging in, the login (identify), a product
# viewed while logged in, a product added to the cart on the phone before logging in there,
# the phone's alias call at its login, and a page view with the user id only.
VISIT = {
    "laptop_views": [
        msg("page", "pv-1", 50, anonymousId="anon-laptop", properties={"path": "/"}),
        msg("page", "pv-2", 49, anonymousId="anon-laptop", properties={"path": "/shoes"}),
    ],
    "login": [
        msg(
            "identify",
            "id-1",
            48,
            userId="u-ann",
            anonymousId="anon-laptop",
            traits={"email": "Ann@Example.com", "firstName": "Ann"},
        )
    ],
    "viewed": [
        msg(
            "track",
            "tr-1",
            47,
            userId="u-ann",
            anonymousId="anon-laptop",
            event="Product Viewed",
            properties={"product_id": "shoe-9"},
        )
    ],
    "phone_cart": [
        msg(
            "track",
            "tr-2",
            30,
            anonymousId="anon-phone",
            event="Product Added",
            properties={"product_id": "sock-2", "price": "12.50"},
        )
    ],
    "phone_alias": [msg("alias", "al-1", 29, userId="u-ann", previousId="anon-phone")],
    "known_view": [msg("page", "pv-3", 2, userId="u-ann", properties={"path": "/cart"})],
}

ORDERS = [
    ("as it happened", list(VISIT)),
    ("alias first", ["phone_alias", "phone_cart", "known_view", "login", "laptop_views", "viewed"]),
    ("login last", ["known_view", "viewed", "phone_cart", "laptop_views", "phone_alias", "login"]),
    ("reversed", list(reversed(VISIT))),
    ("all in one pass", None),
]


def write_config(folder: Path) -> Path:
    """A project with the shipped web and Matomo mappings (and the shipped profile rules)."""
    mappings = folder / "mappings"
    mappings.mkdir()
    for shipped in SHIPPED_MAPPINGS.glob("*.toml"):
        if shipped.name.startswith(("web_", "matomo_")) or shipped.name == "profile.toml":
            shutil.copy(shipped, mappings / shipped.name)
    path = folder / "syncd.toml"
    path.write_text(
        """
mappings_dir = "mappings"

[store]
url = { env = "SYNCD_STORE_URL" }

[logging]
file = "var/syncd.log"

[identity.kinds.matomo_visitor_id]
limit = 50

[sources.web]
type = "ingest"

[sources.web.options]
write_keys = [{ env = "SYNCD_WEB_WRITE_KEY" }]

[sources.matomo]
type = "matomo"
enabled = false

[sources.matomo.options]
url = "http://127.0.0.1:9"
site_id = 1
token_auth = { env = "MATOMO_TOKEN" }
""",
        encoding="utf-8",
    )
    return path


class Web:
    """A store, the sink the endpoint writes with, and passes of the pipeline over it."""

    def __init__(self, config: Config, mappings: Mappings, engine: Engine) -> None:
        self.config, self.mappings, self.engine = config, mappings, engine
        self.sink = StoreEventSink(engine)

    def deliver(self, messages: Sequence[IngestMessage]) -> None:
        self.sink.write(messages)
        summary = Pipeline(self.config, self.mappings, self.engine).run_once()
        assert summary.status == "ok", summary.errors

    def profile_of(self, user_id: str) -> str:
        with transaction(self.engine) as bulk:
            return explain(bulk, self.config.identity, self.mappings.profile, user_id).profile_id

    def merge_log(self) -> list[tuple[str, str]]:
        with transaction(self.engine) as bulk:
            return [
                (str(action), str(reason))
                for action, reason in bulk.connection.exec_driver_sql(
                    "SELECT action, reason FROM merge_log ORDER BY id"
                )
            ]


@pytest.fixture
def web(store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Web]:
    monkeypatch.setenv("SYNCD_STORE_URL", store_url)
    config = load_config(write_config(tmp_path))
    engine = open_store(config.store_url)
    try:
        yield Web(config, compile_mappings(config), engine)
    finally:
        engine.dispose()


@pytest.mark.parametrize(("order", "groups"), ORDERS, ids=[name for name, _ in ORDERS])
def test_every_arrival_order_ends_with_the_same_profile(
    web: Web, order: str, groups: list[str] | None
) -> None:
    if groups is None:
        web.deliver([m for group in VISIT.values() for m in group])
    else:
        for group in groups:
            web.deliver(VISIT[group])

    with transaction(web.engine) as bulk:
        story = explain(bulk, web.config.identity, web.mappings.profile, "ann@example.com")
        profiles = bulk.connection.exec_driver_sql("SELECT count(*) FROM profile").scalar()
    # The profile id derives from the identify record, whichever message came first.
    assert story.profile_id == profile_id_for(stable_id("web", "identify", "id-1"))
    assert profiles == 1
    assert set(story.identifiers) == {
        ("anonymous_id", "anon-laptop"),
        ("anonymous_id", "anon-phone"),
        ("email", "ann@example.com"),
        ("user_id", "u-ann"),
    }
    traits = story.traits
    assert traits["email"] == "ann@example.com"
    assert traits["first_name"] == "Ann"
    assert traits["page_views_7d"] == 3
    assert traits["products_viewed"] == ["shoe-9"]
    assert traits["cart_value"] == 12.5
    assert traits["last_seen"].startswith(at(2)[:16])
    # The laptop's views from before the login are on the known profile, unrewritten.
    views = [e for e in story.events if e["name"] == "Page Viewed"]
    assert [e["properties"]["path"] for e in views] == ["/", "/shoes", "/cart"]
    assert story.event_count == 6


def test_web_orders_add_to_total_spent(web: Web) -> None:
    # SDKs send an order's amount as `total` or `revenue`; the profile sums `total`.
    web.deliver(
        [
            msg("identify", "id-1", 3, userId="u-ann", traits={"email": "ann@example.com"}),
            msg(
                "track",
                "or-1",
                2,
                userId="u-ann",
                event="Order Completed",
                properties={"total": 10},
            ),
            msg(
                "track",
                "or-2",
                1,
                userId="u-ann",
                event="Order Completed",
                properties={"revenue": "2.5"},
            ),
        ]
    )
    with transaction(web.engine) as bulk:
        traits = explain(bulk, web.config.identity, web.mappings.profile, "u-ann").traits
    assert traits["orders_count"] == 2
    assert traits["total_spent"] == 12.5


def test_a_shared_device_does_not_merge_two_users(web: Web) -> None:
    web.deliver(
        [
            msg("identify", "id-a", 10, userId="u-ann", anonymousId="anon-family"),
            msg("identify", "id-b", 5, userId="u-bob", anonymousId="anon-family"),
            msg("page", "pv-a", 9, userId="u-ann", properties={"path": "/ann"}),
            msg("page", "pv-b", 4, userId="u-bob", properties={"path": "/bob"}),
        ]
    )
    ann, bob = web.profile_of("u-ann"), web.profile_of("u-bob")
    assert ann != bob
    refused = [reason for action, reason in web.merge_log() if action == "refused"]
    assert refused, "the conflict was not logged"
    assert any("user_id" in reason for reason in refused)
    with transaction(web.engine) as bulk:
        bob_story = explain(bulk, web.config.identity, web.mappings.profile, "u-bob")
    assert ("user_id", "u-ann") not in bob_story.identifiers
    assert "/ann" not in json.dumps(bob_story.events)


def test_a_replayed_message_changes_nothing(web: Web) -> None:
    web.deliver(VISIT["laptop_views"] + VISIT["login"])
    with transaction(web.engine) as bulk:
        before = explain(bulk, web.config.identity, web.mappings.profile, "u-ann")
    web.deliver(VISIT["laptop_views"])
    with transaction(web.engine) as bulk:
        after = explain(bulk, web.config.identity, web.mappings.profile, "u-ann")
        spooled = bulk.connection.exec_driver_sql("SELECT count(*) FROM ingest_spool").scalar()
    assert spooled == 3
    assert after.event_count == before.event_count == 2
    assert after.traits == before.traits


def test_a_retry_after_its_message_left_the_spool_changes_nothing(web: Web) -> None:
    # The spool keeps what it has read for a week; an SDK's retry that comes later is
    # stored again, read again, and skipped by the store as an event it has.
    old = [
        parse_message(
            {"messageId": f"pv-old-{n}", "timestamp": at(240), "userId": "u-ann"},
            kind="page",
            received_at=NOW - timedelta(days=10),
        )
        for n in range(3)
    ]
    web.deliver([*old, *VISIT["login"]])
    # The next pass reads the page stream from its stored cursor, and prunes behind it; a
    # dry run first, which deletes nothing.
    web.sink.write([msg("page", "pv-new", 1, userId="u-ann")])
    dry = Pipeline(web.config, web.mappings, web.engine).run_once(dry_run=True)
    assert dry.status == "ok", dry.errors
    with transaction(web.engine) as bulk:
        count = bulk.connection.exec_driver_sql("SELECT count(*) FROM ingest_spool").scalar()
    assert count == 5  # three old views, the login, pv-new
    web.deliver([])
    with transaction(web.engine) as bulk:
        before = explain(bulk, web.config.identity, web.mappings.profile, "u-ann")
        kept = {
            str(row[0])
            for row in bulk.connection.exec_driver_sql("SELECT message_id FROM ingest_spool")
        }
    assert kept.isdisjoint({"pv-old-0", "pv-old-1", "pv-old-2"})
    assert "pv-new" in kept
    web.deliver(old[:1])
    with transaction(web.engine) as bulk:
        after = explain(bulk, web.config.identity, web.mappings.profile, "u-ann")
        spooled = bulk.connection.exec_driver_sql(
            "SELECT count(*) FROM ingest_spool WHERE message_id = 'pv-old-0'"
        ).scalar()
    assert spooled == 1  # stored again: the spool no longer knew it
    assert after.event_count == before.event_count == 4  # the three old views and pv-new
    assert after.traits == before.traits


SUMMED = PEOPLE_MAPPING.replace(
    'score = { from = "score", type = "int" }', 'amount = { from = "amount", type = "float" }'
)
TOTAL = '[computed.total]\nop = "sum"\nover = "records"\nproperty = "amount"\n'


def test_a_float_sum_over_records_does_not_depend_on_their_arrival_order(tmp_path: Path) -> None:
    """1e16 + 1 - 1e16 is 0.0 or 1.0 depending on the order the sum adds in; the same three
    records, arriving one by one in every order, each order into a store of its own."""
    records = [
        {"id": key, "email": "ann@example.com", "amount": amount}
        for key, amount in (("a", "1e16"), ("b", "1"), ("c", "-1e16"))
    ]
    totals = set()
    for number, order in enumerate(itertools.permutations(records)):
        folder = tmp_path / str(number)
        project = Project(
            folder,
            f"sqlite:///{folder / 'store.db'}",
            mappings={"people.toml": SUMMED, "profile.toml": TOTAL},
        )
        for record in order:
            project.run({"people": [records_page([record])]})
        with transaction(project.engine) as bulk:
            (traits,) = bulk.connection.exec_driver_sql("SELECT traits FROM profile").scalars()
        totals.add(json.loads(traits)["total"])
        project.close()
    assert len(totals) == 1
