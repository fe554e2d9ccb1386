"""Destination mapping files: compiled once, every problem listed as file:key: problem — fix."""

from __future__ import annotations

from pathlib import Path
from textwrap import dedent

import pytest

from syncd.config import Config, load_config
from syncd.errors import ConfigError
from syncd.mapping.destinations import FieldError, compile_destinations
from tests.support.project import write_project

DESTINATIONS = """
[destinations.crm]
type = "hubspot"
[destinations.crm.options]
access_token = { env = "MAPPING_TEST_UNUSED" }
"""

GOOD = """
destination = "crm"
target = "contacts"
match = { trait = "email" }
when = [{ trait = "score", op = "in", value = [1, 2] }, { trait = "vip", op = "missing" }]

[fields]
full_name = "name | upper"
source = "'syncd'"
digits = "phone | digits"
"""


def _config(tmp_path: Path, files: dict[str, str]) -> Config:
    path = write_project(tmp_path, f"sqlite:///{tmp_path / 's.db'}", extra_config=DESTINATIONS)
    folder = tmp_path / "mappings" / "destinations"
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(dedent(text), encoding="utf-8")
    return load_config(path)


def _problems(tmp_path: Path, files: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        compile_destinations(_config(tmp_path, files))
    return [str(problem) for problem in caught.value.problems]


def test_a_valid_mapping_selects_profiles_and_maps_fields(tmp_path: Path) -> None:
    (mapping,) = compile_destinations(_config(tmp_path, {"crm.toml": GOOD})).of("crm")
    assert (mapping.destination, mapping.target, mapping.match_trait) == (
        "crm",
        "contacts",
        "email",
    )
    assert mapping.selects({"score": 2})
    assert not mapping.selects({"score": 3})
    assert not mapping.selects({"score": 1, "vip": True})
    # A trait without a value leaves the destination's field alone.
    assert mapping.fields({"name": "ada"}) == {"full_name": "ADA", "source": "syncd"}


def test_a_failing_expression_names_the_field(tmp_path: Path) -> None:
    text = GOOD.replace('"name | upper"', '"name | email"')
    (mapping,) = compile_destinations(_config(tmp_path, {"crm.toml": text})).of("crm")
    with pytest.raises(FieldError, match="field full_name"):
        mapping.fields({"name": "not an address"})


def test_every_problem_is_listed_with_file_key_and_fix(tmp_path: Path) -> None:
    bad = """
    destination = "nowhere"
    target = "contacts"
    match = { identifier = "shoe_size" }

    [fields]
    a = "name | frobnicate"
    """
    both = """
    destination = "crm"
    target = "contacts"
    match = { trait = "email", identifier = "email" }
    when = [{ trait = "score", op = "eq" }]
    fields = {}
    """
    problems = _problems(tmp_path, {"bad.toml": bad, "both.toml": both})
    text = "\n".join(problems)
    assert "bad.toml:destination: no destination named 'nowhere' in syncd.toml — add" in text
    assert "bad.toml:match.identifier: unknown identifier kind 'shoe_size'" in text
    assert "bad.toml:fields.a: unknown transform 'frobnicate'" in text
    assert "both.toml:match: give either trait" in text
    assert "both.toml:when.0: op = 'eq' needs value" in text
    # crm's only file failed to compile, but it was meant for crm: no second complaint.
    assert not any("no destination mapping file" in p for p in problems)


def test_a_destination_without_a_mapping_and_a_target_mapped_twice(tmp_path: Path) -> None:
    assert _problems(tmp_path / "a", {}) == [
        f"{tmp_path / 'a' / 'syncd.toml'}:destinations.crm: no destination mapping file feeds "
        'this destination — add destinations/<file>.toml under mappings/ with destination = "crm"'
    ]
    problems = _problems(tmp_path / "b", {"one.toml": GOOD, "two.toml": GOOD})
    assert len(problems) == 1
    assert "two.toml:target: crm/contacts is already mapped by one.toml" in problems[0]
