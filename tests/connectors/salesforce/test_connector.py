"""The connector spec and its options: what a syncd.toml may say, and what it may not."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from connectors.salesforce import CONNECTOR, SalesforceDestination, SalesforceSource
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
        ({**PASSWORD_LOGIN, "objects": ["Contact"], "colour": "blue"}, "Extra inputs"),
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


def test_the_spec_refuses_foreign_options() -> None:
    assert CONNECTOR.make_source is not None
    with pytest.raises(TypeError, match="expected SalesforceOptions"):
        CONNECTOR.make_source(ConnectorContext("crm", ConnectorOptions(), Path()))
