"""A bad record is quarantined with its reason, the rest goes on, and it can be replayed."""

from __future__ import annotations

from pathlib import Path

from syncd.inspect import export_profiles
from syncd.mapping.compiler import compile_mappings
from syncd.store.db import transaction
from tests.support.project import Project, records_page


def test_quarantine_then_fix_the_mapping_and_replay(store_url: str, tmp_path: Path) -> None:
    project = Project(tmp_path, store_url)
    try:
        summary = project.run(
            {
                "people": [
                    records_page(
                        [
                            {"id": "good", "email": "a@x.com", "score": "3"},
                            {"id": "bad", "email": "b@x.com", "score": "lots"},
                        ]
                    )
                ]
            }
        )
        assert summary.counts["quarantined"] == 1
        assert summary.counts["new"] == 1
        with transaction(project.engine) as bulk:
            reasons = bulk.connection.exec_driver_sql(
                "SELECT location, reason FROM quarantine"
            ).all()
        assert [tuple(r) for r in reasons] == [("test:bad", "field score: not a whole number")]

        # Replaying with the same mapping keeps it in quarantine.
        assert project.pipeline().replay_quarantine().counts["still_quarantined"] == 1

        mapping = tmp_path / "mappings" / "people.toml"
        mapping.write_text(
            mapping.read_text().replace(
                'score = { from = "score", type = "int" }',
                'score = { from = "score", type = "int", on_error = "null" }',
            )
        )
        project.mappings = compile_mappings(project.config)
        replay = project.pipeline().replay_quarantine()
        assert replay.counts["replayed"] == 1
        with transaction(project.engine) as bulk:
            ids = sorted(r["id"] for p in export_profiles(bulk) for r in p["records"])
            still = bulk.connection.exec_driver_sql(
                "SELECT COUNT(*) FROM quarantine WHERE replayed_at IS NULL"
            ).scalar_one()
        assert ids == ["bad", "good"]
        assert still == 0
    finally:
        project.close()


def test_replay_does_not_restore_a_version_a_later_pull_replaced(
    store_url: str, tmp_path: Path
) -> None:
    project = Project(tmp_path, store_url)
    try:
        project.run({"people": [records_page([{"id": "x", "email": "a@x.com", "score": "lots"}])]})
        project.run({"people": [records_page([{"id": "x", "email": "b@x.com", "score": "2"}])]})
        mapping = tmp_path / "mappings" / "people.toml"
        mapping.write_text(
            mapping.read_text().replace(
                'score = { from = "score", type = "int" }',
                'score = { from = "score", type = "int", on_error = "null" }',
            )
        )
        project.mappings = compile_mappings(project.config)
        project.pipeline().replay_quarantine()
        with transaction(project.engine) as bulk:
            (profile,) = list(export_profiles(bulk))
            open_rows = bulk.connection.exec_driver_sql(
                "SELECT COUNT(*) FROM quarantine WHERE replayed_at IS NULL"
            ).scalar_one()
        assert profile["traits"]["email"] == "b@x.com"
        assert open_rows == 0
    finally:
        project.close()


def test_nul_and_lone_surrogates_are_kept_out_of_the_store_and_stop_nothing(
    store_url: str, tmp_path: Path
) -> None:
    # JSON allows "\u0000" and "\ud800" (half of an emoji cut in two); PostgreSQL refuses
    # both and no UTF-8 encoder takes the second.
    project = Project(tmp_path, store_url)
    try:
        summary = project.run(
            {
                "people": [
                    records_page(
                        [
                            {"id": "a", "email": "ada\ud800@x.com", "name": "ada \ud83d"},
                            {"id": "b", "email": "bo@x.com", "user_id": "u\x00b", "name": "bo\x00"},
                            {"id": "c\x00", "email": "cy@x.com"},
                            {"id": "d\udc00", "email": "di@x.com"},
                        ]
                    )
                ]
            }
        )
        assert summary.status == "ok"
        assert (summary.counts["new"], summary.counts["quarantined"]) == (2, 2)
        with transaction(project.engine) as bulk:
            reasons = [
                str(row[0])
                for row in bulk.connection.exec_driver_sql(
                    "SELECT reason FROM quarantine ORDER BY location"
                )
            ]
            profiles = {p["records"][0]["id"]: p for p in export_profiles(bulk)}
        # A record is mapped as the store keeps it, so a rebuild from the store maps the same.
        assert project.pipeline().verify() == []
    finally:
        project.close()
    assert (
        reasons
        == ["primary key holds a NUL character or text that is not Unicode (a lone surrogate)"] * 2
    )
    # Identifiers and traits are what the stored payload gives: NUL dropped, U+FFFD for a
    # lone surrogate.
    assert profiles["a"]["identifiers"] == [{"kind": "email", "value": "ada\ufffd@x.com"}]
    assert profiles["a"]["traits"]["name"] == "Ada \ufffd"
    assert profiles["b"]["identifiers"] == [
        {"kind": "email", "value": "bo@x.com"},
        {"kind": "user_id", "value": "ub"},
    ]
    assert profiles["b"]["traits"]["name"] == "Bo"
