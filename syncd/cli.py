"""The command line. Exit codes: 0 success, 1 a failed run, 2 bad config, a store that cannot be
opened, or bad usage."""

from __future__ import annotations

import importlib
import json
import sys
import textwrap
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.progress import Progress as RichProgress
from rich.progress import SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Column, Table
from rich.text import Text
from sqlalchemy import Engine

import connectors
from syncd import log
from syncd.config import Config, load_config
from syncd.daemon import ingest_app, ingest_source, run_daemon, serve_ingest
from syncd.demo.live import DEMO_WRITE_KEY, pointed_at, running_emulators
from syncd.demo.sample_files import write_sample_files
from syncd.errors import ConfigError, Problem, StoreError, SyncdError
from syncd.ingest.server import running
from syncd.ingest.simulator import simulate
from syncd.inspect import NotFoundError, explain, export_profiles, status
from syncd.mapping.compiler import Mappings, compile_mappings, compile_profile
from syncd.mapping.destinations import DestinationMappings, compile_destinations
from syncd.pii import mask
from syncd.process import tune_garbage_collector
from syncd.push import preview
from syncd.runner import Pipeline, Progress, RunSummary
from syncd.store.db import Bulk, open_store, transaction
from syncd.store.writer import WriteCounts

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
profiles_app = typer.Typer(no_args_is_help=True, help="Profiles in the store.")
app.add_typer(profiles_app, name="profiles")
quarantine_app = typer.Typer(no_args_is_help=True, help="Records that could not be mapped.")
app.add_typer(quarantine_app, name="quarantine")

ConfigOption = Annotated[
    Path, typer.Option("--config", "-c", help="path to syncd.toml", envvar="SYNCD_CONFIG")
]
DEFAULT_CONFIG = Path("syncd.toml")
out = Console()
err = Console(stderr=True)
UNCUT_WIDTH = 1_000_000
"""The width of output that is not a terminal (a pipe, a file, cron's mail): wider than any
line syncd prints, so that no run id, location or record name is cut or wrapped where scripts
read it and people copy it into the next command."""


@app.callback()
def _uncut_off_a_terminal() -> None:
    for console in (out, err):
        if not console.is_terminal:
            console.width = UNCUT_WIDTH


def _whole(header: str) -> Column:
    """A column of ids, locations or record names, which are copied into other commands: on a
    narrow terminal the other columns wrap first."""
    return Column(header, no_wrap=True)


@dataclass(frozen=True)
class Project:
    """A validated config with every compiled mapping: streams and destinations."""

    config: Config
    mappings: Mappings
    destinations: DestinationMappings


def _load_config(config_path: Path) -> Config:
    """The config, or exit 2 listing every problem."""
    try:
        return load_config(config_path)
    except ConfigError as error:
        _exit_with_problems(error.problems)


def _load(config_path: Path) -> Project:
    """Config and every mapping, or exit 2 listing every problem."""
    config = _load_config(config_path)
    problems = []
    mappings = destinations = None
    try:
        mappings = compile_mappings(config)
    except ConfigError as error:
        problems.extend(error.problems)
    try:
        destinations = compile_destinations(config)
    except ConfigError as error:
        problems.extend(error.problems)
    if problems or mappings is None or destinations is None:
        _exit_with_problems(problems)
    return Project(config, mappings, destinations)


def _exit_with_problems(problems: list[Problem]) -> NoReturn:
    for problem in problems:
        # Plain print: one problem per line however narrow the terminal, for grep and CI.
        print(problem, file=sys.stderr)
    err.print(f"{len(problems)} problem(s); nothing was run.", style="bold red")
    raise typer.Exit(2)


def _setup(config_path: Path) -> tuple[Project, Engine]:
    """For the commands that map records: the config, every mapping and the store."""
    project = _load(config_path)
    return project, _open(project.config)


def _setup_reader(config_path: Path) -> tuple[Config, Engine]:
    """For the commands that only read the store: the config and the store, no mapping, so
    that a broken mapping never blocks the commands an operator needs to find out why."""
    config = _load_config(config_path)
    return config, _open(config)


