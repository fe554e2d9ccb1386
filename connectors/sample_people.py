"""A seeded generator of realistic, overlapping sample people for emulators, demo and benchmarks.

The same person shows up in several systems with the formatting noise real data has: upper-case
or padded emails, phones written as `(415) 555-0134`, `415.555.0134` or `+1 415 555 0134`, first
names in lower case. Everything is a pure function of (seed, index), so any system can generate
its own slice of the same population without sharing state.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

FIRST_NAMES = [
    "Ada",
    "Alan",
    "Grace",
    "Linus",
    "Margaret",
    "Ken",
    "Barbara",
    "Dennis",
    "Frances",
    "Edsger",
    "Radia",
    "Tim",
    "Hedy",
    "John",
    "Katherine",
    "Donald",
    "Sophie",
    "Guido",
    "Anita",
    "Bjarne",
    "Joan",
    "Niklaus",
    "Mary",
    "Claude",
    "Ida",
    "Shafi",
    "Lynn",
    "Vint",
    "Jean",
    "Leslie",
]
LAST_NAMES = [
    "Lovelace",
    "Turing",
    "Hopper",
    "Torvalds",
    "Hamilton",
    "Thompson",
    "Liskov",
    "Ritchie",
    "Allen",
    "Dijkstra",
    "Perlman",
    "Berners-Lee",
    "Lamarr",
    "McCarthy",
    "Johnson",
    "Knuth",
    "Wilson",
    "Rossum",
    "Borg",
    "Stroustrup",
    "Clarke",
    "Wirth",
    "Keller",
    "Shannon",
    "Rhodes",
    "Goldwasser",
    "Conway",
    "Cerf",
    "Sammet",
    "Lamport",
]
COMPANIES = [
    "Acme Corp",
    "Globex",
    "Initech",
    "Umbrella Health",
    "Stark Industries",
    "Wayne Enterprises",
    "Hooli",
    "Vandelay Imports",
    "Soylent Foods",
    "Tyrell Systems",
    "Cyberdyne",
    "Wonka Sweets",
]
EMAIL_DOMAINS = ("example.com", "example.org", "example.net", "mail.example.com")
CITIES = ("San Francisco", "Austin", "New York", "Chicago", "Seattle", "Boston", "Denver")
EPOCH = datetime(2024, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Person:
    """One person of the sample population, in clean canonical form."""

    index: int
    first_name: str
    last_name: str
    email: str
    phone: str  # E.164
    company: str
    city: str
    birth_date: str  # YYYY-MM-DD
    created_at: datetime


def person(seed: int, index: int) -> Person:
    """The person number `index` of the population drawn from `seed`."""
    rng = random.Random(f"{seed}:{index}")
    first = rng.choice(FIRST_NAMES)
    last = rng.choice(LAST_NAMES)
    local = f"{first}.{last}".lower().replace("-", "") + str(index)
    subscriber = 2000000 + (index * 7919 + seed) % 7000000
    area = rng.choice((415, 512, 212, 312, 206, 617, 303))
    return Person(
        index=index,
        first_name=first,
        last_name=last,
        email=f"{local}@{rng.choice(EMAIL_DOMAINS)}",
        phone=f"+1{area}{subscriber:07d}"[:12],
        company=rng.choice(COMPANIES),
        city=rng.choice(CITIES),
        birth_date=f"{rng.randint(1950, 2004)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
        created_at=EPOCH + timedelta(minutes=rng.randint(0, 60 * 24 * 365)),
    )


def noisy_email(email: str, rng: random.Random) -> str:
    """The email as a person or a form might type it: case changed, spaces around it."""
    style = rng.randrange(4)
    if style == 0:
        return email.upper()
    if style == 1:
        return f"  {email} "
    if style == 2:
        local, _, domain = email.partition("@")
        return f"{local.capitalize()}@{domain}"
    return email


def noisy_phone(e164: str, rng: random.Random) -> str:
    """A US E.164 number written the ways people write it."""
    digits = e164[2:]
    area, prefix, line = digits[:3], digits[3:6], digits[6:]
    return rng.choice(
        (
            f"({area}) {prefix}-{line}",
            f"{area}.{prefix}.{line}",
            f"+1 {area} {prefix} {line}",
            f"1-{area}-{prefix}-{line}",
            e164,
        )
    )


def in_system(seed: int, index: int, system: str, share: float) -> bool:
    """Whether person `index` has a record in `system`; `share` of the population does."""
    return random.Random(f"{seed}:{index}:{system}").random() < share
