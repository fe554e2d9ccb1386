from __future__ import annotations

from pathlib import Path
from textwrap import dedent

import pytest

from syncd.config import load_config
from syncd.errors import ConfigError, RecordError
from syncd.mapping.compiler import compile_mappings
from tests.support.project import PEOPLE_MAPPING, VISITS_MAPPING, write_project


def compile_project(tmp_path: Path, mappings: dict[str, str], extra: str = ""):  # type: ignore[no-untyped-def]
    path = write_project(tmp_path, f"sqlite:///{tmp_path / 's.db'}", mappings, extra)
    return compile_mappings(load_config(path))


def problems(tmp_path: Path, mappings: dict[str, str], extra: str = "") -> list[str]:
    with pytest.raises(ConfigError) as caught:
        compile_project(tmp_path, mappings, extra)
    return [str(p) for p in caught.value.problems]


def test_a_record_maps_traits_and_normalized_identifiers(tmp_path: Path) -> None:
    stream = compile_project(tmp_path, {"people.toml": PEOPLE_MAPPING}).for_stream("crm", "people")
    mapped = stream.map_record(
        {
            "id": 7,
            "email": " Ada@X.com",
            "phone": "415.555.0101",
            "user_id": " u1 ",
            "name": "ada ",
            "score": "12",
            "updated_at": "2024-01-01T00:00:00Z",
        }
    )
    assert mapped.external_id == "7"
    assert mapped.updated_at == "2024-01-01T00:00:00.000Z"
    assert mapped.traits == {"name": "Ada", "email": "ada@x.com", "score": 12}
    assert mapped.identifiers == [
        ("email", "ada@x.com"),
        ("phone", "+14155550101"),
        ("user_id", "u1"),
    ]


def test_blocked_and_invalid_identifiers_are_noted_masked_not_used(tmp_path: Path) -> None:
    stream = compile_project(tmp_path, {"people.toml": PEOPLE_MAPPING}).for_stream("crm", "people")
    mapped = stream.map_record(
        {"id": "1", "email": "TEST@test.com", "phone": "12", "user_id": "null"}
    )
    assert mapped.identifiers == []
    assert "identifier email: blocked value (T***@test.com)" in mapped.notes
    assert "identifier phone: not a valid phone number (***)" in mapped.notes
    assert "identifier user_id: blocked value (***)" in mapped.notes


def test_a_bad_field_value_is_a_record_error_naming_the_field(tmp_path: Path) -> None:
    stream = compile_project(tmp_path, {"people.toml": PEOPLE_MAPPING}).for_stream("crm", "people")
    with pytest.raises(RecordError, match="field score: not a whole number"):
        stream.map_record({"id": "1", "email": "a@x.com", "score": "many"})
    with pytest.raises(RecordError, match="primary key is missing"):
        stream.map_record({"email": "a@x.com"})


def test_a_missing_key_says_when_the_record_lacks_the_name_it_is_read_from(
    tmp_path: Path,
) -> None:
    stream = compile_project(tmp_path, {"people.toml": PEOPLE_MAPPING}).for_stream("crm", "people")
    with pytest.raises(RecordError) as lacking:
        stream.map_record({"Customer ID": "1", "email": "a@x.com"})
    assert str(lacking.value) == "primary key is missing (the record has no id)"
    with pytest.raises(RecordError) as blank:
        stream.map_record({"id": " ", "email": "a@x.com"})
    assert str(blank.value) == "primary key is missing"
    visits = 'visits = { pattern = "visits*.jsonl" }\n'
    mappings = {"people.toml": PEOPLE_MAPPING, "visits.toml": VISITS_MAPPING}
    events = compile_project(tmp_path, mappings, visits).for_stream("crm", "visits")
    with pytest.raises(RecordError) as no_time:
        events.map_event({"id": "v1", "email": "a@x.com"})
    assert str(no_time.value) == "timestamp is missing (the record has no at)"


def test_what_a_header_lacks_counts_alternatives_once_and_constants_never(
    tmp_path: Path,
) -> None:
    mapping = """
        source = "crm"
        stream = "people"
        primary_key = "customer.id"
        [identifiers]
        email = "email | coalesce('work_email')"
        name_dob = { parts = ["last | trim | lower", "dob | date"], kind = "name_dob" }
        [fields]
        email = "email | email"
        tier = { from = ["tier", "level"], default = "none" }
        origin = "'shop'"
    """
    extra = """
        [identity.kinds.name_dob]
        normalize = "lower"
    """
    stream = compile_project(tmp_path, {"p.toml": mapping}, extra).for_stream("crm", "people")
    assert stream.lacking(["Customer ID", "E-mail", "last"]) == [
        "customer",
        "email or work_email",
        "dob",
        "email",
        "tier or level",
    ]
    assert stream.lacking(["customer", "work_email", "last", "dob", "level"]) == ["email"]