def _open(config: Config) -> Engine:
    """The sync log set up and the store opened."""
    log_file = Path(config.logging.file) if config.logging.file else None
    if log_file is not None and not log_file.is_absolute():
        log_file = config.base_dir / log_file
    try:
        log.configure(config.logging.level, log_file)
    except OSError as error:
        _exit_with_problems(
            [
                Problem(
                    str(config.path),
                    "logging.file",
                    f"cannot write the log at {log_file}: {error.strerror}",
                    "give the path of a file in a folder syncd may create or write",
                )
            ]
        )
    try:
        engine = open_store(config.store_url)
    except StoreError as error:
        err.print(str(error), markup=False)
        # Nothing has run: like a bad config, the store must be fixed before anything can.
        raise typer.Exit(2) from None
    return engine


def _pipeline(project: Project, engine: Engine, progress: Progress | None = None) -> Pipeline:
    return Pipeline(
        project.config, project.mappings, engine, progress, destinations=project.destinations
    )


class TerminalProgress:
    """A rich progress display on a terminal."""

    def __init__(self, progress: RichProgress) -> None:
        self._progress = progress
        self._tasks: dict[tuple[str, str], TaskID] = {}

    def stream_started(self, source: str, stream: str) -> None:
        self._tasks[(source, stream)] = self._progress.add_task(f"{source}/{stream}", total=None)

    def page_done(self, source: str, stream: str, records: int, counts: WriteCounts) -> None:
        self._progress.advance(self._tasks[(source, stream)], records)

    def stage(self, name: str) -> None:
        self._progress.add_task(name, total=None)


class LineProgress:
    """Plain lines when output is not a terminal (cron, CI, a pipe)."""

    def stream_started(self, source: str, stream: str) -> None:
        print(f"pulling {source}/{stream}", flush=True)

    def page_done(self, source: str, stream: str, records: int, counts: WriteCounts) -> None:
        print(
            f"{source}/{stream}: {records} records, {counts.new} new, {counts.changed} changed, "
            f"{counts.unchanged} unchanged, {counts.deleted} deleted, {counts.events_new} events",
            flush=True,
        )

    def stage(self, name: str) -> None:
        print(f"{name}…", flush=True)


def _add_row(table: Table, *cells: str) -> None:
    """A row of data, shown as it is: text from records is never read as rich markup (a trait
    holding "[/]" would stop the command, "[b]" would vanish)."""
    table.add_row(*(Text(cell) for cell in cells))


def _print_summary(summary: RunSummary) -> None:
    # Not the table's title: a title wraps at the width of its table, which is narrower.
    out.print(f"run {summary.run_id}: {summary.status}", markup=False)
    table = Table(show_header=False)
    for name, value in sorted(summary.counts.items()):
        _add_row(table, name, str(value))
    out.print(table)
    for error in summary.errors:
        err.print(error, markup=False, style="red")


