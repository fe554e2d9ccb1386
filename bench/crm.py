"""Benchmark: the Salesforce and HubSpot connectors against their loopback emulators.

    .venv/bin/python bench/crm.py --people 100000 --runs 3 --push 20000

Each emulator runs in a child process of its own (seeded there; seeding is not timed), so on
a multi-core machine the figures are the connector's, not the emulator's GIL share.

1. Pull: a full read (cursor None) through the connector's Source, built as production
   builds it (`make_source(ConnectorContext(...))` from a loaded syncd.toml), of Salesforce
   Contact + Lead and of HubSpot contacts, for `--people` sample people; records/s, median
   over `--runs`. Salesforce uses its default options (a full read of more than 50,000
   records of one object runs as a Bulk 2.0 query job, polled every 2 s). HubSpot is read
   from an emulator without its request budget, with a connector budget far above what it
   can use, so the figure is the connector's own throughput, not HubSpot's rate limit.
2. Push under a binding rate limit, through the engine (`syncd.push.run_push`, its planner
   and ledger, on SQLite in a temporary folder): `--push` HubSpot contacts change at the
   source, an incremental pull turns them into changed profiles, and the push sends them to
   a HubSpot emulator enforcing HubSpot's 100 requests / 10 s, through the destination with
   its default budget (100 / 10 s). Reported: budget use (requests ÷ (elapsed / 10 s x 100)),
   429 answers, write amplification (records written, counted in the emulator's write log,
   ÷ records changed), then a second push of the same state, which must send nothing.

The setup of part 2 (first pull, and a first push that fills the ledger) runs against a
second emulator with the same seed and no budget, so only the measured push is rate-limited.
Results go to stdout as a Markdown table.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from textwrap import dedent
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from connectors.hubspot.emulator import DEFAULT_TOKEN, HubSpotEmulator  # noqa: E402
from connectors.salesforce.emulator import DEFAULT_CREDENTIALS, SalesforceEmulator  # noqa: E402
from syncd import log  # noqa: E402
from syncd.config import Config, load_config  # noqa: E402
from syncd.connector import ConnectorContext  # noqa: E402
from syncd.mapping.compiler import compile_mappings  # noqa: E402
from syncd.mapping.destinations import compile_destinations  # noqa: E402
from syncd.push import PushReport, run_push  # noqa: E402
from syncd.runner import Pipeline  # noqa: E402
from syncd.store.db import open_store  # noqa: E402

SEED = 7
BULK_THRESHOLD = 50_000  # SalesforceOptions.bulk_query_threshold, left at its default
HUBSPOT_LIMIT = (100, 10.0)  # HubSpot Free/Starter burst limit, and the destination's default
ENV = {
    "BENCH_SF_PASSWORD": DEFAULT_CREDENTIALS.password,
    "BENCH_SF_TOKEN": DEFAULT_CREDENTIALS.security_token,
    "BENCH_HS_TOKEN": DEFAULT_TOKEN,
}

# -- emulators in child processes -------------------------------------------------------------


def _stats(emulator: Any) -> dict[str, Any]:
    """Requests answered by status, and (status, records) of every write request."""
    if isinstance(emulator, HubSpotEmulator):
        statuses = Counter(status for _, status in emulator.requests())
        writes = [
            (
                entry.status,
                len(entry.body.get("inputs") or []) if isinstance(entry.body, dict) else 0,
            )
            for entry in emulator.write_log
        ]
        return {"statuses": statuses, "writes": writes}
    return {"writes": len(emulator.writes)}


def _contacts(emulator: HubSpotEmulator, count: int) -> list[str]:
    return [record.id for record in emulator.records("contacts")[:count]]


def _sizes(emulator: SalesforceEmulator) -> dict[str, int]:
    return {sobject: len(emulator.ids(sobject)) for sobject in ("Contact", "Lead")}


COMMANDS: dict[str, Callable[..., Any]] = {
    "stats": _stats,
    "contacts": _contacts,
    "sizes": _sizes,
    "modify": lambda emulator, *args: emulator.modify(*args),
}


def _serve(kind: str, kwargs: dict[str, Any], conn: Connection) -> None:
    """Child process: seed and serve one emulator, answer commands until told to stop."""
    log.configure("warning", None, quiet_terminal=True)
    started = time.perf_counter()
    emulator: Any = HubSpotEmulator(**kwargs) if kind == "hubspot" else SalesforceEmulator(**kwargs)
    with emulator:
        conn.send((emulator.url, time.perf_counter() - started))
        while True:
            command, args = conn.recv()
            if command == "stop":
                break
            conn.send(COMMANDS[command](emulator, *args))


class Remote:
    """An emulator served by a child process."""

    def __init__(self, kind: str, **kwargs: Any) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_serve, args=(kind, kwargs, child), daemon=True)
        self._process.start()
        self.url = ""
        self.seeded_in = 0.0

    def ready(self) -> Remote:
        """Wait for the child to have seeded and bound its emulator."""
        if not self._conn.poll(900):
            raise RuntimeError("the emulator did not start")
        self.url, self.seeded_in = self._conn.recv()
        return self

    def call(self, command: str, *args: Any) -> Any:
        self._conn.send((command, args))
        return self._conn.recv()

    def stop(self) -> None:
        if self._process.is_alive():
            self._conn.send(("stop", ()))
            self._process.join(30)


# -- configuration ------------------------------------------------------------------------------

HS_CONTACTS = """
source = "hubspot"
stream = "contacts"
primary_key = "id"
updated_at = "updatedAt"

