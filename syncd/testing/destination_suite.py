"""The standard tests every destination inherits."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from syncd.connector import Outcome, PushItem, PushResult
from syncd.errors import AuthError
from syncd.testing.harness import DestinationHarness, FakeSleep, Fault
from syncd.testing.optout import OptOuts


class StandardDestinationTests(OptOuts):
    """Subclass this and provide a `destination_harness` fixture returning a DestinationHarness."""

    def _push(
        self, harness: DestinationHarness, items: Sequence[PushItem], sleep: FakeSleep | None = None
    ) -> list[PushResult]:
        destination = harness.make_destination(sleep or FakeSleep())
        try:
            return destination.push(harness.target, items)
        finally:
            destination.close()

    @staticmethod
    def _assert_all_ok(items: Sequence[PushItem], results: Sequence[PushResult]) -> None:
        assert [result.key for result in results] == [item.key for item in items]
        assert [result.outcome for result in results] == [Outcome.OK] * len(items), results

    def test_empty_push_sends_nothing(self, destination_harness: DestinationHarness) -> None:
        assert self._push(destination_harness, []) == []
        assert destination_harness.write_batches() == []

    def test_batches_stay_within_the_system_maximum(
        self, destination_harness: DestinationHarness
    ) -> None:
        destination = destination_harness.make_destination(FakeSleep())
        try:
            assert destination.max_batch_size <= destination_harness.system_max_batch
            items = [destination_harness.item(i) for i in range(2 * destination.max_batch_size + 3)]
            results = destination.push(destination_harness.target, items)
        finally:
            destination.close()
        self._assert_all_ok(items, results)
        batches = destination_harness.write_batches()
        assert len(batches) >= 3
        assert max(batches) <= destination_harness.system_max_batch
        assert {item.match_value for item in items} <= set(destination_harness.stored())

    def test_rejected_records_do_not_block_the_rest(
        self, destination_harness: DestinationHarness
    ) -> None:
        bad = {1, 4}
        items = [
            destination_harness.invalid_item(i) if i in bad else destination_harness.item(i)
            for i in range(6)
        ]
        results = self._push(destination_harness, items)
        assert [result.key for result in results] == [item.key for item in items]
        stored = destination_harness.stored()
        for index, (item, result) in enumerate(zip(items, results, strict=True)):
            if index in bad:
                assert result.outcome is Outcome.REJECTED
                assert result.reason
                assert item.match_value not in stored
            else:
                assert result.outcome is Outcome.OK
                assert result.external_id
                assert item.match_value in stored

    @pytest.mark.parametrize(
        "fault", [Fault.RATE_LIMIT, Fault.SERVER_ERROR, Fault.TIMEOUT, Fault.RESET]
    )
    def test_transient_failures_are_retried(
        self, destination_harness: DestinationHarness, fault: Fault
    ) -> None:
        items = [destination_harness.item(i) for i in range(5)]
        sleep = FakeSleep()
        destination = destination_harness.make_destination(sleep)
        try:
            destination_harness.inject(fault)
            results = destination.push(destination_harness.target, items)
        finally:
            destination.close()
        self._assert_all_ok(items, results)
        assert sleep.waits, "the failure was not retried after a wait"
        assert {item.match_value for item in items} <= set(destination_harness.stored())

    def test_pushing_the_same_state_again_changes_nothing(
        self, destination_harness: DestinationHarness
    ) -> None:
        items = [destination_harness.item(i) for i in range(7)]
        first = self._push(destination_harness, items)
        self._assert_all_ok(items, first)
        before = {key: dict(fields) for key, fields in destination_harness.stored().items()}
        again = self._push(destination_harness, items)
        self._assert_all_ok(items, again)
        after = {key: dict(fields) for key, fields in destination_harness.stored().items()}
        assert after == before
        assert [r.external_id for r in again] == [r.external_id for r in first]

    def test_refused_credentials_are_not_retried(
        self, destination_harness: DestinationHarness
    ) -> None:
        sleep = FakeSleep()
        destination = destination_harness.make_destination(sleep)
        try:
            destination_harness.inject(Fault.AUTH, times=1000)
            with pytest.raises(AuthError):
                destination.push(destination_harness.target, [destination_harness.item(0)])
        finally:
            destination.close()
        assert sleep.waits == [], "an auth failure was retried with backoff"