@app.command()
def validate(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Check the config and every mapping; exit 2 listing every problem."""
    project = _load(config)
    out.print(
        f"ok: {len(project.config.sources)} source(s), "
        f"{len(project.config.destinations)} destination(s), "
        f"{len(project.mappings.streams)} mapped stream(s), "
        f"{len(project.destinations.mappings)} destination mapping(s)"
    )


@app.command("run-once")
def run_once(
    config: ConfigOption = DEFAULT_CONFIG,
    source: Annotated[list[str] | None, typer.Option("--source", help="only this source")] = None,
    full: Annotated[bool, typer.Option("--full", help="ignore cursors: pull everything")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="pull and map, write nothing")] = False,
    destination: Annotated[
        list[str] | None, typer.Option("--destination", help="only push to this destination")
    ] = None,
) -> None:
    """Pull, map, store, unify, refresh profiles and push once (a backfill with --full)."""
    project, engine = _setup(config)
    loaded = project.config
    for kind, asked, known in (
        ("source", source, loaded.sources),
        ("destination", destination, loaded.destinations),
    ):
        unknown = [name for name in asked or [] if name not in known]
        if unknown:
            err.print(f"unknown {kind}(s): {', '.join(unknown)}; configured: {', '.join(known)}")
            raise typer.Exit(2)
    if sys.stdout.isatty():
        columns = (
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TextColumn("{task.completed}"),
            TimeElapsedColumn(),
        )
        with RichProgress(*columns, console=out, transient=True) as bar:
            summary = _pipeline(project, engine, TerminalProgress(bar)).run_once(
                source, full, dry_run, destination
            )
    else:
        summary = _pipeline(project, engine, LineProgress()).run_once(
            source, full, dry_run, destination
        )
    _print_summary(summary)
    raise typer.Exit(0 if summary.status == "ok" else 1)


@app.command()
def rebuild(
    config: ConfigOption = DEFAULT_CONFIG,
    verify: Annotated[
        bool, typer.Option("--verify", help="rebuild in a rolled-back transaction and compare")
    ] = False,
) -> None:
    """Map the stored raw records again and resolve identity from scratch."""
    project, engine = _setup(config)
    pipeline = _pipeline(project, engine)
    if verify:
        differences = pipeline.verify()
        for line in differences:
            out.print(line, markup=False)
        out.print(
            "verify: DIFFERENT; syncd rebuild applies the rebuild to the store"
            if differences
            else "verify: the store equals a rebuild",
            markup=False,
        )
        raise typer.Exit(1 if differences else 0)
    _print_summary(pipeline.rebuild())


@app.command("plan")
def plan_command(
    config: ConfigOption = DEFAULT_CONFIG,
    show: Annotated[int, typer.Option(help="planned pushes to list")] = 20,
) -> None:
    """What the next push would send to each destination, and why; sends nothing."""
    project, engine = _setup(config)
    planned = preview(project.config, engine, project.destinations)
    counts = Counter((p.destination, p.target, str(p.change)) for p in planned)
    table = Table("destination", "target", "change", "profiles", title="next push")
    for (destination, target, change), count in sorted(counts.items()):
        _add_row(table, destination, target, change, str(count))
    out.print(table)
    listed = Table(
        "destination/target", _whole("profile"), "match", "fields", title=f"first {show}"
    )
    for item in planned[:show]:
        _add_row(
            listed,
            f"{item.destination}/{item.target}",
            item.state.profile_id,
            mask("email" if "@" in item.state.match_value else "id", item.state.match_value),
            ", ".join(sorted(item.state.fields)),
        )
    out.print(listed)


@app.command("status")
def status_command(
    config: ConfigOption = DEFAULT_CONFIG,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """What the store holds, where each stream's cursor is, and the latest runs."""
    loaded, engine = _setup_reader(config)
    cursor_words = {
        name: entry.spec.describe_cursor
        for name, entry in loaded.sources.items()
        if entry.spec.describe_cursor is not None
    }
    with transaction(engine) as bulk:
        report = status(bulk, cursor_words)
    if as_json:
        print(json.dumps(report, indent=2))
        return
    counts = Table(title="store", show_header=False)
    for key in (
        "records",
        "deleted_records",
        "profiles",
        "events",
        "identifiers",
        "quarantined",
        "pending_unify",
    ):
        _add_row(counts, key, str(report[key]))
    out.print(counts)
    cursors = Table("source/stream", "position", "updated", title="cursors")
    for cursor in report["cursors"]:
        _add_row(
            cursors,
            f"{cursor['source']}/{cursor['stream']}",
            cursor["position"],
            cursor["updated_at"],
        )
    out.print(cursors)
    runs = Table(_whole("run"), "kind", "status", "started", "counts", title="latest runs")
    for run in report["runs"]:
        shown = ", ".join(f"{k}={v}" for k, v in sorted((run["counts"] or {}).items()))
        _add_row(runs, run["id"], run["kind"], run["status"], run["started_at"], shown)
    out.print(runs)
    for run in report["runs"]:
        if run["error"]:
            out.print(f"run {run['id']} {run['status']}:", markup=False)
            out.print(textwrap.indent(run["error"], "  "), markup=False, style="red")


@app.command("explain")
def explain_command(
    query: Annotated[str, typer.Argument(help="an email, a phone, an id, or a profile id")],
    config: ConfigOption = DEFAULT_CONFIG,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """A profile: traits with the record each came from, identifiers, records and merges."""
    loaded, engine = _setup_reader(config)
    try:
        rules = compile_profile(loaded)
    except ConfigError as error:
        _exit_with_problems(error.problems)
    try:
        with transaction(engine) as bulk:
            found = explain(bulk, loaded.identity, rules, query)
    except NotFoundError as error:
        err.print(str(error))
        raise typer.Exit(1) from None
    if as_json:
        print(json.dumps(vars(found), indent=2, default=str))
        return
    if found.other_profiles:
        held_by = [found.profile_id, *found.other_profiles]
        out.print(
            f"{len(held_by)} profiles hold {query.strip()}: {', '.join(held_by)}; this is "
            f"{found.profile_id}. Run syncd explain with each profile id to see the others.",
            markup=False,
            style="yellow",
        )
    out.print(f"[bold]profile {found.profile_id}[/bold]")
    traits = Table("trait", "value", _whole("from record"), title="traits")
    for name, value in sorted(found.traits.items()):
        _add_row(
            traits, name, json.dumps(value, default=str), found.trait_origin.get(name, "computed")
        )
    out.print(traits)
    identifiers = Table("kind", _whole("value"), title="identifiers")
    for kind, value in found.identifiers:
        _add_row(identifiers, kind, value)
    out.print(identifiers)
    records = Table("source", "stream", _whole("id"), "updated", "notes", title="records")
    for record in found.records:
        _add_row(
            records,
            record["source"],
            record["stream"],
            record["id"],
            record["updated_at"] or "",
            "; ".join(record["notes"]),
        )
    out.print(records)
    merges = Table("when", "action", "identifier", _whole("records"), "reason", title="merge log")
    for merge in found.merges:
        _add_row(
            merges,
            merge["at"],
            merge["action"],
            merge["identifier"] or "",
            "\n".join(merge["records"]),
            merge["reason"],
        )
    out.print(merges)
    if found.event_count:
        events = Table(
            "when",
            "event",
            "stream",
            title=f"events (last {len(found.events)} of {found.event_count})",
        )
        for event in found.events:
            _add_row(events, event["occurred_at"], event["name"], event["stream"])
        out.print(events)


@profiles_app.command("export")
def profiles_export(
    config: ConfigOption = DEFAULT_CONFIG,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="file (default stdout)")
    ] = None,
) -> None:
    """Every profile as one JSON line: profile_id, traits, identifiers, records."""
    _, engine = _setup_reader(config)
    try:
        handle = output.open("w", encoding="utf-8") if output else sys.stdout
    except OSError as error:
        err.print(f"cannot write {output}: {error.strerror}; give a file in a folder that exists")
        raise typer.Exit(2) from None
    try:
        with transaction(engine) as bulk:
            for profile in export_profiles(bulk):
                handle.write(json.dumps(profile, sort_keys=True, default=str) + "\n")
    finally:
        if output:
            handle.close()


