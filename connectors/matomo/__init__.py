"""Matomo web analytics: a source of visits and actions from the Live API, and its emulator."""

from connectors.matomo.options import MatomoOptions
from connectors.matomo.source import MatomoSource
from syncd.connector import ConnectorContext, ConnectorSpec, Source


def _make_source(context: ConnectorContext) -> Source:
    options = context.options
    if not isinstance(options, MatomoOptions):
        raise TypeError(f"{context.name}: expected MatomoOptions, got {type(options).__name__}")
    return MatomoSource(options, options.token_auth.resolve(f"sources.{context.name}.token_auth"))


CONNECTOR = ConnectorSpec(kind="matomo", options_model=MatomoOptions, make_source=_make_source)

__all__ = ["CONNECTOR", "MatomoOptions", "MatomoSource"]
