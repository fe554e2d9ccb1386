"""Micro benchmark: phone normalization, phonenumbers itself vs syncd's normalize_phone.

    .venv/bin/python bench/phones.py --numbers 20000 --runs 5

Inputs are generated with a fixed seed and are all distinct, as with a million distinct people:
- "US distinct": US numbers in the forms sources send (`(415) 555-0134`, `415.555.0134`,
  `+1 415 555 0134`, `4155550134`, `1-415-555-0134`), region US;
- "mix": 85% of those, 8% international numbers (+44, +33, +49, +61), 7% junk.
The reference is what normalize_phone stands for: phonenumbers.parse, is_valid_number and
format_number (E.164). The caches of normalize_phone are emptied before each of its runs, and
one number per country code is normalized beforehand, so the figures leave out the one-off
compilation of a country's metadata. Figures are ns per number, median over the runs; results
go to stdout as a Markdown table.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from syncd.mapping import phones  # noqa: E402
from syncd.mapping.transforms import TransformError, normalize_phone  # noqa: E402

AREA_CODES = [
    "201", "206", "212", "213", "214", "303", "305", "310", "312", "404", "415", "503", "512",
    "602", "615", "617", "646", "702", "704", "713", "718", "801", "818", "917", "919",
]  # fmt: skip
US_FORMS = [
    "({a}) {e}-{n}",
    "{a}.{e}.{n}",
    "+1 {a} {e} {n}",
    "{a}{e}{n}",
    "1-{a}-{e}-{n}",
]
INTERNATIONAL_FORMS = [
    "+44 20 7946 {n}",
    "+33 1 {p} {q} {r} {s}",
    "+49 30 {e}{n}",
    "+61 2 {e}{p} {n}",
]
JUNK = ["n/a", "none", "123", "0000000000", "555-CALL-NOW", "x", "415 555", "call me", "+", "-"]


def us_number(rng: random.Random) -> str:
    form = rng.choice(US_FORMS)
    exchange = f"{rng.randint(2, 9)}{rng.randint(0, 99):02}"
    return form.format(a=rng.choice(AREA_CODES), e=exchange, n=f"{rng.randint(0, 9999):04}")


def international_number(rng: random.Random) -> str:
    pairs = {key: f"{rng.randint(10, 99)}" for key in "pqrs"}
    return rng.choice(INTERNATIONAL_FORMS).format(
        e=f"{rng.randint(200, 999)}", n=f"{rng.randint(0, 9999):04}", **pairs
    )


def workloads(count: int, seed: int) -> dict[str, list[str]]:
    rng = random.Random(seed)
    us: set[str] = set()
    while len(us) < count:
        us.add(us_number(rng))
    mix: list[str] = []
    for index, number in enumerate(sorted(us, key=lambda _: rng.random())):
        roll = rng.random()
        if roll < 0.08:
            mix.append(international_number(rng))
        elif roll < 0.15:
            mix.append(f"{rng.choice(JUNK)} #{index}" if rng.random() < 0.5 else rng.choice(JUNK))
        else:
            mix.append(number)
    return {"US distinct": sorted(us, key=lambda _: rng.random()), "mix": mix}


def reference(raw: str, region: str) -> str:
    try:
        return phones.reference_e164(raw, region)
    except phones.PhoneError as error:
        return str(error)


def new(raw: str, region: str) -> str:
    try:
        return normalize_phone(raw, region)
    except TransformError as error:
        return str(error)


def clear_caches() -> None:
    phones._digits_to_e164.cache_clear()
    phones._reference_cached.cache_clear()


def ns_per_number(fn: Callable[[str, str], str], numbers: list[str], fresh: bool) -> float:
    if fresh:
        clear_caches()
    start = time.perf_counter_ns()
    for raw in numbers:
        fn(raw, "US")
    return (time.perf_counter_ns() - start) / len(numbers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--numbers", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    loads = workloads(args.numbers, args.seed)
    for raw in ["+1 415 555 0134", "+44 20 7946 0000", "+33 1 42 68 53 00", "+49 30 1234567"]:
        new(raw, "US")
    for numbers in loads.values():
        mismatches = sum(reference(raw, "US") != new(raw, "US") for raw in numbers)
        if mismatches:
            raise SystemExit(f"{mismatches} numbers normalized differently from phonenumbers")

    print(f"{args.numbers} numbers per workload, region US, median of {args.runs} runs\n")
    print("| workload | phonenumbers ns/number | normalize_phone ns/number | speed-up |")
    print("|---|---:|---:|---:|")
    for name, numbers in loads.items():
        old = statistics.median(ns_per_number(reference, numbers, False) for _ in range(args.runs))
        fast = statistics.median(ns_per_number(new, numbers, True) for _ in range(args.runs))
        print(f"| {name} | {old:,.0f} | {fast:,.0f} | {old / fast:.1f}x |")


if __name__ == "__main__":
    main()