@quarantine_app.command("list")
def quarantine_list(
    config: ConfigOption = DEFAULT_CONFIG,
    everything: Annotated[bool, typer.Option("--all", help="also the replayed ones")] = False,
) -> None:
    """Quarantined records: where they came from and why."""
    _, engine = _setup_reader(config)
    with transaction(engine) as bulk:
        rows = bulk.connection.exec_driver_sql(
            "SELECT id, created_at, source, stream, location, reason, replayed_at FROM quarantine "
            + ("" if everything else "WHERE replayed_at IS NULL ")
            + "ORDER BY id"
        ).all()
    table = Table(
        "id", "when", "source/stream", _whole("location"), "reason", "replayed", title="quarantine"
    )
    for key, at, source, stream, location, reason, replayed in rows:
        _add_row(table, str(key), at, f"{source}/{stream}", location, reason, replayed or "")
    out.print(table)


@quarantine_app.command("replay")
def quarantine_replay(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Map quarantined records again (after fixing a mapping); those that pass are stored."""
    project, engine = _setup(config)
    summary = _pipeline(project, engine).replay_quarantine()
    _print_summary(summary)
    raise typer.Exit(0 if summary.status == "ok" else 1)


@app.command("logs")
def logs_command(
    config: ConfigOption = DEFAULT_CONFIG,
    run: Annotated[
        str | None, typer.Option("--run", help="only this run (its id, or the start of it)")
    ] = None,
    level: Annotated[str | None, typer.Option("--level", help="at least this level")] = None,
    event: Annotated[
        str | None, typer.Option("--event", help="only lines whose event contains this")
    ] = None,
    raw: Annotated[bool, typer.Option("--json", help="print the JSON lines as they are")] = False,
) -> None:
    """Filter and pretty-print the JSON sync log."""
    loaded = _load_config(config)
    if not loaded.logging.file:
        err.print("logging.file is not set in the config; nothing to read")
        raise typer.Exit(2)
    path = Path(loaded.logging.file)
    path = path if path.is_absolute() else loaded.base_dir / path
    if not path.exists():
        err.print(f"no log yet at {path}")
        raise typer.Exit(1)
    if level is not None and level.lower() not in log.LEVELS:
        err.print(f"unknown --level {level!r}; use one of: {', '.join(log.LEVELS)}")
        raise typer.Exit(2)
    floor = log.LEVELS[level.lower()] if level else 0
    run_id = _run_named(path, run) if run else None
    for line, entry in _log_entries(path):
        if run_id and entry.get("run_id") != run_id:
            continue
        if log.LEVELS.get(entry.get("level", "info"), 20) < floor:
            continue
        if event and event not in str(entry.get("event", "")):
            continue
        if raw:
            print(line.rstrip("\n"))
            continue
        extra = " ".join(
            f"{k}={v}"
            for k, v in sorted(entry.items())
            if k not in {"timestamp", "level", "event", "run_id"}
        )
        # One line per entry, never wrapped: for grep and less as much as for eyes.
        print(
            f"{entry.get('timestamp', '')} {entry.get('level', ''):7} "
            f"{entry.get('run_id', '')} {entry.get('event', '')} {extra}"
        )


def _log_entries(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """Each line of the sync log with its entry; a line cut short by a crash is skipped."""
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(entry, dict):
                yield line, entry


def _run_named(path: Path, asked: str) -> str:
    """The run id in the log that `asked` is, or is the start of: ids are long to type."""
    found = set()
    for _, entry in _log_entries(path):
        run_id = entry.get("run_id")
        if run_id == asked:
            return asked
        if isinstance(run_id, str) and run_id.startswith(asked):
            found.add(run_id)
    if not found:
        err.print(f"no run id in {path} is or begins with {asked!r}", markup=False)
        raise typer.Exit(1)
    if len(found) > 1:
        err.print(f"{len(found)} run ids begin with {asked!r}; give more of one:", markup=False)
        for run_id in sorted(found):
            print(run_id, file=sys.stderr)
        raise typer.Exit(2)
    return found.pop()


@app.command()
def serve(
    config: ConfigOption = DEFAULT_CONFIG,
    host: Annotated[str | None, typer.Option(help="address to listen on")] = None,
    port: Annotated[int | None, typer.Option(help="port (0 picks a free one)")] = None,
) -> None:
    """Serve the event ingest endpoint alone (identify/track/page/... from analytics SDKs)."""
    project, engine = _setup(config)
    try:
        serve_ingest(
            project.config, engine, host, port, ready=lambda url: out.print(f"listening on {url}")
        )
    except ConfigError as error:
        _exit_with_problems(error.problems)


@app.command()
def run(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """The daemon: every source on its schedule, pushes after each pass, and the ingest endpoint."""
    project, engine = _setup(config)

    def ready(url: str) -> None:
        out.print(f"syncd running; ingest endpoint {url}" if url else "syncd running")

    try:
        run_daemon(project.config, project.mappings, engine, ready=ready)
    except ConfigError as error:
        _exit_with_problems(error.problems)


@app.command()
def emulate(
    system: Annotated[str, typer.Argument(help="a connector with an emulator, e.g. salesforce")],
    port: Annotated[int, typer.Option(help="loopback port to serve on")] = 8900,
    people: Annotated[int, typer.Option(help="sample people to seed")] = 500,
    seed: Annotated[int, typer.Option(help="seed of the sample population")] = 7,
) -> None:
    """Serve a connector's loopback emulator in the foreground, to try mappings safely."""
    try:
        module = importlib.import_module(f"connectors.{system}.emulator")
    except ModuleNotFoundError:
        known = sorted(
            p.parent.name for p in Path(connectors.__file__).parent.glob("*/emulator.py")
        )
        err.print(f"no emulator for {system!r}; known: {', '.join(known)}")
        raise typer.Exit(2) from None
    # The emulator says where it listens, what it holds and how to point syncd.toml at it.
    module.serve_forever(port=port, people=people, seed=seed)


@app.command()
def demo(
    config: ConfigOption = DEFAULT_CONFIG,
    people: Annotated[int, typer.Option(help="sample people in each emulated CRM")] = 300,
) -> None:
    """The pipeline end to end on the sample inbox and both emulated CRMs, twice.

    The second pass shows that unchanged input changes nothing.
    """
    project, engine = _setup(config)
    loaded = project.config
    for entry in loaded.sources.values():
        folder_name = getattr(entry.options, "folder", None)
        if entry.spec.kind == "files" and folder_name:
            folder = loaded.base_dir / folder_name
            if not folder.is_dir() or not any(folder.iterdir()):
                written = write_sample_files(folder, people)
                out.print(f"wrote sample files into {folder}: {written}")
    with running_emulators(people) as emulators:
        aimed = pointed_at(loaded, emulators)
        out.print(
            f"Salesforce emulator at {emulators.salesforce.url}, "
            f"HubSpot emulator at {emulators.hubspot.url}"
        )
        if ingest_source(aimed) is not None:
            with running(ingest_app(aimed, engine)) as url:
                sent = simulate(url, DEMO_WRITE_KEY, people=min(people, 120))
            out.print(
                f"simulated shop: {sent.messages} events from {sent.people} visitors "
                f"({sent.identified} logged in) sent to the ingest endpoint at {url}"
            )
        pipeline = Pipeline(
            aimed, project.mappings, engine, LineProgress(), destinations=project.destinations
        )
        first = pipeline.run_once()
        _print_summary(first)
        second = pipeline.run_once()
        _print_summary(second)
    out.print(
        f"first pass: pushed {first.counts.get('push_pushed_ok', 0)} record(s) to the CRMs. "
        f"second pass: pulled {second.counts.get('changed', 0)} of our own writes back, "
        f"{second.counts.get('new', 0)} new record(s), "
        f"{second.counts.get('profiles_written', 0)} profile(s) changed, "
        f"{second.counts.get('push_planned', 0)} record(s) pushed"
    )
    with transaction(engine) as bulk:
        example = _demo_example(bulk)
    if example:
        out.print(
            f"\nexplore: syncd explain {example}   (CRM records, web visits before and after "
            "login, merges and their reasons)\n         syncd profiles export    syncd status"
        )
    raise typer.Exit(0 if first.status == second.status == "ok" else 1)


def _demo_example(bulk: Bulk) -> str | None:
    """The email of a person found in the CRMs and on the website, for `syncd explain`."""
    rows = bulk.connection.exec_driver_sql(
        "SELECT p.traits FROM profile p WHERE p.record_count > 2 ORDER BY p.id"
    )
    for (traits,) in rows:
        loaded = Bulk.decode(traits)
        sources = set(loaded.get("sources") or [])
        if {"web", "salesforce"} <= sources and loaded.get("email"):
            return str(loaded["email"])
    return None


def main() -> None:
    """Entry point: typer app with syncd's errors turned into messages and exit codes."""
    tune_garbage_collector()
    try:
        app()
    except SyncdError as error:
        err.print(str(error), markup=False)
        sys.exit(1)
