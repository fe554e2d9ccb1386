"""HubSpot CRM v3: a source of contacts/companies/any object and a destination for upserts
and list memberships, built on `hubspot-api-client`, with a loopback emulator beside them."""

from __future__ import annotations

from connectors.hubspot.client import HubSpotClient
from connectors.hubspot.destination import HubSpotDestination
from connectors.hubspot.options import HubSpotOptions
from connectors.hubspot.source import HubSpotSource
from syncd.budget import account_fingerprint, shared_budget
from syncd.connector import ConnectorContext, ConnectorSpec
from syncd.errors import ConfigError, Problem
from syncd.retry import RetryPolicy

__all__ = ["CONNECTOR", "HubSpotDestination", "HubSpotOptions", "HubSpotSource", "make_client"]


def _options(context: ConnectorContext) -> HubSpotOptions:
    options = context.options
    if not isinstance(options, HubSpotOptions):
        raise ConfigError(
            [Problem(context.name, "type", "options are not HubSpot options", 'type = "hubspot"')]
        )
    return options


SEARCH_LIMIT = (4, 1.0)
"""Searches per second: HubSpot allows 5 per account on top of the request budget, counted
when they arrive; counted here when they leave, one less keeps a late one inside."""


def make_client(context: ConnectorContext) -> HubSpotClient:
    """A client for the account named in `context`, on that account's shared budget."""
    options = _options(context)
    token = options.access_token.resolve(f"{context.name}.access_token")
    account = ("hubspot", options.host, account_fingerprint(token))
    return HubSpotClient(
        host=options.host,
        access_token=token,
        budget=shared_budget(account, options.budget, options.budget_window),
        timeout=options.timeout,
        policy=RetryPolicy(attempts=options.retry_attempts),
        search_budget=shared_budget((*account, "search"), *SEARCH_LIMIT),
    )


def make_source(context: ConnectorContext) -> HubSpotSource:
    """The source factory named in CONNECTOR."""
    options = _options(context)
    return HubSpotSource(
        make_client(context),
        objects=options.objects,
        properties=options.properties,
        page_size=options.page_size,
        search_page_size=options.search_page_size,
        lookback_seconds=options.lookback_seconds,
    )


def make_destination(context: ConnectorContext) -> HubSpotDestination:
    """The destination factory named in CONNECTOR."""
    options = _options(context)
    return HubSpotDestination(
        make_client(context), id_property=options.id_property, batch_size=options.batch_size
    )


CONNECTOR = ConnectorSpec(
    kind="hubspot",
    options_model=HubSpotOptions,
    make_source=make_source,
    make_destination=make_destination,
)