def test_composite_identifier_needs_every_part(tmp_path: Path) -> None:
    mapping = """
        source = "crm"
        stream = "people"
        primary_key = "id"
        [identifiers]
        name_dob = { parts = ["last | trim | lower", "dob | date"], kind = "name_dob" }
    """
    extra = """
        [identity.kinds.name_dob]
        normalize = "lower"
    """
    stream = compile_project(tmp_path, {"p.toml": mapping}, extra).for_stream("crm", "people")
    assert stream.map_record({"id": 1, "last": " Lovelace", "dob": "1815-12-10"}).identifiers == [
        ("name_dob", "lovelace|1815-12-10")
    ]
    assert stream.map_record({"id": 1, "last": "Lovelace"}).identifiers == []


def test_field_spec_coalesce_map_type_default(tmp_path: Path) -> None:
    mapping = """
        source = "crm"
        stream = "people"
        primary_key = "id"
        [identifiers]
        email = "email"
        [fields]
        tier = { from = ["tier", "level"], map = { G = "gold" }, default = "none" }
        age = { from = "age", type = "int", on_error = "null" }
    """
    stream = compile_project(tmp_path, {"p.toml": mapping}).for_stream("crm", "people")
    assert stream.map_record({"id": 1, "level": "G", "age": "x"}).traits == {"tier": "gold"}
    assert stream.map_record({"id": 1, "tier": " ", "age": "3"}).traits == {
        "tier": "none",
        "age": 3,
    }


def test_every_problem_is_listed_with_file_and_key(tmp_path: Path) -> None:
    mapping = """
        source = "crm"
        stream = "people"
        primary_key = "id"
        colour = "blue"
        [identifiers]
        email = "email"
    """
    bad_exprs = """
        source = "crm"
        stream = "other"
        primary_key = "id"
        [identifiers]
        passport = "passport"
        [fields]
        name = "name | shout"
    """
    found = problems(tmp_path, {"a.toml": mapping, "b.toml": bad_exprs})
    assert any("a.toml:colour: unknown key" in p for p in found)
    assert any(
        "b.toml:identifiers.passport: unknown identifier kind 'passport'" in p for p in found
    )
    assert any("b.toml:fields.name: unknown transform 'shout'" in p for p in found)


def test_two_files_for_one_stream_and_unknown_source_are_refused(tmp_path: Path) -> None:
    other_source = PEOPLE_MAPPING.replace('source = "crm"', 'source = "erp"')
    found = problems(
        tmp_path, {"a.toml": PEOPLE_MAPPING, "b.toml": PEOPLE_MAPPING, "c.toml": other_source}
    )
    assert any("b.toml:stream: crm/people is already mapped by a.toml" in p for p in found)
    assert any("c.toml:source: no source named 'erp'" in p for p in found)


def test_syntax_error_names_the_file(tmp_path: Path) -> None:
    found = problems(tmp_path, {"a.toml": "source = \n"})
    assert found[0].startswith(str(tmp_path / "mappings" / "a.toml") + ":(syntax):")


def test_events_stream_requires_its_keys(tmp_path: Path) -> None:
    mapping = dedent(
        """
        source = "crm"
        stream = "people"
        type = "events"
        event_id = "id"
        [identifiers]
        email = "email"
        """
    )
    found = problems(tmp_path, {"a.toml": mapping})
    assert any("an events stream needs event_name, timestamp" in p for p in found)


def test_a_mistake_in_the_table_form_is_reported_once_at_its_key(tmp_path: Path) -> None:
    mapping = PEOPLE_MAPPING.replace(
        'name = "name | trim | title"', 'name = { from = "name", tpye = "string" }'
    )
    found = problems(tmp_path, {"people.toml": mapping})
    assert [p.split(":", 1)[1] for p in found] == [
        "fields.name.tpye: unknown key — remove it or check its spelling"
    ]


def test_mapped_streams_must_be_streams_the_source_declares(tmp_path: Path) -> None:
    other = PEOPLE_MAPPING.replace('stream = "people"', 'stream = "orders"')
    found = problems(tmp_path, {"orders.toml": other})
    assert any(
        "orders.toml:stream: source 'crm' has no stream 'orders' — use one of people" in p
        for p in found
    )
    assert any(
        "syncd.toml:sources.crm.options.streams.people: no mapping file maps this stream" in p
        for p in found
    )
