"""Sample drop-folder files from the seeded population: customers, a CRM export and orders.

The same people appear in several files with the noise real exports have (case, spaces, phone
formats, blanks, a placeholder email), a few duplicates that only name + birth date can join,
and a few malformed rows, so a first run shows merges, refusals and quarantine at work.
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Iterator
from pathlib import Path

from connectors.sample_people import Person, in_system, noisy_email, noisy_phone, person

CUSTOMER_COLUMNS = [
    "customer_id",
    "first_name",
    "last_name",
    "email",
    "phone",
    "loyalty_number",
    "birth_date",
    "city",
    "tier",
    "lifetime_value",
    "marketing_opt_in",
    "updated_at",
]
CRM_COLUMNS = [
    "Id",
    "FirstName",
    "LastName",
    "Email",
    "Phone",
    "Company",
    "Status",
    "LastModifiedDate",
]
STATUSES = ["Open - Not Contacted", "Working - Contacted", "Closed - Converted"]


def _customer(p: Person, rng: random.Random, customer_id: str, sparse: bool) -> list[str]:
    email = "" if sparse else noisy_email(p.email, rng)
    if not sparse and rng.random() < 0.01:
        email = "test@test.com"
    phone = "" if sparse or rng.random() < 0.1 else noisy_phone(p.phone, rng)
    return [
        customer_id,
        p.first_name.lower() if rng.random() < 0.3 else p.first_name,
        f" {p.last_name}" if rng.random() < 0.1 else p.last_name,
        email,
        phone,
        "" if sparse or rng.random() < 0.5 else f"L{p.index:08d}",
        p.birth_date,
        p.city,
        rng.choice("GSB "),
        f"{rng.uniform(10, 5000):.2f}",
        rng.choice(["yes", "no", "true", "false"]),
        (p.created_at.replace(microsecond=0)).isoformat(),
    ]


def _crm(p: Person, rng: random.Random) -> list[str]:
    return [
        f"003{p.index:012d}",
        p.first_name,
        p.last_name.upper() if rng.random() < 0.1 else p.last_name,
        noisy_email(p.email, rng),
        "" if rng.random() < 0.2 else noisy_phone(p.phone, rng),
        p.company,
        rng.choice(STATUSES),
        p.created_at.strftime("%Y-%m-%dT%H:%M:%S.000+0000"),
    ]


def _orders(p: Person, rng: random.Random) -> Iterator[dict[str, object]]:
    for n in range(rng.choice((0, 0, 1, 1, 2, 3))):
        customer: dict[str, str] = {"email": noisy_email(p.email, rng)}
        if rng.random() < 0.2:
            customer = {"loyalty_number": f"L{p.index:08d}"}
        yield {
            "order_id": f"O{p.index:08d}-{n}",
            "ordered_at": p.created_at.isoformat(),
            "customer": customer,
            "total": round(rng.uniform(5, 400), 2),
            "currency": rng.choice(["usd", "USD"]),
            "items": rng.randint(1, 6),
        }


def write_sample_files(folder: Path, people: int, seed: int = 7, files: int = 1) -> dict[str, int]:
    """Write `files` files per stream for `people` people; returns rows written per stream."""
    folder.mkdir(parents=True, exist_ok=True)
    counts = {"customers": 0, "crm_export": 0, "orders": 0, "malformed": 0}
    handles = []
    writers = []
    order_files = []
    for part in range(files):
        customers = (folder / f"customers_{part:03d}.csv").open("w", newline="", encoding="utf-8")
        crm = (folder / f"crm_export_{part:03d}.csv").open("w", newline="", encoding="utf-8")
        orders = (folder / f"orders_{part:03d}.jsonl").open("w", encoding="utf-8")
        handles += [customers, crm, orders]
        customer_writer, crm_writer = csv.writer(customers), csv.writer(crm)
        customer_writer.writerow(CUSTOMER_COLUMNS)
        crm_writer.writerow(CRM_COLUMNS)
        writers.append((customer_writer, crm_writer))
        order_files.append(orders)
    try:
        for index in range(people):
            p = person(seed, index)
            rng = random.Random(f"{seed}:{index}:files")
            part = index % files
            customer_writer, crm_writer = writers[part]
            if in_system(seed, index, "shop", 0.6):
                customer_writer.writerow(_customer(p, rng, f"C{index:08d}", sparse=False))
                counts["customers"] += 1
                if rng.random() < 0.03:
                    customer_writer.writerow(_customer(p, rng, f"D{index:08d}", sparse=True))
                    counts["customers"] += 1
            if in_system(seed, index, "crm", 0.5):
                crm_writer.writerow(_crm(p, rng))
                counts["crm_export"] += 1
            for order in _orders(p, rng):
                order_files[part].write(json.dumps(order) + "\n")
                counts["orders"] += 1
            if index % 997 == 13:
                customer_writer.writerow(
                    [
                        f"X{index:08d}",
                        "broken",
                        "row",
                        "with",
                        "too",
                        "many",
                        "columns",
                        "a",
                        "b",
                        "c",
                        "d",
                        "e",
                        "f",
                    ]
                )
                order_files[part].write('{"order_id": "broken", "total": \n')
                counts["malformed"] += 2
    finally:
        for handle in handles:
            handle.close()
    return counts
