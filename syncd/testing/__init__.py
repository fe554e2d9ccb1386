"""The standard connector test suite: the tests every source and destination inherits.

A connector's own test module stays small: it subclasses the suite and provides one fixture
that builds a harness around the connector and its loopback emulator::

    from syncd.testing import StandardSourceTests, StandardDestinationTests

    class TestAcmeSource(StandardSourceTests):
        opt_outs = {"test_retry_after_is_obeyed": "Acme sends no Retry-After"}

        @pytest.fixture
        def source_harness(self, acme_emulator) -> SourceHarness:
            return AcmeSourceHarness(acme_emulator)

    class TestAcmeDestination(StandardDestinationTests):
        @pytest.fixture
        def destination_harness(self, acme_emulator) -> DestinationHarness:
            return AcmeDestinationHarness(acme_emulator)

The harness protocols (`SourceHarness`, `DestinationHarness` in `syncd.testing.harness`) say
what the suite needs: build the connector with an injected sleep (a `FakeSleep`, so retries
are observed, not waited for), seed / change / delete records at the emulator, inject a
`Fault` on the next requests, and look at what the emulator received.

Source tests (`StandardSourceTests`):
  - a full read (cursor None) pages end to end and every record arrives exactly once;
  - every page's cursor survives a JSON round trip and the cursors only move forward: reading
    after a later cursor never returns more than reading after an earlier one, and reading
    after the last cursor returns fewer records than the full read;
  - no record changed after a cursor is ever missed, but a source may start each read a
    look-back before its cursor (a system's changes can become visible after later-stamped
    ones), so records inside the look-back may come again: with nothing new, a read after the
    last cursor returns only records the full read returned, unchanged, and the read after
    that one returns the same again;
  - resuming from any page's cursor, as after a kill, yields every remaining record, each once;
  - records changed after a cursor arrive on the next read, besides those inside the look-back;
  - deletions after a cursor arrive in `Page.deleted_ids` on the next read;
  - rate limits, 5xx, timeouts and connection resets are retried after a wait (observed on
    the fake sleep), and the system's Retry-After is the wait when it sends one;
  - refused credentials raise AuthError at once, with no backoff.

Destination tests (`StandardDestinationTests`):
  - an empty push sends nothing;
  - a push larger than `max_batch_size` is split into write requests within the system's
    maximum, and every item gets one result, in order;
  - records the system rejects come back REJECTED with a reason and do not block the rest
    of their batch;
  - rate limits, 5xx, timeouts and resets are retried after a wait;
  - pushing the same state twice leaves the system's state unchanged (upsert by a stable key,
    no duplicates) and returns the same external ids;
  - refused credentials raise AuthError at once, with no backoff.

Opting out of a test takes a written reason: `opt_outs = {"test_name": "reason"}` on the
subclass becomes a skip showing the reason; an unknown test name or a blank reason is a
TypeError at import.
"""

from syncd.testing.destination_suite import StandardDestinationTests
from syncd.testing.harness import DestinationHarness, FakeSleep, Fault, Sleep, SourceHarness
from syncd.testing.source_suite import StandardSourceTests

__all__ = [
    "DestinationHarness",
    "FakeSleep",
    "Fault",
    "Sleep",
    "SourceHarness",
    "StandardDestinationTests",
    "StandardSourceTests",
]
