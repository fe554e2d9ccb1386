"""Building a syncd project (config + mappings) in a temporary folder, and a scripted source."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from textwrap import dedent

from sqlalchemy import Engine

from syncd.config import Config, ConnectorEntry, load_config
from syncd.connector import JsonValue, Page, RawRecord, Source
from syncd.mapping.compiler import Mappings, compile_mappings
from syncd.runner import Pipeline
from syncd.store.db import open_store

PEOPLE_MAPPING = """
source = "crm"
stream = "people"
primary_key = "id"
updated_at = "updated_at | datetime"

[identifiers]
email = "email"
phone = "phone"
user_id = "user_id"

[fields]
name = "name | trim | title"
email = { from = "email | email", on_error = "null" }
score = { from = "score", type = "int" }
"""

VISITS_MAPPING = """
source = "crm"
stream = "visits"
type = "events"
event_id = "id"
event_name = "'Page Viewed'"
timestamp = "at | datetime"

[identifiers]
email = "email"
user_id = "user_id"
"""
"""Page views with the identifiers the visitor had (see `visits_project`)."""

PROFILE_RULES = """
[traits.score]
rule = "max"

[computed.record_count]
op = "count"
over = "records"
"""


def write_project(
    folder: Path,
    store_url: str,
    mappings: dict[str, str] | None = None,
    extra_config: str = "",
) -> Path:
    """Write syncd.toml and mappings/ into `folder`; returns the config path."""
    (folder / "mappings").mkdir(parents=True, exist_ok=True)
    (folder / "inbox").mkdir(exist_ok=True)
    for name, text in (
        mappings or {"people.toml": PEOPLE_MAPPING, "profile.toml": PROFILE_RULES}
    ).items():
        (folder / "mappings" / name).write_text(dedent(text), encoding="utf-8")
    config = folder / "syncd.toml"
    config.write_text(
        dedent(
            f"""
            [store]
            url = "{store_url}"

            [logging]
            file = "syncd.log"

            [sources.crm]
            type = "files"
            [sources.crm.options]
            folder = "inbox"
            settle_seconds = 0
            [sources.crm.options.streams]
            people = {{ pattern = "people*.csv" }}
            """
        )
        + dedent(extra_config),
        encoding="utf-8",
    )
    return config


class ScriptedSource:
    """A source that yields the pages it is given, then nothing: one script per run."""

    def __init__(self, pages: dict[str, list[Page]]) -> None:
        self.pages = pages

    def streams(self) -> Sequence[str]:
        return sorted(self.pages)

    def read(self, stream: str, cursor: JsonValue | None) -> Iterator[Page]:
        yield from self.pages.get(stream, [])

    def close(self) -> None:
        """Nothing to release."""


def records_page(
    payloads: list[dict[str, object]], deleted: Sequence[str] = (), cursor: object = None
) -> Page:
    return Page([RawRecord(p, f"test:{p.get('id')}") for p in payloads], cursor, deleted)


class Project:
    """A project folder with its config, mappings and store, for driving runs in tests."""

    def __init__(self, folder: Path, store_url: str, **kwargs: object) -> None:
        self.path = write_project(folder, store_url, **kwargs)  # type: ignore[arg-type]
        self.config: Config = load_config(self.path)
        self.mappings: Mappings = compile_mappings(self.config)
        self.engine: Engine = open_store(self.config.store_url)

    def run(self, pages: dict[str, list[Page]] | None = None, **kwargs: object):  # type: ignore[no-untyped-def]
        """One run-once without the push stage; with `pages`, the source yields exactly those."""
        kwargs.setdefault("push", False)
        make = None
        if pages is not None:
            script = ScriptedSource(pages)

            def make(entry: ConnectorEntry, config: Config, read_only: bool) -> Source:
                return script

        return Pipeline(self.config, self.mappings, self.engine, make_source=make).run_once(
            **kwargs
        )  # type: ignore[arg-type]

    def pipeline(self) -> Pipeline:
        return Pipeline(self.config, self.mappings, self.engine)

    def close(self) -> None:
        self.engine.dispose()


def visits_project(folder: Path, store_url: str, profile_rules: str) -> Project:
    """A project of people records and page-view events, with these profile rules."""
    return Project(
        folder,
        store_url,
        mappings={
            "people.toml": PEOPLE_MAPPING,
            "visits.toml": VISITS_MAPPING,
            "profile.toml": profile_rules,
        },
        extra_config='visits = { pattern = "visits*.jsonl" }\n',
    )
