"""The Salesforce connector: objects as incremental streams, upserts by external id.

Built on simple-salesforce (REST v59.0 and Bulk 2.0); `emulator` serves a loopback org for
tests, the demo and benchmarks. See docs/connectors/salesforce.md.
"""

from __future__ import annotations

from connectors.salesforce.client import SalesforceClient
from connectors.salesforce.destination import SalesforceDestination
from connectors.salesforce.options import SalesforceOptions
from connectors.salesforce.source import SalesforceSource
from syncd.connector import ConnectorContext, ConnectorSpec


def _options(context: ConnectorContext) -> SalesforceOptions:
    if not isinstance(context.options, SalesforceOptions):
        raise TypeError(f"{context.name}: expected SalesforceOptions, got {type(context.options)}")
    return context.options


def make_source(context: ConnectorContext) -> SalesforceSource:
    """A source reading the configured objects of one org."""
    return SalesforceSource(SalesforceClient(_options(context)))


def make_destination(context: ConnectorContext) -> SalesforceDestination:
    """A destination upserting into the objects of one org."""
    return SalesforceDestination(SalesforceClient(_options(context)))


CONNECTOR = ConnectorSpec(
    kind="salesforce",
    options_model=SalesforceOptions,
    make_source=make_source,
    make_destination=make_destination,
)

__all__ = [
    "CONNECTOR",
    "SalesforceClient",
    "SalesforceDestination",
    "SalesforceOptions",
    "SalesforceSource",
]
