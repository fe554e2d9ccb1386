"""The standard suites run against a small in-memory system, and their opt-out rules."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from syncd.connector import JsonValue, Outcome, Page, PushItem, PushResult, RawRecord
from syncd.errors import AuthError, RetryableError
from syncd.retry import RetryPolicy, call_with_retry
from syncd.testing import (
    FakeSleep,
    Fault,
    Sleep,
    StandardDestinationTests,
    StandardSourceTests,
)


class MemorySystem:
    """A toy system: records with a version clock, faults raised as the connectors would."""

    def __init__(self, people: int) -> None:
        self.clock = 0
        self.rows: dict[str, dict[str, Any]] = {}
        for i in range(people):
            self.clock += 1
            self.rows[f"r{i:04d}"] = {"id": f"r{i:04d}", "v": self.clock, "deleted": False}
        self.faults: list[Fault] = []
        self.batches: list[int] = []
        self.pushed: dict[str, dict[str, Any]] = {}

    def call(self) -> None:
        if self.faults:
            fault = self.faults.pop(0)
            if fault is Fault.AUTH:
                raise AuthError("refused")
            raise RetryableError(
                fault.value, retry_after=1.5 if fault is Fault.RATE_LIMIT else None
            )


class MemorySource:
    def __init__(self, system: MemorySystem, sleep: Sleep) -> None:
        self.system, self.sleep = system, sleep

    def streams(self) -> Sequence[str]:
        return ["rows"]

    def read(self, stream: str, cursor: JsonValue | None) -> Iterator[Page]:
        after = cursor or 0
        rows = sorted(
            (r for r in self.system.rows.values() if r["v"] > after), key=lambda r: r["v"]
        )
        for start in range(0, len(rows), 4):
            call_with_retry(self.system.call, RetryPolicy(), self.sleep)
            chunk = rows[start : start + 4]
            yield Page(
                records=[RawRecord(r, r["id"]) for r in chunk if not r["deleted"]],
                cursor=chunk[-1]["v"],
                deleted_ids=[r["id"] for r in chunk if r["deleted"]],
            )

    def close(self) -> None:
        pass


class MemoryDestination:
    max_batch_size = 3

    def __init__(self, system: MemorySystem, sleep: Sleep) -> None:
        self.system, self.sleep = system, sleep

    def push(self, target: str, items: Sequence[PushItem]) -> list[PushResult]:
        results = []
        for start in range(0, len(items), self.max_batch_size):
            batch = items[start : start + self.max_batch_size]
            call_with_retry(self.system.call, RetryPolicy(), self.sleep)
            self.system.batches.append(len(batch))
            for item in batch:
                if "@" not in item.fields["email"]:
                    results.append(PushResult(item.key, Outcome.REJECTED, reason="bad email"))
                    continue
                self.system.pushed[item.match_value] = dict(item.fields)
                results.append(PushResult(item.key, Outcome.OK, external_id=item.match_value))
        return results

    def close(self) -> None:
        pass


class MemoryHarness:
    stream = "rows"
    target = "rows"
    rate_limit_retry_after = 1.5
    system_max_batch = 3

    def __init__(self) -> None:
        self.system = MemorySystem(10)

    def make_source(self, sleep: Sleep) -> MemorySource:
        return MemorySource(self.system, sleep)

    def make_destination(self, sleep: Sleep) -> MemoryDestination:
        return MemoryDestination(self.system, sleep)

    def record_id(self, record: RawRecord) -> str:
        return str(record.payload["id"])

    def live_ids(self) -> set[str]:
        return {k for k, r in self.system.rows.items() if not r["deleted"]}

    def change(self, ids: Sequence[str]) -> None:
        for row_id in ids:
            self.system.clock += 1
            self.system.rows[row_id]["v"] = self.system.clock

    def delete(self, ids: Sequence[str]) -> None:
        self.change(ids)
        for row_id in ids:
            self.system.rows[row_id]["deleted"] = True

    def inject(self, fault: Fault, times: int = 1) -> None:
        self.system.faults.extend([fault] * times)

    def item(self, index: int) -> PushItem:
        return PushItem(f"p{index}", f"m{index}", {"email": f"p{index}@example.com"})

    def invalid_item(self, index: int) -> PushItem:
        return PushItem(f"p{index}", f"m{index}", {"email": "not an email"})

    def write_batches(self) -> list[int]:
        return list(self.system.batches)

    def stored(self) -> Mapping[str, Mapping[str, Any]]:
        return self.system.pushed


class TestMemorySource(StandardSourceTests):
    @pytest.fixture
    def source_harness(self) -> MemoryHarness:
        return MemoryHarness()


class TestMemoryDestination(StandardDestinationTests):
    @pytest.fixture
    def destination_harness(self) -> MemoryHarness:
        return MemoryHarness()


def test_an_opt_out_becomes_a_skip_with_its_reason(tmp_path: Path) -> None:
    (tmp_path / "test_x.py").write_text(
        textwrap.dedent(
            """
            import pytest
            from syncd.testing import StandardDestinationTests

            class TestX(StandardDestinationTests):
                opt_outs = {"test_empty_push_sends_nothing": "no empty pushes here"}

                @pytest.fixture
                def destination_harness(self):
                    pytest.fail("an opted-out test must not build its harness")
            """
        )
    )
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-k", "empty_push", "-rs", "-p", "no:cacheprovider"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    assert run.returncode == 0, run.stdout
    assert "1 skipped" in run.stdout
    assert "opted out: no empty pushes here" in run.stdout


def test_an_opt_out_without_a_reason_is_an_error() -> None:
    with pytest.raises(TypeError, match="needs a written reason"):
        type(
            "TestBlank",
            (StandardSourceTests,),
            {"opt_outs": {"test_deletions_arrive_on_the_next_read": " "}},
        )


def test_an_opt_out_of_an_unknown_test_is_an_error() -> None:
    with pytest.raises(TypeError, match="not a test"):
        type("TestTypo", (StandardSourceTests,), {"opt_outs": {"test_deletion": "typo"}})


def test_fake_sleep_records_waits() -> None:
    sleep = FakeSleep()
    sleep(0.5)
    sleep(2)
    assert sleep.waits == [0.5, 2]
