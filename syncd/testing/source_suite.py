"""The standard tests every source inherits."""

from __future__ import annotations

import json
from collections.abc import Iterable

import pytest

from syncd.connector import JsonValue, Page
from syncd.errors import AuthError
from syncd.testing.harness import FakeSleep, Fault, SourceHarness
from syncd.testing.optout import OptOuts


def _roundtrip(cursor: JsonValue) -> JsonValue:
    """The cursor as the engine will give it back after storing it."""
    return json.loads(json.dumps(cursor))


class StandardSourceTests(OptOuts):
    """Subclass this and provide a `source_harness` fixture returning a SourceHarness."""

    def _read(
        self, harness: SourceHarness, cursor: JsonValue | None, sleep: FakeSleep | None = None
    ) -> list[Page]:
        source = harness.make_source(sleep or FakeSleep())
        try:
            return list(source.read(harness.stream, cursor))
        finally:
            source.close()

    @staticmethod
    def _ids(harness: SourceHarness, pages: Iterable[Page]) -> list[str]:
        return [harness.record_id(record) for page in pages for record in page.records]

    def test_full_read_pages_every_record_exactly_once(self, source_harness: SourceHarness) -> None:
        pages = self._read(source_harness, None)
        ids = self._ids(source_harness, pages)
        assert sum(1 for page in pages if page.records) >= 2, "seed enough records for paging"
        assert len(ids) == len(set(ids)), "a record arrived twice"
        assert set(ids) == source_harness.live_ids()
        assert all(record.error is None for page in pages for record in page.records)

    def test_cursors_survive_json_and_move_forward(self, source_harness: SourceHarness) -> None:
        pages = self._read(source_harness, None)
        remaining = [
            len(self._ids(source_harness, self._read(source_harness, _roundtrip(page.cursor))))
            for page in pages
        ]
        assert remaining == sorted(remaining, reverse=True)
        assert remaining[-1] < len(self._ids(source_harness, pages)), (
            "the last cursor moved nothing"
        )

    def test_a_read_with_nothing_new_reads_only_the_look_back_again(
        self, source_harness: SourceHarness
    ) -> None:
        pages = self._read(source_harness, None)
        full = {source_harness.record_id(r): r.payload for page in pages for r in page.records}
        again = self._read(source_harness, _roundtrip(pages[-1].cursor))
        # A source may start each read a look-back before its cursor: what comes again is the
        # same record, which the store finds unchanged and does not write.
        for record in (record for page in again for record in page.records):
            key = source_harness.record_id(record)
            assert record.payload == full.get(key), f"record {key} came back different"
        cursor = again[-1].cursor if again else pages[-1].cursor
        still = self._read(source_harness, _roundtrip(cursor))
        assert sorted(self._ids(source_harness, still)) == sorted(
            self._ids(source_harness, again)
        ), "with nothing new, the look-back moved"

    def test_resume_from_any_page_cursor_yields_every_remaining_record(
        self, source_harness: SourceHarness
    ) -> None:
        pages = self._read(source_harness, None)
        for index, page in enumerate(pages):
            rest = self._ids(source_harness, self._read(source_harness, _roundtrip(page.cursor)))
            expected = self._ids(source_harness, pages[index + 1 :])
            assert len(rest) == len(set(rest)), f"a record arrived twice after page {index}"
            assert set(expected) <= set(rest), f"resuming after page {index} lost records"

    def test_changes_after_the_cursor_arrive_on_the_next_read(
        self, source_harness: SourceHarness
    ) -> None:
        pages = self._read(source_harness, None)
        cursor = _roundtrip(pages[-1].cursor)
        looked_back = set(self._ids(source_harness, self._read(source_harness, cursor)))
        changed = sorted(source_harness.live_ids())[:3]
        source_harness.change(changed)
        later = self._ids(source_harness, self._read(source_harness, cursor))
        assert len(later) == len(set(later)), "a record arrived twice"
        assert set(changed) <= set(later)
        assert set(later) <= set(changed) | looked_back, "unchanged records beyond the look-back"

    def test_deletions_arrive_on_the_next_read(self, source_harness: SourceHarness) -> None:
        pages = self._read(source_harness, None)
        deleted = sorted(source_harness.live_ids())[-2:]
        source_harness.delete(deleted)
        later = self._read(source_harness, _roundtrip(pages[-1].cursor))
        reported = {deleted_id for page in later for deleted_id in page.deleted_ids}
        assert set(deleted) <= reported
        assert not set(deleted) & set(self._ids(source_harness, later))

    @pytest.mark.parametrize(
        "fault", [Fault.RATE_LIMIT, Fault.SERVER_ERROR, Fault.TIMEOUT, Fault.RESET]
    )
    def test_transient_failures_are_retried_with_backoff(
        self, source_harness: SourceHarness, fault: Fault
    ) -> None:
        sleep = FakeSleep()
        source = source_harness.make_source(sleep)
        try:
            source_harness.inject(fault, times=2)
            ids = self._ids(source_harness, source.read(source_harness.stream, None))
        finally:
            source.close()
        assert set(ids) == source_harness.live_ids()
        assert len(ids) == len(set(ids))
        assert len(sleep.waits) >= 2, "the failures were not retried after a wait"
        assert all(wait > 0 for wait in sleep.waits)

    def test_retry_after_is_obeyed(self, source_harness: SourceHarness) -> None:
        if source_harness.rate_limit_retry_after is None:
            pytest.skip("the system sends no Retry-After with its rate-limit answer")
        sleep = FakeSleep()
        source = source_harness.make_source(sleep)
        try:
            source_harness.inject(Fault.RATE_LIMIT)
            list(source.read(source_harness.stream, None))
        finally:
            source.close()
        assert source_harness.rate_limit_retry_after in sleep.waits

    def test_refused_credentials_are_not_retried(self, source_harness: SourceHarness) -> None:
        sleep = FakeSleep()
        source = source_harness.make_source(sleep)
        try:
            source_harness.inject(Fault.AUTH, times=1000)
            with pytest.raises(AuthError):
                list(source.read(source_harness.stream, None))
        finally:
            source.close()
        assert sleep.waits == [], "an auth failure was retried with backoff"
