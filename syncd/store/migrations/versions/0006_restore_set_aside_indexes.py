"""Build again the indexes an interrupted write-back may have left out (SQLite)

A full resolution sets two indexes of source_record aside and builds them again once; so
does a first load for the merge log's. On SQLite the drop could commit on its own while the
rest of the transaction failed, and such a store then lacked them for good. Building them
again where they are missing repairs it; elsewhere this changes nothing.

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = {
    "ix_source_record_profile": ("source_record", "profile_id"),
    "ix_source_record_unify": ("source_record", "needs_unify"),
    "ix_merge_log_profile": ("merge_log", "profile_id"),
    "ix_merge_log_record_a": ("merge_log", "record_a"),
    "ix_merge_log_record_b": ("merge_log", "record_b"),
}


def upgrade() -> None:
    for name, (table, column) in INDEXES.items():
        op.execute(f"CREATE INDEX IF NOT EXISTS {name} ON {table} ({column})")


def downgrade() -> None:
    """Nothing to undo: the indexes belong to the schema before this revision too."""
