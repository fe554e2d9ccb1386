"""The examples of docs/MAPPINGS.md and docs/CONFIG.md are tested, so the docs stay true, and
so are the pieces of syncd.toml that the connector guides and docs/INGEST.md show.

Conventions in the Markdown (see the top of each doc):

- A ```toml block whose first line is `# example: <path>` is a complete file of the doc's
  example project (`syncd.toml`, `mappings/<name>.toml`). In MAPPINGS.md all such blocks form
  one project that must load and compile; in CONFIG.md each `syncd.toml` example must load.
- A ```toml block whose first line is `# invalid-example: <path>` is a broken file; the
  ```text block right after it lists the problems syncd reports for it, one per line, with
  paths relative to the project folder.
- A ```json block tagged `example-input: <source>/<stream>` is a raw payload; the next block
  tagged `example-output: <source>/<stream>` is what the mapping makes of it.
- A ```json block tagged `example-profile` is one profile after every example input of the
  doc went through one run (on the date given as `now`).
- In docs/connectors/*.md and docs/INGEST.md, a ```toml block with a `[sources]` or
  `[destinations]` table is a syncd.toml of its own: it must load.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

import pytest

from syncd.config import Config, ConnectorEntry, load_config
from syncd.connector import JsonValue, Page, RawRecord, Source
from syncd.errors import ConfigError
from syncd.inspect import export_profiles
from syncd.mapping.compiler import Mappings, compile_mappings
from syncd.runner import Pipeline
from syncd.store.db import open_store, transaction

DOCS = Path(__file__).resolve().parents[2] / "docs"
MAPPINGS_DOC = DOCS / "MAPPINGS.md"
CONFIG_DOC = DOCS / "CONFIG.md"
CONNECTOR_DOCS = [*sorted((DOCS / "connectors").glob("*.md")), DOCS / "INGEST.md"]
FENCE = re.compile(r"^```(\w+)[ \t]*([^\n]*)\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
MARK = re.compile(r"^# (example|invalid-example): (\S+)\s*$")


@dataclass(frozen=True)
class Block:
    language: str
    tag: str
    text: str
    line: int

    @property
    def mark(self) -> tuple[str, str] | None:
        first = self.text.split("\n", 1)[0]
        found = MARK.match(first)
        return (found.group(1), found.group(2)) if found else None


def blocks(doc: Path) -> list[Block]:
    text = doc.read_text(encoding="utf-8")
    return [
        Block(m.group(1), m.group(2).strip(), m.group(3), text.count("\n", 0, m.start()) + 1)
        for m in FENCE.finditer(text)
    ]


def examples(doc: Path, kind: str = "example") -> list[tuple[str, Block]]:
    return [
        (b.mark[1], b) for b in blocks(doc) if b.language == "toml" and b.mark and b.mark[0] == kind
    ]


def write(folder: Path, files: Sequence[tuple[str, Block]]) -> Path:
    for name, block in files:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(block.text, encoding="utf-8")
    (folder / "mappings").mkdir(exist_ok=True)
    return folder / "syncd.toml"


def relative_problems(error: ConfigError, folder: Path) -> list[str]:
    return [str(p).replace(f"{folder}/", "") for p in error.problems]


def env_names(text: str) -> list[str]:
    return re.findall(r'\{\s*env\s*=\s*"([^"]+)"\s*\}', text)


# --- MAPPINGS.md -------------------------------------------------------------------------


def mapping_project(folder: Path) -> tuple[Config, Mappings]:
    files = examples(MAPPINGS_DOC)
    names = [name for name, _ in files]
    assert len(names) == len(set(names)), f"two examples write the same file: {names}"
    path = write(folder, files)
    config = load_config(path)
    return config, compile_mappings(config)


def test_the_mapping_examples_form_one_valid_project(tmp_path: Path) -> None:
    config, mappings = mapping_project(tmp_path)
    files = dict(examples(MAPPINGS_DOC))
    stream_files = [n for n in files if n.startswith("mappings/") and n != "mappings/profile.toml"]
    assert "syncd.toml" in files and "mappings/profile.toml" in files
    assert len(mappings.streams) == len(stream_files) >= 3
    assert mappings.profile.computed and mappings.profile.traits
    assert set(config.sources) == {source for source, _ in mappings.streams}


def test_every_toml_block_of_the_docs_is_valid_toml() -> None:
    for block in blocks(MAPPINGS_DOC) + blocks(CONFIG_DOC):
        if block.language == "toml":
            try:
                tomllib.loads(block.text)
            except tomllib.TOMLDecodeError as error:
                pytest.fail(f"{block.line}: {error}")


def input_output_pairs(doc: Path) -> Iterator[tuple[str, dict[str, object], dict[str, object]]]:
    pending: dict[str, dict[str, object]] = {}
    for block in blocks(doc):
        if block.language != "json" or ":" not in block.tag:
            continue
        tag, _, stream = block.tag.partition(":")
        stream = stream.strip()
        if tag == "example-input":
            pending[stream] = json.loads(block.text)
        elif tag == "example-output":
            assert stream in pending, f"line {block.line}: output without an input"
            yield stream, pending.pop(stream), json.loads(block.text)


def test_documented_payloads_map_to_the_documented_result(tmp_path: Path) -> None:
    _, mappings = mapping_project(tmp_path)
    pairs = list(input_output_pairs(MAPPINGS_DOC))
    assert len(pairs) >= 3
    for stream_key, payload, expected in pairs:
        source, _, stream = stream_key.partition("/")
        compiled = mappings.for_stream(source, stream)
        mapped = compiled.map_event(payload) if compiled.is_events else compiled.map_record(payload)
        got = json.loads(json.dumps(asdict(mapped)))
        assert got == expected, stream_key


class DocSource:
    """Yields the doc's example inputs of one source, once."""

    def __init__(self, pages: dict[str, list[dict[str, object]]]) -> None:
        self.pages = pages

    def streams(self) -> Sequence[str]:
        return sorted(self.pages)

    def read(self, stream: str, cursor: JsonValue | None) -> Iterator[Page]:
        payloads = self.pages.get(stream, [])
        yield Page([RawRecord(p, f"doc:{i}") for i, p in enumerate(payloads)], None)

    def close(self) -> None:
        """Nothing to release."""


