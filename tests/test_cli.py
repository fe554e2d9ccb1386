"""The command line as an operator uses it, on the shipped config and sample data."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from connectors.hubspot.emulator import DEFAULT_TOKEN as HUBSPOT_TOKEN
from connectors.matomo.emulator import DEFAULT_TOKEN as MATOMO_TOKEN
from connectors.salesforce.emulator import DEFAULT_CREDENTIALS as SALESFORCE
from connectors.sample_people import in_system
from syncd.cli import app
from syncd.inspect import short_cursor
from syncd.runner import _differences

runner = CliRunner()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the shipped project (config, mappings, sample inbox) in a temporary folder."""
    for name in ("syncd.toml",):
        shutil.copy(name, tmp_path / name)
    shutil.copytree("mappings", tmp_path / "mappings")
    shutil.copytree("data", tmp_path / "data")
    old = time.time() - 60
    for path in (tmp_path / "data" / "inbox").iterdir():
        os.utime(path, (old, old))
    return tmp_path / "syncd.toml"


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def test_validate_ok_and_exit_2_listing_every_problem(project: Path) -> None:
    assert invoke("validate", "--config", str(project)) == (
        0,
        "ok: 5 source(s), 2 destination(s), 15 mapped stream(s), 2 destination mapping(s)\n",
    )
    mapping = project.parent / "mappings" / "inbox_customers.toml"
    mapping.write_text(
        mapping.read_text()
        .replace("| title", "| titel")
        .replace('kind = "name_dob"', 'kind = "dna"')
    )
    code, output = invoke("validate", "--config", str(project))
    assert code == 2
    assert f"{mapping}:fields.first_name: unknown transform 'titel'" in output
    assert f"{mapping}:identifiers.name_dob: unknown identifier kind 'dna'" in output


def test_run_once_then_explain_export_status_logs(project: Path) -> None:
    code, output = invoke("run-once", "--config", str(project))
    assert code == 0, output
    assert "inbox/customers:" in output
    assert "quarantined" in output

    code, output = invoke("profiles", "export", "--config", str(project))
    lines = [json.loads(line) for line in output.splitlines()]
    assert len(lines) > 100
    assert set(lines[0]) == {"profile_id", "traits", "identifiers", "records"}
    joined = next(p for p in lines if len(p["records"]) > 1)
    assert {"kind", "value"} == set(joined["identifiers"][0])
    assert {"source", "stream", "id"} == set(joined["records"][0])

    email = next(i["value"] for i in joined["identifiers"] if i["kind"] == "email")
    code, output = invoke("explain", email.upper(), "--config", str(project), "--json")
    assert code == 0
    explained = json.loads(output)
    assert explained["profile_id"] == joined["profile_id"]
    assert explained["merges"] and explained["merges"][0]["action"] == "merge"

    code, output = invoke("explain", "nobody@nowhere.example", "--config", str(project))
    assert code == 1 and "no profile has that identifier" in output

    code, output = invoke("status", "--config", str(project), "--json")
    report = json.loads(output)
    assert report["profiles"] == len(lines)
    assert report["quarantined"] == 2
    assert report["runs"][0]["status"] == "ok"

    log_file = project.parent / "var" / "syncd.log"
    entries = [json.loads(line) for line in log_file.read_text().splitlines()]
    run_ids = {entry["run_id"] for entry in entries}
    assert len(run_ids) == 1 and None not in run_ids
    (finished,) = [entry for entry in entries if entry["event"] == "run finished"]
    assert set(finished["seconds"]) == {"pull", "unify", "profiles"}
    assert all(seconds >= 0 for seconds in finished["seconds"].values())
    assert not re.search(r"[\w.]+@example\.(com|org|net)", log_file.read_text())
    code, output = invoke("logs", "--config", str(project), "--level", "warning")
    assert code == 0 and "record quarantined" in output and "page stored" not in output


