"""The connector spec and its options: what a syncd.toml may say, and what it may not."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from connectors.salesforce import CONNECTOR, SalesforceDestination, SalesforceSource
from connectors.salesforce.client import org_user
from connectors.salesforce.emulator import SalesforceEmulator
from connectors.salesforce.options import SalesforceOptions
from syncd.connector import ConnectorContext, ConnectorOptions

PASSWORD_LOGIN: dict[str, Any] = {
    "username": "ops@example.com",
    "password": {"env": "SF_PASSWORD"},
    "security_token": {"env": "SF_TOKEN"},
}


def test_defaults_for_a_password_login() -> None:
    options = SalesforceOptions(**PASSWORD_LOGIN)
    assert options.domain == "login"
    assert options.objects == ("Contact", "Lead", "Account")
    assert (options.api_version, options.page_size, options.external_id_field) == (
        "59.0",
        2000,
        "Syncd_Id__c",
    )
    assert options.lookback_seconds == 300


def test_oauth_with_a_my_domain() -> None:
    options = SalesforceOptions(
        domain="acme.my", client_id={"env": "SF_ID"}, client_secret={"env": "SF_SECRET"}
    )
    assert options.client_secret is not None
    assert options.client_secret.env == "SF_SECRET"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({**PASSWORD_LOGIN, "password": "hunter2"}, "literal secret is not allowed"),
        ({}, "either username"),
        ({**PASSWORD_LOGIN, "client_id": {"env": "A"}, "client_secret": {"env": "B"}}, "either"),
        ({"username": "ops@example.com", "password": {"env": "P"}}, "go together"),
        ({"client_id": {"env": "A"}}, "go together"),
        ({"client_id": {"env": "A"}, "client_secret": {"env": "B"}}, "My Domain"),
        ({**PASSWORD_LOGIN, "instance_url": "http://crm.example.com"}, "only for an emulator"),
        ({**PASSWORD_LOGIN, "instance_url": "https://127.0.0.1:9"}, "only for an emulator"),
        ({**PASSWORD_LOGIN, "api_version": "v59.0"}, "digits"),
        ({**PASSWORD_LOGIN, "page_size": 100}, "greater than or equal to 200"),
        ({**PASSWORD_LOGIN, "lookback_seconds": -1}, "greater than or equal to 0"),
        ({**PASSWORD_LOGIN, "objects": ["Contact"], "colour": "blue"}, "Extra inputs"),
        ({**PASSWORD_LOGIN, "fields": {"Contact": ["Id", "Email", "email"]}}, "email twice"),
    ],
)
def test_invalid_options(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        SalesforceOptions(**values)


def test_loopback_instance_urls_are_accepted() -> None:
    for url in ("http://127.0.0.1:8710", "http://localhost:8710"):
        assert SalesforceOptions(**PASSWORD_LOGIN, instance_url=url).instance_url == url


def test_the_spec_builds_sources_and_destinations(emulator: SalesforceEmulator) -> None:
    assert CONNECTOR.kind == "salesforce"
    assert CONNECTOR.options_model is SalesforceOptions
    assert CONNECTOR.make_source is not None
    assert CONNECTOR.make_destination is not None
    options = SalesforceOptions(
        instance_url=emulator.url,
        username=emulator.credentials.username,
        password={"env": "SF_TEST_PASSWORD"},
        security_token={"env": "SF_TEST_TOKEN"},
        objects=("Account",),
    )
    context = ConnectorContext("crm", options, Path())
    source = CONNECTOR.make_source(context)
    destination = CONNECTOR.make_destination(context)
    assert isinstance(source, SalesforceSource)
    assert isinstance(destination, SalesforceDestination)
    assert destination.max_batch_size == 200
    assert sum(len(page.records) for page in source.read("Account", None)) == 12
    source.close()
    destination.close()


def _built(
    options: SalesforceOptions, name: str = "crm"
) -> tuple[SalesforceSource, SalesforceDestination]:
    assert CONNECTOR.make_source is not None
    assert CONNECTOR.make_destination is not None
    context = ConnectorContext(name, options, Path())
    return CONNECTOR.make_source(context), CONNECTOR.make_destination(context)


def test_pulls_and_pushes_of_one_org_and_user_share_one_budget() -> None:
    org = {"instance_url": "http://127.0.0.1:8710", **PASSWORD_LOGIN}
    source, destination = _built(SalesforceOptions(**org))
    again, _ = _built(SalesforceOptions(**org, objects=("Lead",)), name="leads")
    other_user, _ = _built(SalesforceOptions(**{**org, "username": "etl@example.com"}))
    other_org, _ = _built(SalesforceOptions(**{**org, "instance_url": "http://127.0.0.1:8711"}))
    assert destination.client.budget is source.client.budget
    assert again.client.budget is source.client.budget
    assert other_user.client.budget is not source.client.budget
    assert other_org.client.budget is not source.client.budget


def test_a_connected_app_shares_its_budget_by_a_fingerprint_of_its_client_id(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SF_ID", "3MVG9-budget-client-id")
    monkeypatch.setenv("SF_OTHER_ID", "3MVG9-another-client-id")
    oauth = {"domain": "acme.my", "client_id": {"env": "SF_ID"}, "client_secret": {"env": "S"}}
    source, destination = _built(SalesforceOptions(**oauth))
    other, _ = _built(SalesforceOptions(**{**oauth, "client_id": {"env": "SF_OTHER_ID"}}))
    assert destination.client.budget is source.client.budget
    assert other.client.budget is not source.client.budget
    assert "3MVG9-budget-client-id" not in org_user(SalesforceOptions(**oauth))


def test_the_spec_refuses_foreign_options() -> None:
    assert CONNECTOR.make_source is not None
    with pytest.raises(TypeError, match="expected SalesforceOptions"):
        CONNECTOR.make_source(ConnectorContext("crm", ConnectorOptions(), Path()))