def test_the_documented_profile_comes_out_of_one_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    profiles = [json.loads(b.text) for b in blocks(MAPPINGS_DOC) if b.tag == "example-profile"]
    assert profiles
    config, mappings = mapping_project(tmp_path)
    inputs: dict[str, dict[str, list[dict[str, object]]]] = {}
    for block in blocks(MAPPINGS_DOC):
        if block.language == "json" and block.tag.startswith("example-input:"):
            source, _, stream = block.tag.partition(":")[2].strip().partition("/")
            inputs.setdefault(source, {}).setdefault(stream, []).append(json.loads(block.text))

    def make_source(entry: ConnectorEntry, _config: Config, _read_only: bool) -> Source:
        return DocSource(inputs.get(entry.name, {}))

    engine = open_store(f"sqlite:///{tmp_path / 'doc.db'}")
    try:
        for expected in profiles:
            now = datetime.fromisoformat(expected["now"])
            monkeypatch.setattr("syncd.profiles.utcnow", lambda now=now: now)
            summary = Pipeline(config, mappings, engine, make_source=make_source).run_once()
            assert summary.status == "ok", summary.errors
            with transaction(engine) as bulk:
                exported = list(export_profiles(bulk))
            wanted = {(i["kind"], i["value"]) for i in expected["identifiers"]}
            found = [
                p for p in exported if wanted & {(i["kind"], i["value"]) for i in p["identifiers"]}
            ]
            assert len(found) == 1, found
            profile = found[0]
            assert {(i["kind"], i["value"]) for i in profile["identifiers"]} == wanted
            assert profile["traits"] == expected["traits"]
            assert profile["records"] == expected["records"]
    finally:
        engine.dispose()


