"""The event ingest endpoint: SDK events in, durably committed through an EventSink."""

from syncd.ingest.app import create_app
from syncd.ingest.server import serve
from syncd.ingest.sink import EventSink
from syncd.ingest.spec import IngestMessage

__all__ = ["EventSink", "IngestMessage", "create_app", "serve"]
