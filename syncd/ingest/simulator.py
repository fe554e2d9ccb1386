"""A simulated web shop that sends its visitors' events to the ingest endpoint, for the demo.

For each of M sample people: an anonymous visitor (one anonymousId per device) browses pages
and adds a product to the cart, then logs in (identify with a userId and email traits, typed
as people type them), browses more and sometimes completes an order. About a quarter of the
people never log in. People 0 and 1 share one device, so one anonymousId belongs to two
userIds: the case identity resolution must not merge blindly.

Everything goes through the real HTTP endpoint (`/v1/batch`, write key by basic auth). Ids and
timestamps are a pure function of (seed, person), so running the simulation twice stores
nothing new: the endpoint de-duplicates by messageId.

    SYNCD_INGEST_WRITE_KEY=... python -m syncd.ingest.simulator --url http://127.0.0.1:8787
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx

from connectors.sample_people import Person, in_system, noisy_email, person
from syncd.ingest.spec import MAX_BATCH_BYTES

PAGES = (
    ("/", "Home"),
    ("/products/espresso-machine", "Espresso machine"),
    ("/products/grinder", "Burr grinder"),
    ("/products/beans", "Coffee beans"),
    ("/blog/brewing-guide", "Brewing guide"),
    ("/pricing", "Pricing"),
)
PRODUCTS = (
    ("SKU-ESP-01", "Espresso machine", 349.0),
    ("SKU-GRD-02", "Burr grinder", 129.0),
    ("SKU-BEA-03", "Coffee beans 1 kg", 24.5),
)
SHARED_DEVICE = (0, 1)
"""The two people who use one device."""


@dataclass(frozen=True)
class Summary:
    """What a simulation sent."""

    people: int
    messages: int
    batches: int
    identified: int
    orders: int


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def user_id(index: int) -> str:
    """The userId the shop gives sample person `index` when they log in."""
    return f"cust-{index:05d}"


class _Visit:
    """One person's session on one device: a clock and message ids derived from the seed."""

    def __init__(self, seed: int, who: Person, anonymous_id: str) -> None:
        self.rng = random.Random(f"{seed}:{who.index}:web")
        self.who = who
        self.anonymous_id = anonymous_id
        self.user_id: str | None = None
        self.at = who.created_at + timedelta(minutes=self.rng.randint(0, 600))
        self.seq = 0
        self.seed = seed

    def message(self, kind: str, **fields: Any) -> dict[str, Any]:
        self.seq += 1
        self.at += timedelta(seconds=self.rng.randint(5, 90))
        ids = {"anonymousId": self.anonymous_id}
        if self.user_id is not None:
            ids["userId"] = self.user_id
        name = f"syncd-sim:{self.seed}:{self.who.index}:{self.seq}"
        message_id = uuid.uuid5(uuid.NAMESPACE_URL, name)
        return {
            "type": kind,
            "messageId": str(message_id),
            "timestamp": _iso(self.at),
            **ids,
            "context": {"page": {"url": "https://shop.example.com"}, "library": {"name": "sim"}},
            **fields,
        }

    def pages(self, count: int) -> list[dict[str, Any]]:
        chosen = [self.rng.choice(PAGES) for _ in range(count)]
        return [
            self.message("page", name=title, properties={"path": path, "title": title})
            for path, title in chosen
        ]


def _journey(seed: int, index: int, anonymous_id: str) -> tuple[list[dict[str, Any]], bool, bool]:
    """One person's messages; and whether they identified and ordered."""
    who = person(seed, index)
    visit = _Visit(seed, who, anonymous_id)
    rng = visit.rng
    messages = visit.pages(rng.randint(2, 4))
    sku, name, price = rng.choice(PRODUCTS)
    product = {"product_id": sku, "name": name, "price": price, "quantity": 1}
    messages.append(visit.message("track", event="Product Added", properties=product))
    identifies = index in SHARED_DEVICE or in_system(seed, index, "web_login", 0.75)
    if not identifies:
        return messages, False, False
    visit.user_id = user_id(index)
    traits = {
        "email": noisy_email(who.email, rng),
        "firstName": who.first_name,
        "lastName": who.last_name,
        "company": who.company,
    }
    messages.append(visit.message("identify", traits=traits))
    messages += visit.pages(rng.randint(1, 3))
    orders = rng.random() < 0.5
    if orders:
        order = {
            "order_id": f"W-{seed}-{index:05d}",
            "revenue": price,
            "currency": "USD",
            "products": [product],
        }
        messages.append(visit.message("track", event="Order Completed", properties=order))
    return messages, True, orders


def _anonymous_id(seed: int, index: int) -> str:
    device = SHARED_DEVICE[0] if index in SHARED_DEVICE else index
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"syncd-sim-device:{seed}:{device}"))


def _batches(messages: list[dict[str, Any]], max_messages: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    size = 0
    for message in messages:
        encoded = len(json.dumps(message).encode()) + 1
        # Keep well inside the 500 KB batch limit, leaving room for the envelope.
        if batch and (len(batch) >= max_messages or size + encoded > MAX_BATCH_BYTES - 4096):
            yield batch
            batch, size = [], 0
        batch.append(message)
        size += encoded
    if batch:
        yield batch


def simulate(
    url: str,
    write_key: str,
    people: int = 20,
    seed: int = 7,
    *,
    batch_size: int = 100,
    client: httpx.Client | None = None,
) -> Summary:
    """Send the journeys of `people` sample people to the ingest endpoint at `url`."""
    messages: list[dict[str, Any]] = []
    identified = orders = 0
    for index in range(people):
        journey, did_identify, did_order = _journey(seed, index, _anonymous_id(seed, index))
        messages += journey
        identified += did_identify
        orders += did_order
    # Interleave people by time, as a live site's traffic arrives.
    messages.sort(key=lambda message: (message["timestamp"], message["messageId"]))
    http = client or httpx.Client(timeout=30)
    batches = 0
    try:
        for batch in _batches(messages, batch_size):
            answer = http.post(
                f"{url.rstrip('/')}/v1/batch", json={"batch": batch}, auth=(write_key, "")
            )
            answer.raise_for_status()
            batches += 1
    finally:
        if client is None:
            http.close()
    return Summary(people, len(messages), batches, identified, orders)


def main(argv: list[str] | None = None) -> int:
    """Run the simulation against a running ingest endpoint."""
    parser = argparse.ArgumentParser(prog="python -m syncd.ingest.simulator", description=__doc__)
    parser.add_argument("--url", default="http://127.0.0.1:8787")
    parser.add_argument("--people", type=int, default=20)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--write-key-env", default="SYNCD_INGEST_WRITE_KEY")
    args = parser.parse_args(argv)
    key = os.environ.get(args.write_key_env, "")
    if not key:
        print(f"error: export {args.write_key_env}", file=sys.stderr)
        return 2
    print(simulate(args.url, key, args.people, args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