def test_the_documented_mapping_problems_are_the_ones_reported(tmp_path: Path) -> None:
    broken = examples(MAPPINGS_DOC, "invalid-example")
    assert broken
    for name, block in broken:
        folder = tmp_path / name.replace("/", "_")
        folder.mkdir()
        write(folder, [*examples(MAPPINGS_DOC), (name, block)])
        with pytest.raises(ConfigError) as caught:
            compile_mappings(load_config(folder / "syncd.toml"))
        assert relative_problems(caught.value, folder) == expected_problems(MAPPINGS_DOC, block)


def expected_problems(doc: Path, block: Block) -> list[str]:
    every = blocks(doc)
    after = every[every.index(block) + 1]
    assert after.language == "text", f"line {block.line}: no text block of problems after it"
    return [line for line in after.text.splitlines() if line.strip()]


# --- CONFIG.md ---------------------------------------------------------------------------


def test_every_config_example_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    configs = [block for name, block in examples(CONFIG_DOC) if name == "syncd.toml"]
    assert len(configs) >= 2
    for index, block in enumerate(configs):
        for name in env_names(block.text):
            monkeypatch.setenv(name, "postgresql+psycopg://syncd:secret@db.internal/syncd")
        folder = tmp_path / str(index)
        folder.mkdir()
        config = load_config(write(folder, [("syncd.toml", block)]))
        assert (
            config.mappings_dir.parent.resolve() == folder.resolve()
            or config.mappings_dir.is_absolute()
        )
        for entry in [*config.sources.values(), *config.destinations.values()]:
            assert entry.spec.kind == "files", "CONFIG.md examples use the files connector only"


def test_config_examples_with_the_same_sources_compile_with_the_mapping_examples(
    tmp_path: Path,
) -> None:
    mapping_files = [(n, b) for n, b in examples(MAPPINGS_DOC) if n.startswith("mappings/")]
    mapped_sources = {
        tomllib.loads(b.text)["source"] for n, b in mapping_files if n != "mappings/profile.toml"
    }
    compiled = 0
    for index, (name, block) in enumerate(examples(CONFIG_DOC)):
        if name != "syncd.toml" or env_names(block.text):
            continue
        if set(tomllib.loads(block.text).get("sources", {})) != mapped_sources:
            continue
        folder = tmp_path / str(index)
        folder.mkdir()
        mappings = compile_mappings(load_config(write(folder, [(name, block), *mapping_files])))
        assert {source for source, _ in mappings.streams} == mapped_sources
        compiled += 1
    assert compiled >= 1


def test_the_documented_connector_types_are_the_ones_syncd_knows(tmp_path: Path) -> None:
    path = tmp_path / "syncd.toml"
    path.write_text('[sources.x]\ntype = "nosuch"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    known = caught.value.problems[0].fix.removeprefix("use one of: ").split(", ")
    text = " ".join(CONFIG_DOC.read_text(encoding="utf-8").split())
    assert "the connector: " + ", ".join(f"`{kind}`" for kind in known) + " |" in text
    assert "unknown connector 'x' — use one of: " + ", ".join(known) + "`" in text


def test_the_documented_config_problems_are_the_ones_reported(tmp_path: Path) -> None:
    broken = examples(CONFIG_DOC, "invalid-example")
    assert broken
    for index, (name, block) in enumerate(broken):
        folder = tmp_path / str(index)
        folder.mkdir()
        with pytest.raises(ConfigError) as caught:
            load_config(write(folder, [(name, block)]))
        assert relative_problems(caught.value, folder) == expected_problems(CONFIG_DOC, block)


# --- docs/connectors/*.md and INGEST.md --------------------------------------------------


def test_the_connector_guides_config_examples_load(tmp_path: Path) -> None:
    checked = 0
    for doc in CONNECTOR_DOCS:
        for block in blocks(doc):
            if block.language != "toml" or not {"sources", "destinations"} & set(
                tomllib.loads(block.text)
            ):
                continue
            folder = tmp_path / f"{doc.stem}-{block.line}"
            folder.mkdir()
            try:
                load_config(write(folder, [("syncd.toml", block)]))
            except ConfigError as error:
                pytest.fail(f"{doc.name}:{block.line}:\n{error}")
            checked += 1
    assert checked >= len(CONNECTOR_DOCS)
