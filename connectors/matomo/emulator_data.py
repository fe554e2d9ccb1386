"""Seeded visits in the shape of Matomo's Live API, drawn from the sample people.

Each person is one visitor (a stable 16-hex-digit visitorId) with one to three visits of
page views, events and sometimes an ecommerce order or an abandoned cart. About four in ten
people never log in, so their visits carry no userId; the others are logged in on some visits,
with their customer id as userId, as the shop's login sets it.
"""

from __future__ import annotations

import hashlib
import itertools
import random
from datetime import timedelta
from typing import Any

from connectors.sample_people import Person, in_system, person

SITE_URL = "https://shop.example.com"

PAGES = (
    ("/", "Home"),
    ("/products", "All products"),
    ("/products/espresso-machine", "Espresso machine"),
    ("/products/grinder", "Burr grinder"),
    ("/products/beans", "Coffee beans"),
    ("/blog/brewing-guide", "Brewing guide"),
    ("/pricing", "Pricing"),
    ("/account", "My account"),
)
PRODUCTS = (
    ("SKU-ESP-01", "Espresso machine", "Machines", 349.0),
    ("SKU-GRD-02", "Burr grinder", "Grinders", 129.0),
    ("SKU-BEA-03", "Coffee beans 1 kg", "Beans", 24.5),
    ("SKU-CUP-04", "Cup set", "Accessories", 19.0),
)
EVENTS = (("Video", "Play", "Brewing guide"), ("Newsletter", "Subscribe", "Footer"))


def visitor_id(seed: int, index: int) -> str:
    """The stable Matomo visitorId (16 hex digits) of sample person `index`."""
    return hashlib.sha1(f"{seed}:{index}:visitor".encode()).hexdigest()[:16]  # noqa: S324


def user_id_of(seed: int, who: Person) -> str | None:
    """The userId the site sets once `who` logs in; None for people who never log in."""
    if not in_system(seed, who.index, "matomo_login", 0.6):
        return None
    # The same userId the shop's own tracking sets at login (see syncd.ingest.simulator), so
    # both analytics sources name a logged-in person alike.
    return f"cust-{who.index:05d}"


class Counter:
    """Matomo's auto-increment ids (idlink_va for actions, order numbers)."""

    def __init__(self, start: int = 0) -> None:
        self.value = start

    def next(self) -> int:
        self.value += 1
        return self.value


def pageview(page_id: Counter, path: str, title: str, timestamp: int) -> dict[str, Any]:
    """One page view as it appears in a visit's actionDetails."""
    page = page_id.next()
    return {
        "type": "action",
        "url": f"{SITE_URL}{path}",
        "pageTitle": title,
        "pageIdAction": 100 + PAGES.index((path, title)) if (path, title) in PAGES else 99,
        "idpageview": hashlib.sha1(str(page).encode()).hexdigest()[:6],  # noqa: S324
        "pageId": page,
        "timeSpent": 0,
        "timestamp": timestamp,
    }


def _event(page_id: Counter, rng: random.Random, timestamp: int) -> dict[str, Any]:
    category, action, name = rng.choice(EVENTS)
    return {
        "type": "event",
        "eventCategory": category,
        "eventAction": action,
        "eventName": name,
        "pageId": page_id.next(),
        "timestamp": timestamp,
    }


def _cart(rng: random.Random, timestamp: int, order_id: str | None) -> dict[str, Any]:
    chosen = [(product, rng.randint(1, 2)) for product in rng.sample(PRODUCTS, rng.randint(1, 3))]
    items = [
        {"itemSKU": sku, "itemName": name, "itemCategory": category, "price": price, "quantity": q}
        for (sku, name, category, price), q in chosen
    ]
    revenue = round(sum(price * q for (_, _, _, price), q in chosen), 2)
    action: dict[str, Any] = {
        "type": "ecommerceOrder" if order_id else "ecommerceAbandonedCart",
        "revenue": revenue,
        "items": sum(q for _, q in chosen),
        "itemDetails": items,
        "timestamp": timestamp,
    }
    if order_id:
        action["orderId"] = order_id
        action["goalId"] = 0
    return action


