from __future__ import annotations

from pathlib import Path

import pytest

from syncd.config import load_config
from syncd.errors import ConfigError
from syncd.mapping.compiler import compile_mappings
from tests.support.project import write_project


def problems_of(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return [str(p) for p in caught.value.problems]


def test_the_shipped_config_is_valid() -> None:
    config = load_config(Path("syncd.toml"))
    assert "inbox" in config.sources
    assert config.store_url.startswith("sqlite:///")
    assert config.identity.kinds["user_id"].limit == 1
    assert "loyalty_number" in config.identity.kinds


def test_unknown_keys_and_bad_values_are_all_listed(tmp_path: Path) -> None:
    path = tmp_path / "syncd.toml"
    path.write_text(
        'colour = "blue"\nworkers = 0\n[identity]\ndefault_region = "ZZ"\n[store]\n'
        'url = "sqlite:///x.db"\n'
    )
    found = problems_of(path)
    assert f"{path}:colour: unknown key — remove it or check its spelling" in found
    assert any(":identity.default_region: unknown region 'ZZ'" in p for p in found)
    assert any(":workers: Input should be greater than or equal to 1" in p for p in found)


def test_changing_one_key_of_a_built_in_kind_keeps_the_others(tmp_path: Path) -> None:
    path = write_project(
        tmp_path, "sqlite:///x.db", extra_config="[identity.kinds.email]\nlimit = 2\n"
    )
    email = load_config(path).identity.kinds["email"]
    assert (email.normalize, email.priority, email.limit) == ("email", 10, 2)


def test_connector_options_are_validated_by_the_connector(tmp_path: Path) -> None:
    path = write_project(
        tmp_path,
        "sqlite:///x.db",
        extra_config="""
        [sources.shop]
        type = "files"
        [sources.shop.options]
        folder = "in"
        batch = 3
        """,
    )
    found = problems_of(path)
    assert any("sources.shop.options.batch: unknown key" in p for p in found)
    assert any("sources.shop.options.streams: required key is missing" in p for p in found)


def test_a_connector_option_beside_type_is_to_be_moved_into_options(tmp_path: Path) -> None:
    path = write_project(
        tmp_path,
        "sqlite:///x.db",
        extra_config="""
        [sources.web]
        type = "matomo"
        url = "https://matomo.example.com"
        colour = "blue"
        [destinations."hub spot"]
        type = "hubspot"
        id_property = "email"
        """,
    )
    found = problems_of(path)
    assert f"{path}:sources.web.url: unknown key — move it under [sources.web.options]" in found
    assert f"{path}:sources.web.colour: unknown key — remove it or check its spelling" in found
    moved = 'move it under [destinations."hub spot".options]'
    assert f"{path}:destinations.hub spot.id_property: unknown key — {moved}" in found


def test_unknown_connector_type_names_the_known_ones(tmp_path: Path) -> None:
    path = write_project(
        tmp_path, "sqlite:///x.db", extra_config='[sources.shop]\ntype = "nosuch"\n'
    )
    found = problems_of(path)
    assert any(
        "sources.shop.type: unknown connector 'nosuch' — use one of: files" in p for p in found
    )


def test_a_literal_password_in_the_store_url_is_refused(tmp_path: Path) -> None:
    path = write_project(tmp_path, "postgresql+psycopg://app:hunter2@db/syncd")
    found = problems_of(path)
    assert any("store.url" in p and 'url = { env = "SYNCD_STORE_URL" }' in p for p in found)
    assert not any("hunter2" in p for p in found)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql+psycopg://app@db/syncd?password=hunter2", "the URL holds a password"),
        ("postgresql+psycopg://app@db/syncd?sslpassword=hunter2", "the URL holds a password"),
        ("notaurl", "not a database URL"),
    ],
)
def test_a_store_url_with_a_password_anywhere_or_no_url_at_all_is_refused(
    tmp_path: Path, url: str, message: str
) -> None:
    found = problems_of(write_project(tmp_path, url))
    assert any(":store.url: " in p and message in p for p in found)
    assert not any("hunter2" in p for p in found)


def test_a_literal_password_in_the_ingest_spool_url_is_refused(tmp_path: Path) -> None:
    path = write_project(
        tmp_path,
        "sqlite:///x.db",
        extra_config="""
        [sources.web]
        type = "ingest"
        [sources.web.options]
        write_keys = [{ env = "WEB_KEY" }]
        store_url = "postgresql://u:hunter2@db.invalid/x"
        """,
    )
    found = problems_of(path)
    assert any(
        "sources.web.options.store_url: " in p
        and "holds a password" in p
        and 'write store_url = { env = "' in p
        for p in found
    )
    assert not any("hunter2" in p for p in found)


@pytest.mark.parametrize(
    ("content", "message"), [(None, "Is a directory"), (b"url = '\xe9'\n", "not UTF-8 text")]
)
def test_a_config_that_is_a_folder_or_not_utf8_is_a_problem_not_a_crash(
    tmp_path: Path, content: bytes | None, message: str
) -> None:
    path = tmp_path / "syncd.toml"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    (problem,) = problems_of(path)
    assert problem.startswith(f"{path}:(file): {message}")


def test_store_url_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_project(tmp_path, "unused")
    text = path.read_text().replace('url = "unused"', 'url = { env = "TEST_STORE_URL" }')
    path.write_text(text)
    assert any(
        "TEST_STORE_URL: environment variable is not set — export TEST_STORE_URL" in p
        for p in problems_of(path)
    )
    monkeypatch.setenv("TEST_STORE_URL", "sqlite:////tmp/elsewhere.db")
    assert load_config(path).store_url == "sqlite:////tmp/elsewhere.db"


def test_relative_sqlite_path_is_relative_to_the_config(tmp_path: Path) -> None:
    path = write_project(tmp_path, "sqlite:///var/s.db")
    assert load_config(path).store_url == f"sqlite:///{tmp_path / 'var' / 's.db'}"


def test_missing_file_and_bad_syntax(tmp_path: Path) -> None:
    assert "config file not found" in problems_of(tmp_path / "none.toml")[0]
    bad = tmp_path / "bad.toml"
    bad.write_text("[store\n")
    assert ":(syntax):" in problems_of(bad)[0]


def test_a_source_priority_rule_names_each_source_once(tmp_path: Path) -> None:
    path = write_project(tmp_path, "sqlite:///x.db")
    (tmp_path / "mappings" / "profile.toml").write_text(
        '[traits.email]\nrule = "source_priority"\nsources = ["crm", "old_crm", "crm"]\n'
    )
    with pytest.raises(ConfigError) as caught:
        compile_mappings(load_config(path))
    assert [str(p) for p in caught.value.problems] == [
        f"{tmp_path / 'mappings' / 'profile.toml'}:traits.email.sources: 'crm' is listed twice"
        " — list each source once, most trusted first"
    ]