[identifiers]
email = "properties.email"

[fields]
first_name = "properties.firstname | trim | title"
last_name = "properties.lastname | trim"
city = "properties.city | trim"
email = { from = "properties.email | email", on_error = "null" }
hubspot_id = "id"
"""

TO_HUBSPOT = """
destination = "hubspot"
target = "contacts"
match = { identifier = "email" }
when = [{ trait = "hubspot_id", op = "exists" }]

[fields]
firstname = "first_name"
lastname = "last_name"
city = "city"
"""


def _write_config(path: Path, body: str) -> Config:
    path.write_text(dedent(body), encoding="utf-8")
    return load_config(path)


def pull_config(folder: Path, sf_url: str, hs_url: str) -> Config:
    return _write_config(
        folder / "pull.toml",
        f"""
        [store]
        url = "sqlite:///{folder / "pull.db"}"

        [sources.salesforce]
        type = "salesforce"
        [sources.salesforce.options]
        instance_url = "{sf_url}"
        username = "{DEFAULT_CREDENTIALS.username}"
        password = {{ env = "BENCH_SF_PASSWORD" }}
        security_token = {{ env = "BENCH_SF_TOKEN" }}
        objects = ["Contact", "Lead"]

        [sources.hubspot]
        type = "hubspot"
        [sources.hubspot.options]
        access_token = {{ env = "BENCH_HS_TOKEN" }}
        host = "{hs_url}"
        objects = ["contacts"]
        budget = 1000000
        budget_window = 1.0
        """,
    )


def push_config(
    folder: Path, name: str, source_url: str, destination_url: str, free: bool
) -> Config:
    """The push project: HubSpot contacts in, HubSpot contacts out (budget default or free)."""
    budget = "budget = 1000000\n        budget_window = 1.0" if free else ""
    return _write_config(
        folder / name,
        f"""
        [store]
        url = "sqlite:///{folder / "push.db"}"

        [logging]
        file = "syncd.log"
        level = "warning"

        [sources.hubspot]
        type = "hubspot"
        [sources.hubspot.options]
        access_token = {{ env = "BENCH_HS_TOKEN" }}
        host = "{source_url}"
        objects = ["contacts"]
        properties = {{ contacts = ["email", "firstname", "lastname", "city"] }}
        budget = 1000000
        budget_window = 1.0

        [destinations.hubspot]
        type = "hubspot"
        [destinations.hubspot.options]
        access_token = {{ env = "BENCH_HS_TOKEN" }}
        host = "{destination_url}"
        {budget}
        """,
    )


# -- measurements ---------------------------------------------------------------------------


def full_read(config: Config, name: str) -> tuple[int, float]:
    """Records of a full read of every stream of source `name`, and the seconds it took."""
    entry = config.sources[name]
    factory = entry.spec.make_source
    assert factory is not None
    started = time.perf_counter()
    source = factory(ConnectorContext(entry.name, entry.options, config.base_dir, config.store_url))
    records = 0
    try:
        for stream in source.streams():
            for page in source.read(stream, None):
                records += len(page.records)
    finally:
        source.close()
    return records, time.perf_counter() - started


def bench_pull(config: Config, name: str, runs: int) -> dict[str, Any]:
    figures = [full_read(config, name) for _ in range(runs)]
    counts = {records for records, _ in figures}
    if len(counts) != 1:
        raise RuntimeError(f"{name}: full reads returned different counts {sorted(counts)}")
    seconds = statistics.median(s for _, s in figures)
    records = counts.pop()
    rates = sorted(records / s for _, s in figures)
    return {"records": records, "seconds": seconds, "rate": records / seconds, "rates": rates}


def _pushed(report: PushReport, expected_planned: int, what: str) -> None:
    counts = report.counts
    if (
        report.errors
        or counts["planned"] != expected_planned
        or counts["retry"]
        or counts["rejected"]
    ):
        raise RuntimeError(f"{what}: unexpected push report {dict(counts)} {report.errors}")


def bench_push(folder: Path, people: int, changed: int) -> dict[str, Any]:
    """Part 2; see the module docstring."""
    free = Remote("hubspot", people=people, seed=SEED, share=1.0, rate_limit=None)
    limited = Remote("hubspot", people=people, seed=SEED, share=1.0, rate_limit=HUBSPOT_LIMIT)
    try:
        free.ready()
        limited.ready()
        (folder / "mappings" / "destinations").mkdir(parents=True)
        (folder / "mappings" / "hs_contacts.toml").write_text(dedent(HS_CONTACTS), "utf-8")
        (folder / "mappings" / "destinations" / "hubspot.toml").write_text(
            dedent(TO_HUBSPOT), "utf-8"
        )
        setup = push_config(folder, "setup.toml", free.url, free.url, free=True)
        bench = push_config(folder, "bench.toml", free.url, limited.url, free=False)
        log.configure("warning", folder / "syncd.log", quiet_terminal=True)
        engine = open_store(setup.store_url)
        try:
            pipeline = Pipeline(setup, compile_mappings(setup), engine)
            first = pipeline.run_once(push=False)
            if first.status != "ok":
                raise RuntimeError(f"first pull failed: {first.errors}")
            _pushed(
                run_push(setup, engine, first.run_id, mappings=compile_destinations(setup)),
                people,
                "ledger fill",
            )
            # `changed` contacts move to another city at the source, then come back in.
            ids = free.call("contacts", changed)
            free.call("modify", "contacts", ids, {"city": "Benchmark City"})
            second = pipeline.run_once(push=False)
            if second.status != "ok":
                raise RuntimeError(f"incremental pull failed: {second.errors}")

            destinations = compile_destinations(bench)
            started = time.perf_counter()
            report = run_push(bench, engine, second.run_id, mappings=destinations)
            elapsed = time.perf_counter() - started
            _pushed(report, changed, "measured push")
            after_first = limited.call("stats")

            again = run_push(bench, engine, second.run_id, mappings=destinations)
            _pushed(again, 0, "second push")
            after_second = limited.call("stats")
        finally:
            engine.dispose()
    finally:
        free.stop()
        limited.stop()

    statuses = after_first["statuses"]
    sent = sum(statuses.values())
    written = sum(n for status, n in after_first["writes"] if 200 <= status < 300)
    limit, window = HUBSPOT_LIMIT
    return {
        "changed": changed,
        "profiles_written": second.counts.get("profiles_written", 0),
        "pushed_ok": report.counts["pushed_ok"],
        "requests": sent,
        "rate_limited": statuses.get(429, 0),
        "elapsed": elapsed,
        "budget_use": sent / (elapsed / window * limit),
        "window_max": limit * max(1, -(-elapsed // window)),
        "written": written,
        "amplification": written / changed,
        "second_planned": again.counts["planned"],
        "second_unchanged": again.counts["unchanged"],
        "second_requests": sum(after_second["statuses"].values()) - sent,
        "second_written": sum(n for s, n in after_second["writes"] if 200 <= s < 300) - written,
    }


# -- report -----------------------------------------------------------------------------------


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), {model}, Python {platform.python_version()}"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--people", type=int, default=100_000, help="sample people (pull)")
    parser.add_argument("--runs", type=int, default=3, help="full reads per connector")
    parser.add_argument("--push", type=int, default=20_000, help="changed records to push")
    parser.add_argument(
        "--push-people",
        type=int,
        default=None,
        help="contacts in the push account (default 1.25 x --push)",
    )
    args = parser.parse_args(argv)
    push_people = args.push_people or args.push + args.push // 4
    os.environ.update(ENV)
    log.configure("warning", None, quiet_terminal=True)

    command = shlex.join(
        [".venv/bin/python", "bench/crm.py", *(argv if argv is not None else sys.argv[1:])]
    )
    print(f"$ {command}")
    print(f"machine: {machine()}")
    print(
        f"people {args.people:,}, runs {args.runs}, push {args.push:,} changed of {push_people:,} contacts",
        flush=True,
    )

    sf = Remote("salesforce", people=args.people, seed=SEED)
    hs = Remote("hubspot", people=args.people, seed=SEED, rate_limit=None)
    try:
        sf.ready()
        hs.ready()
        sizes = sf.call("sizes")
        print(
            f"emulators seeded: Salesforce {sizes['Contact']:,} Contacts + {sizes['Lead']:,} Leads "
            f"in {sf.seeded_in:.1f} s, HubSpot in {hs.seeded_in:.1f} s",
            flush=True,
        )
        with tempfile.TemporaryDirectory(prefix="syncd-bench-crm-") as tmp:
            config = pull_config(Path(tmp), sf.url, hs.url)
            salesforce = bench_pull(config, "salesforce", args.runs)
            print(f"salesforce pull: {salesforce['rate']:,.0f} records/s", flush=True)
            hubspot = bench_pull(config, "hubspot", args.runs)
            print(f"hubspot pull: {hubspot['rate']:,.0f} records/s", flush=True)
    finally:
        sf.stop()
        hs.stop()

    with tempfile.TemporaryDirectory(prefix="syncd-bench-crm-push-") as tmp:
        push = bench_push(Path(tmp), push_people, args.push)

    def how(records: int) -> str:
        if records > BULK_THRESHOLD:
            return "a Bulk 2.0 query job (polled every 2 s)"
        return "REST pages of 2,000"

    def spread(figures: dict[str, Any]) -> str:
        return " to ".join(f"{rate:,.0f}" for rate in (figures["rates"][0], figures["rates"][-1]))

    print()
    print("| measure | figure | notes |")
    print("|---|---|---|")
    print(
        f"| Salesforce pull, Contact + Lead | **{salesforce['rate']:,.0f} records/s** | "
        f"{salesforce['records']:,} records in {salesforce['seconds']:.1f} s (median of "
        f"{args.runs}; range {spread(salesforce)}); default options: "
        f"{'; '.join(f'{n:,} {o} by {how(n)}' for o, n in sizes.items())} |"
    )
    print(
        f"| HubSpot pull, contacts | **{hubspot['rate']:,.0f} records/s** | "
        f"{hubspot['records']:,} records in {hubspot['seconds']:.1f} s (median of {args.runs}; "
        f"range {spread(hubspot)}); emulator without request budget, connector budget "
        f"1,000,000/s: the connector's own throughput, not HubSpot's limit (at 100 req/10 s, "
        f"pages of 100 cap a pull at 1,000 records/s) |"
    )
    print(
        f"| HubSpot push, budget use | **{push['budget_use']:.0%}** | {push['requests']} "
        f"requests in {push['elapsed']:.1f} s against 100 req/10 s = requests ÷ (elapsed/10 s x "
        f"100); a sliding window allows at most {push['window_max']:.0f} in that time "
        f"({push['requests'] / push['window_max']:.0%} of it) |"
    )
    accepted = push["requests"] - push["rate_limited"]
    print(
        f"| HubSpot push, batch requests | **{accepted}** accepted | "
        f"{push['written'] / accepted:.1f} records per request; "
        f"{-(-push['changed'] // 100)} would carry {push['changed']:,} records in full batches "
        f"of 100 |"
    )
    print(
        f"| HubSpot push, 429 answers | **{push['rate_limited']}** | destination's default "
        f"budget (100 per 10 s) vs emulator at HubSpot's 100 per 10 s |"
    )
    print(
        f"| HubSpot push, write amplification | **{push['amplification']:.2f}** | "
        f"{push['written']:,} records written (emulator write log) ÷ {push['changed']:,} "
        f"changed (of {push_people:,}); {push['pushed_ok']:,} OK in the ledger |"
    )
    print(
        f"| second push, same state | **{push['second_requests']} requests, "
        f"{push['second_written']} records written** | `run_push` planned "
        f"{push['second_planned']}, {push['second_unchanged']:,} unchanged (ledger) |"
    )


if __name__ == "__main__":
    main()