def _visit_actions(
    rng: random.Random, start: int, logged_in: bool, page_id: Counter, orders: Counter
) -> list[dict[str, Any]]:
    at = start
    actions = []
    for _ in range(rng.randint(2, 6)):
        path, title = rng.choice(PAGES)
        actions.append(pageview(page_id, path, title, at))
        at += rng.randint(10, 120)
    if rng.random() < 0.25:
        actions.append(_event(page_id, rng, at))
        at += rng.randint(5, 30)
    roll = rng.random()
    if logged_in and roll < 0.35:
        actions.append(_cart(rng, at, f"ORD-{orders.next():06d}"))
    elif roll < 0.5:
        actions.append(_cart(rng, at, None))
    for action, following in itertools.pairwise(actions):
        if action["type"] == "action":
            action["timeSpent"] = following["timestamp"] - action["timestamp"]
    return actions


def visit_summary(visit: dict[str, Any]) -> None:
    """Recompute the visit-level fields Matomo derives from its actions."""
    actions = visit["actionDetails"]
    first, last = actions[0]["timestamp"], actions[-1]["timestamp"]
    visit["firstActionTimestamp"] = first
    visit["lastActionTimestamp"] = last
    visit["serverTimestamp"] = last
    visit["visitDuration"] = last - first
    visit["actions"] = len(actions)
    visit["interactions"] = sum(1 for a in actions if a["type"] in ("action", "event"))
    orders = [a for a in actions if a["type"] == "ecommerceOrder"]
    visit["visitConverted"] = 1 if orders else 0
    visit["visitEcommerceStatus"] = (
        "ordered"
        if orders
        else "abandonedCart"
        if any(a["type"] == "ecommerceAbandonedCart" for a in actions)
        else "none"
    )
    visit["goalConversions"] = len(orders)


def seed_visits(people: int, seed: int, site_id: int) -> list[dict[str, Any]]:
    """Every visit of the first `people` sample people, ids assigned in time order."""
    drafts: list[tuple[int, int, dict[str, Any], random.Random, bool]] = []
    for index in range(people):
        who = person(seed, index)
        rng = random.Random(f"{seed}:{index}:matomo")
        user_id = user_id_of(seed, who)
        start = who.created_at + timedelta(minutes=rng.randint(0, 600))
        for number in range(rng.randint(1, 3)):
            logged_in = user_id is not None and (number > 0 or rng.random() < 0.5)
            visit = {
                "idSite": site_id,
                "visitorId": visitor_id(seed, index),
                "fingerprint": hashlib.sha1(f"{seed}:{index}:fp".encode()).hexdigest()[:16],  # noqa: S324
                "userId": user_id if logged_in else None,
                "visitorType": "new" if number == 0 else "returning",
                "visitCount": number + 1,
                "daysSinceFirstVisit": 0,
                "visitIp": "192.0.2.0",
                "referrerType": rng.choice(("direct", "search", "website", "campaign")),
                "deviceType": rng.choice(("Desktop", "Smartphone", "Tablet")),
                "browserName": rng.choice(("Chrome", "Firefox", "Safari")),
                "operatingSystemName": rng.choice(("Windows", "Mac", "iOS", "Android")),
                "countryCode": "us",
                "city": who.city,
                "siteCurrency": "USD",
            }
            drafts.append((int(start.timestamp()), index, visit, rng, logged_in))
            start += timedelta(days=rng.randint(1, 20), minutes=rng.randint(0, 300))
    drafts.sort(key=lambda draft: (draft[0], draft[1]))
    page_id, orders = Counter(), Counter()
    visits = []
    for id_visit, (start_ts, _, visit, rng, logged_in) in enumerate(drafts, start=1):
        visit["idVisit"] = id_visit
        visit["actionDetails"] = _visit_actions(rng, start_ts, logged_in, page_id, orders)
        visit_summary(visit)
        visits.append(visit)
    return visits