def test_text_from_records_is_shown_as_it_is_not_read_as_markup(project: Path) -> None:
    odd = project.parent / "data" / "inbox" / "customers_901.csv"
    odd.write_text(
        "customer_id,first_name,last_name,email,updated_at\n"
        "Q1,[/],[b]x,odd@example.net,2024-01-01T00:00:00+00:00\n"
    )
    os.utime(odd, (time.time() - 60, time.time() - 60))
    assert invoke("run-once", "--config", str(project))[0] == 0
    code, output = invoke("explain", "odd@example.net", "--config", str(project))
    assert code == 0, output
    assert '"[/]"' in output and '"[B]X"' in output


def test_a_file_whose_header_names_columns_otherwise_is_warned_of_once_and_its_rows_kept(
    project: Path,
) -> None:
    other = project.parent / "data" / "inbox" / "customers_902.csv"
    other.write_text(
        "Customer ID,E-mail,First Name\nK1,k1@example.net,Kim\nK2,k2@example.net,Kai\n"
    )
    os.utime(other, (time.time() - 60, time.time() - 60))
    assert invoke("run-once", "--config", str(project))[0] == 0
    log_file = project.parent / "var" / "syncd.log"
    entries = [json.loads(line) for line in log_file.read_text().splitlines()]
    (warned,) = [e for e in entries if e["event"] == "file lacks columns the mapping reads"]
    assert (warned["level"], warned["file"]) == ("warning", "customers_902.csv")
    assert warned["missing"][:2] == ["customer_id", "updated_at"]
    code, output = invoke("quarantine", "list", "--config", str(project))
    assert code == 0
    assert output.count("primary key is missing (the record has no customer_id)") == 2


def test_explain_says_when_several_profiles_hold_the_identifier(project: Path) -> None:
    # Two loyalty numbers on one email: the merge is refused (one loyalty number a profile).
    shared = project.parent / "data" / "inbox" / "customers_900.csv"
    shared.write_text(
        "customer_id,email,loyalty_number,updated_at\n"
        "X1,twins@example.net,L-1,2024-01-01T00:00:00+00:00\n"
        "X2,twins@example.net,L-2,2024-01-01T00:00:00+00:00\n"
    )
    os.utime(shared, (time.time() - 60, time.time() - 60))
    assert invoke("run-once", "--config", str(project))[0] == 0
    exported = invoke("profiles", "export", "--config", str(project))[1].splitlines()
    held_by = sorted(
        profile["profile_id"]
        for profile in map(json.loads, exported)
        if {"kind": "email", "value": "twins@example.net"} in profile["identifiers"]
    )
    assert len(held_by) == 2
    code, output = invoke("explain", "twins@example.net", "--config", str(project))
    assert code == 0
    assert f"2 profiles hold twins@example.net: {held_by[0]}, {held_by[1]}" in output
    assert f"this is {held_by[0]}. Run syncd explain with each profile id" in output
    assert f"profile {held_by[0]}" in output
    # The refused merge names the other side as it names the profile's own records.
    assert "inbox/customers/X1" in output and "inbox/customers/X2" in output


def test_a_broken_stream_mapping_blocks_runs_but_not_the_commands_that_read(
    project: Path,
) -> None:
    assert invoke("run-once", "--config", str(project))[0] == 0
    explain = ("explain", "john.rhodes4@mail.example.com", "--config", str(project), "--json")
    explained = invoke(*explain)
    mapping = project.parent / "mappings" / "inbox_customers.toml"
    mapping.write_text(mapping.read_text().replace("| title", "| titel"))
    for command in ("run-once", "validate"):
        code, output = invoke(command, "--config", str(project))
        assert code == 2 and "unknown transform 'titel'" in output
    readers = (
        ["logs"],
        ["status"],
        ["quarantine", "list"],
        ["profiles", "export"],
        ["explain", "john.rhodes4@mail.example.com"],
    )
    for command in readers:
        code, output = invoke(*command, "--config", str(project))
        assert code == 0, (command, output)
        assert "titel" not in output
    # Still the record each trait came from: explain reads the profile rules.
    assert invoke(*explain) == explained


