"""The connector package: its options model and the factories the engine calls."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from connectors.hubspot import CONNECTOR, SEARCH_LIMIT, HubSpotOptions, make_client
from connectors.hubspot.emulator import HubSpotEmulator
from syncd.connector import ConnectorContext, Outcome, PushItem
from syncd.errors import ConfigError


def options(**given: object) -> HubSpotOptions:
    return HubSpotOptions.model_validate({"access_token": {"env": "HUBSPOT_TOKEN"}, **given})


def test_options_defaults_and_limits() -> None:
    parsed = options()
    assert parsed.host == "https://api.hubapi.com"
    assert parsed.objects == ("contacts", "companies")
    assert (parsed.page_size, parsed.batch_size, parsed.budget) == (100, 100, 100)
    assert parsed.lookback_seconds == 300
    with pytest.raises(ValidationError, match="lookback_seconds"):
        options(lookback_seconds=-1)
    with pytest.raises(ValidationError, match="page_size"):
        options(page_size=101)
    with pytest.raises(ValidationError, match="search_page_size"):
        options(search_page_size=201)
    with pytest.raises(ValidationError, match="http"):
        options(host="api.hubapi.com")
    with pytest.raises(ValidationError, match="extra"):
        options(api_key="x")


def test_a_literal_token_is_refused() -> None:
    with pytest.raises(ValidationError, match="literal secret"):
        HubSpotOptions.model_validate({"access_token": "pat-na1-123"})


def test_an_unset_token_variable_names_the_connector(tmp_path: Path) -> None:
    assert CONNECTOR.make_source is not None
    context = ConnectorContext("crm", options(), tmp_path)
    with pytest.raises(ConfigError, match=r"crm\.access_token"):
        CONNECTOR.make_source(context)


def test_factories_build_a_working_source_and_destination(
    emulator: HubSpotEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HUBSPOT_TOKEN", emulator.access_token)
    context = ConnectorContext("crm", options(host=emulator.url, objects=["contacts"]), tmp_path)
    assert CONNECTOR.kind == "hubspot"
    assert CONNECTOR.options_model is HubSpotOptions
    assert CONNECTOR.make_source is not None
    assert CONNECTOR.make_destination is not None
    source = CONNECTOR.make_source(context)
    destination = CONNECTOR.make_destination(context)
    try:
        assert source.streams() == ("contacts",)
        pages = list(source.read("contacts", None))
        assert sum(len(page.records) for page in pages) == 60
        pushed = destination.push("contacts", [PushItem("p", "new@example.com", {"city": "Oslo"})])
        assert pushed[0].outcome is Outcome.OK
        assert destination.max_batch_size == 100
    finally:
        source.close()
        destination.close()


def test_clients_of_one_account_share_its_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HUBSPOT_TOKEN", "pat-budget-one")
    monkeypatch.setenv("OTHER_TOKEN", "pat-budget-two")
    pull = make_client(ConnectorContext("crm", options(), tmp_path))
    push = make_client(ConnectorContext("crm_out", options(id_property="syncd_key"), tmp_path))
    other = make_client(
        ConnectorContext("other", options(access_token={"env": "OTHER_TOKEN"}), tmp_path)
    )
    try:
        assert pull.budget is push.budget
        assert other.budget is not pull.budget
        # Searches keep HubSpot's own limit too, per account.
        assert pull.search_budget is not None and pull.search_budget is push.search_budget
        assert (pull.search_budget.max_requests, pull.search_budget.per_seconds) == SEARCH_LIMIT
        assert other.search_budget is not pull.search_budget
    finally:
        for client in (pull, push, other):
            client.close()
