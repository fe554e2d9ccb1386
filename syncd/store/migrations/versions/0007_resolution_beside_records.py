"""Keep what resolution derives beside the records: their profiles and whether they wait

A record's profile id and its mark for resolution were columns of its own row, so every
resolution wrote the rows it resolved a second time: on a first load, every page of the
largest table (on PostgreSQL, a new version of every row). Now a record's profile is a row
of `record_profile`, and a record waits for resolution while its `unify_generation` is
past the one `unify_state` holds, which a resolution moves on by one.

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "record_profile",
        sa.Column("record_id", ID, autoincrement=False, nullable=False),
        sa.Column("profile_id", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("record_id"),
        sqlite_with_rowid=False,
    )
    op.execute(
        "INSERT INTO record_profile (record_id, profile_id) SELECT id, profile_id "
        "FROM source_record WHERE profile_id IS NOT NULL ORDER BY id"
    )
    op.create_index("ix_record_profile_profile", "record_profile", ["profile_id"])
    op.create_table(
        "unify_state",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("resolved", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.execute("INSERT INTO unify_state (id, resolved) VALUES (1, 0)")
    op.add_column(
        "source_record",
        sa.Column("unify_generation", sa.BigInteger(), nullable=False, server_default="0"),
    )
    op.execute("UPDATE source_record SET unify_generation = 1 WHERE needs_unify")
    op.create_index("ix_source_record_generation", "source_record", ["unify_generation"])
    op.drop_index("ix_source_record_profile", "source_record")
    op.drop_index("ix_source_record_unify", "source_record")
    op.drop_column("source_record", "profile_id")
    op.drop_column("source_record", "needs_unify")


def downgrade() -> None:
    op.add_column("source_record", sa.Column("profile_id", sa.String(), nullable=True))
    op.add_column(
        "source_record",
        sa.Column("needs_unify", sa.Boolean(), nullable=False, server_default=sa.true()),
    )
    op.execute(
        "UPDATE source_record SET profile_id = (SELECT profile_id FROM record_profile "
        "WHERE record_id = source_record.id), needs_unify = unify_generation > "
        "(SELECT resolved FROM unify_state)"
    )
    op.create_index("ix_source_record_profile", "source_record", ["profile_id"])
    op.create_index("ix_source_record_unify", "source_record", ["needs_unify"])
    op.drop_index("ix_source_record_generation", "source_record")
    op.drop_column("source_record", "unify_generation")
    op.drop_table("unify_state")
    op.drop_table("record_profile")
