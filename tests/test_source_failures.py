"""A run that fails leaves its sync_run row saying so: a source that cannot be made (its secret
unset) fails alone and the run goes on; a rebuild or a replay stopped by an error is failed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from syncd.config import Config, ConnectorEntry
from syncd.connector import JsonValue, Page, Source
from syncd.errors import ConfigError, Problem
from syncd.runner import Pipeline
from syncd.store.db import transaction
from tests.support.project import Project, ScriptedSource


class LogsInOnFirstRead(ScriptedSource):
    """A source that reads its secret when it first logs in, as simple-salesforce does."""

    def __init__(self, unset: ConfigError) -> None:
        super().__init__({})
        self.unset = unset

    def read(self, stream: str, cursor: JsonValue | None) -> Iterator[Page]:
        raise self.unset


@pytest.mark.parametrize("when", ["made", "first read"])
def test_a_source_whose_secret_is_unset_fails_the_run_without_a_traceback(
    tmp_path: Path, store_url: str, when: str
) -> None:
    project = Project(tmp_path, store_url)
    unset = ConfigError(
        [
            Problem(
                "syncd.toml",
                "sources.crm.options.token",
                "environment variable T is not set",
                "export T",
            )
        ]
    )

    def make(entry: ConnectorEntry, config: Config, read_only: bool) -> Source:
        if when == "made":
            raise unset
        return LogsInOnFirstRead(unset)

    try:
        pipeline = Pipeline(project.config, project.mappings, project.engine, make_source=make)
        result = pipeline.run_once(push=False)
        assert result.status == "failed"
        assert result.errors == [f"crm: {unset}"]
        with transaction(project.engine) as bulk:
            (status,) = bulk.connection.exec_driver_sql("SELECT status FROM sync_run").one()
        assert status == "failed"
    finally:
        project.close()


@pytest.mark.parametrize("command", ["rebuild", "replay_quarantine"])
def test_a_rebuild_or_replay_stopped_by_an_error_is_recorded_as_failed(
    tmp_path: Path, store_url: str, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    project = Project(tmp_path, store_url)

    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("the store went away")

    try:
        pipeline = project.pipeline()
        monkeypatch.setattr(pipeline, "_rebuild_in", broken)
        monkeypatch.setattr(pipeline, "_resolve", broken)
        with capture_logs() as lines, pytest.raises(RuntimeError):
            getattr(pipeline, command)()
        stopped = [line for line in lines if line["event"] == "run stopped by an unexpected error"]
        # Its type, never its text, which may quote a record.
        assert stopped == [
            {"event": stopped[0]["event"], "error_type": "RuntimeError", "log_level": "error"}
        ]
        with transaction(project.engine) as bulk:
            (status, error) = bulk.connection.exec_driver_sql(
                "SELECT status, error FROM sync_run"
            ).one()
        assert status == "failed"
        assert "RuntimeError: the run stopped" in str(error)
    finally:
        project.close()