def test_ids_locations_and_record_names_come_out_whole_when_piped_to_a_narrow_reader(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As from cron: not a terminal, and no one asking for colours.
    monkeypatch.setenv("COLUMNS", "40")
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE"):
        monkeypatch.delenv(name, raising=False)
    code, summary = invoke("run-once", "--config", str(project))
    assert code == 0
    (run,) = json.loads(invoke("status", "--config", str(project), "--json")[1])["runs"]
    assert f"run {run['id']}: ok" in summary
    assert run["id"] in invoke("status", "--config", str(project))[1]
    assert "customers_000.csv:8" in invoke("quarantine", "list", "--config", str(project))[1]
    code, output = invoke("explain", "john.rhodes4@mail.example.com", "--config", str(project))
    assert "inbox/crm_export/003000000000004" in output


def test_logs_of_one_run_by_the_start_of_its_id(project: Path) -> None:
    for _ in range(2):
        assert invoke("run-once", "--config", str(project))[0] == 0
    status = json.loads(invoke("status", "--config", str(project), "--json")[1])
    later, earlier = (run["id"] for run in status["runs"])
    code, output = invoke("logs", "--config", str(project), "--run", earlier[:-4])
    assert code == 0 and "run finished" in output
    assert earlier in output and later not in output

    common = next(
        earlier[:i] for i, (a, b) in enumerate(zip(earlier, later, strict=True)) if a != b
    )
    code, output = invoke("logs", "--config", str(project), "--run", common)
    assert code == 2
    assert f"2 run ids begin with {common!r}" in output
    assert earlier in output and later in output and "run finished" not in output

    code, output = invoke("logs", "--config", str(project), "--run", "19990101")
    assert code == 1 and "no run id in" in output and "begins with '19990101'" in output


def test_status_shows_why_a_run_failed(project: Path) -> None:
    unreadable = project.parent / "data" / "inbox" / "customers_999.csv"
    unreadable.write_bytes(b"customer_id,first_name\nC1,Ren\xe9e\n")
    os.utime(unreadable, (time.time() - 60, time.time() - 60))
    assert invoke("run-once", "--config", str(project))[0] == 1
    (run,) = json.loads(invoke("status", "--config", str(project), "--json")[1])["runs"]
    code, output = invoke("status", "--config", str(project))
    assert code == 0
    assert f"run {run['id']} failed:\n  inbox: customers_999.csv: not utf-8 text" in output


def test_status_shows_where_each_streams_cursor_stands(project: Path) -> None:
    assert invoke("run-once", "--config", str(project))[0] == 0
    report = json.loads(invoke("status", "--config", str(project), "--json")[1])
    positions = {(c["source"], c["stream"]): c["position"] for c in report["cursors"]}
    assert positions == {
        ("inbox", "crm_export"): "1 file read",
        ("inbox", "customers"): "1 file read",
        ("inbox", "orders"): "1 file read",
    }
    code, output = invoke("status", "--config", str(project))
    assert code == 0
    assert re.search(r"inbox/customers +│ 1 file read +│ 20\d\d-", output), output


def test_a_cursor_without_words_of_its_own_is_shortened_and_keeps_secrets_out() -> None:
    cursor = {
        "phase": "search",
        "since": 1714730400000,
        "seen": ["101", "102", "103", "104"],
        "after": "a-paging-token-far-longer-than-anyone-reads",
        "session_token": "00Dxx!secret",
        "ids": ["1", "2"],
    }
    assert short_cursor(cursor) == (
        '{"phase":"search","since":1714730400000,"seen":"<4 items>",'
        '"after":"a-paging-token-far-longer-than-…","session_token":"***","ids":["1","2"]}'
    )
    cut = short_cursor({f"position_{n}": n for n in range(20)})
    assert cut.startswith('{"position_0":0,') and cut.endswith("…") and len(cut) == 160
    assert "secret" not in short_cursor({"auth": {"password": "secret"}})


def test_rebuild_verify_and_a_second_run_that_writes_nothing(project: Path) -> None:
    assert invoke("run-once", "--config", str(project))[0] == 0
    code, output = invoke("run-once", "--config", str(project), "--full")
    assert code == 0
    assert "0 new, 0 changed" in output
    assert invoke("rebuild", "--config", str(project), "--verify") == (
        0,
        "verify: the store equals a rebuild\n",
    )


def test_rebuild_verify_names_the_traits_that_differ_never_their_values(project: Path) -> None:
    assert invoke("run-once", "--config", str(project))[0] == 0
    mapping = project.parent / "mappings" / "inbox_customers.toml"
    mapping.write_text(mapping.read_text().replace('"city | trim | title"', '"city | upper"'))
    code, output = invoke("rebuild", "--config", str(project), "--verify")
    assert code == 1
    *listed, last = output.splitlines()
    assert re.fullmatch(r"profile p_\w+: traits differ from the rebuild: city", listed[0]), listed
    assert last == "verify: DIFFERENT; syncd rebuild applies the rebuild to the store"
    export = invoke("profiles", "export", "--config", str(project))[1]
    exported = [json.loads(line) for line in export.splitlines()]
    cities = {p["traits"]["city"] for p in exported if p["traits"].get("city")}
    assert not any(city in output or city.upper() in output for city in cities)
    assert invoke("rebuild", "--config", str(project))[0] == 0
    assert invoke("rebuild", "--config", str(project), "--verify")[0] == 0


def test_verify_says_which_profiles_only_one_side_has_and_tells_1_from_true() -> None:
    before = ({}, {"p_a": "h1", "p_b": "h2", "p_c": "h3"})
    after = ({}, {"p_a": "h9", "p_c": "h3", "p_d": "h4"})
    stored = {"p_a": {"vip": 1, "gone": None, "same": "x"}}
    rebuilt = {"p_a": {"vip": True, "same": "x", "new": 0}}
    assert _differences(before, after, stored, rebuilt) == [
        "profile p_a: traits differ from the rebuild: gone, new, vip",
        "profile p_b: in the store, not made by the rebuild",
        "profile p_d: made by the rebuild, not in the store",
    ]


def test_a_mapping_edit_adds_a_trait_without_a_migration(project: Path) -> None:
    assert invoke("run-once", "--config", str(project))[0] == 0
    mapping = project.parent / "mappings" / "inbox_crm_export.toml"
    mapping.write_text(mapping.read_text() + 'crm_status = "Status | trim | lower"\n')
    assert invoke("rebuild", "--config", str(project))[0] == 0
    _code, output = invoke("profiles", "export", "--config", str(project))
    assert any("crm_status" in json.loads(line)["traits"] for line in output.splitlines())


def test_dry_run_writes_nothing(project: Path) -> None:
    code, output = invoke("run-once", "--config", str(project), "--dry-run")
    assert code == 0
    code, output = invoke("status", "--config", str(project), "--json")
    assert json.loads(output)["records"] == 0


def test_unknown_source_is_a_usage_error(project: Path) -> None:
    code, output = invoke("run-once", "--config", str(project), "--source", "nope")
    assert code == 2 and "unknown source(s): nope" in output


@pytest.mark.parametrize(
    ("system", "name", "holds", "settings"),
    [
        (
            "hubspot",
            "HubSpot",
            f"{sum(in_system(7, i, 'hubspot', 0.8) for i in range(50))} of 50 sample people "
            "(seed 7) as contacts",
            [
                '  host = "{url}"',
                '  access_token = { env = "HUBSPOT_TOKEN" }',
                f"  export HUBSPOT_TOKEN={HUBSPOT_TOKEN}",
            ],
        ),
        (
            "matomo",
            "Matomo",
            "site 1 with ",
            [
                '  url = "{url}"',
                "  site_id = 1",
                '  token_auth = { env = "MATOMO_TOKEN" }',
                f"  export MATOMO_TOKEN={MATOMO_TOKEN}",
            ],
        ),
        (
            "salesforce",
            "Salesforce",
            " leads of 50 sample people (seed 7), ",
            [
                '  instance_url = "{url}"',
                f'  username = "{SALESFORCE.username}"',
                '  password = { env = "SF_PASSWORD" }',
                f"  export SF_PASSWORD={SALESFORCE.password}",
                f"  export SF_TOKEN={SALESFORCE.security_token}",
            ],
        ),
    ],
)
def test_an_emulator_says_what_it_holds_and_the_settings_that_point_syncd_at_it(
    system: str, name: str, holds: str, settings: list[str]
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = ["emulate", system, "--port", str(port), "--people", "50"]
    lines: list[str] = []
    said = threading.Event()
    with subprocess.Popen(
        [sys.executable, "-m", "syncd", *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as process:

        def read() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                lines.append(line.rstrip("\n"))
                if line.startswith("Ctrl-C"):
                    said.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            assert said.wait(30), lines
            with socket.create_connection(("127.0.0.1", port), timeout=10):
                pass  # it serves where it says
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            finally:
                process.kill()
                reader.join(timeout=10)
    assert process.returncode == 0
    url = f"http://127.0.0.1:{port}"
    first, *rest = lines
    assert first.startswith(f"{name} emulator on {url}: ") and holds in first, lines
    for line in settings:
        assert line.replace("{url}", url) in rest, lines
    assert "Ctrl-C stops." in rest


def test_emulate_names_the_known_emulators_for_an_unknown_one() -> None:
    code, output = invoke("emulate", "nosuch")
    assert code == 2
    assert "known: hubspot, matomo, salesforce" in output


def test_demo_runs_both_crms_end_to_end_and_a_second_pass_changes_nothing(project: Path) -> None:
    # As many people as the quick start's demo, so that the person it names is the one the
    # README's explain example shows.
    code, output = invoke("demo", "--config", str(project))
    assert code == 0, output
    assert "salesforce/Contact:" in output
    assert "hubspot/contacts:" in output
    assert "simulated shop:" in output
    named = re.search(r"explore: syncd explain (\S+) ", output)
    assert named is not None, output
    assert f"syncd explain {named.group(1)} " in Path("README.md").read_text(encoding="utf-8")
    assert invoke("explain", named.group(1), "--config", str(project))[0] == 0
    pushed = re.search(r"first pass: pushed (\d+) record", output)
    assert pushed is not None and int(pushed.group(1)) > 0
    assert "0 new record(s), 0 profile(s) changed, 0 record(s) pushed" in output
    code, output = invoke("status", "--config", str(project), "--json")
    sources = {cursor["source"] for cursor in json.loads(output)["cursors"]}
    assert sources == {"inbox", "salesforce", "hubspot", "web", "matomo"}


def test_bad_command_input_is_a_clear_error_not_a_traceback(project: Path) -> None:
    assert invoke("run-once", "--config", str(project))[0] == 0
    code, output = invoke("logs", "--config", str(project), "--level", "bogus")
    assert code == 2 and "unknown --level 'bogus'" in output
    missing = project.parent / "no" / "such" / "folder" / "out.jsonl"
    code, output = invoke("profiles", "export", "--config", str(project), "-o", str(missing))
    assert code == 2 and "give a file in a folder that exists" in output
    text = project.read_text()
    (project.parent / "a-folder").mkdir()
    project.write_text(re.sub(r"(?m)^file = .*$", 'file = "a-folder"', text, count=1))
    code, output = invoke("status", "--config", str(project))
    assert code == 2 and f"{project}:logging.file: cannot write the log" in output
    assert "Traceback" not in output


def test_a_store_path_that_cannot_be_created_is_a_clear_problem(project: Path) -> None:
    blocker = project.parent / "a-file"
    blocker.write_text("")
    database = blocker / "syncd.db"
    project.write_text(
        re.sub(r'(?m)^url = "sqlite.*$', f'url = "sqlite:///{database}"', project.read_text())
    )
    code, output = invoke("status", "--config", str(project))
    assert code == 2
    assert f"cannot create the folder of the SQLite store {database}: " in output
    assert "give [store] url a path in a folder syncd may create or write" in output
    assert "Traceback" not in output
