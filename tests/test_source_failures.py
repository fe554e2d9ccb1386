"""A source that cannot be made (its secret unset) fails alone: the run records it and goes on."""

from __future__ import annotations

from pathlib import Path

from syncd.config import Config, ConnectorEntry
from syncd.connector import Source
from syncd.errors import ConfigError, Problem
from syncd.runner import Pipeline
from syncd.store.db import transaction
from tests.support.project import Project


def test_a_source_whose_secret_is_unset_fails_the_run_without_a_traceback(
    tmp_path: Path, store_url: str
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
        raise unset

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
