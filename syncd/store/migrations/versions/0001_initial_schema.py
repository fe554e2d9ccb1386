"""initial schema

Revision ID: 0001
Revises:
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy import Text
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "cursor",
        sa.Column("source", sa.String(), nullable=False),
        sa.Column("stream", sa.String(), nullable=False),
        sa.Column(
            "value",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("updated_at", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("source", "stream"),
    )
    op.create_table(
        "event",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=False,
            nullable=False,
        ),
        sa.Column("source", sa.String(), nullable=False),
        sa.Column("stream", sa.String(), nullable=False),
        sa.Column("event_id", sa.String(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("occurred_at", sa.String(), nullable=False),
        sa.Column(
            "properties",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("needs_profile", sa.Boolean(), nullable=False),
        sa.Column("run_id", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("event", schema=None) as batch_op:
        batch_op.create_index("ix_event_pending", ["needs_profile"], unique=False)

    op.create_table(
        "event_identifier",
        sa.Column(
            "event_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=False,
            nullable=False,
        ),
        sa.Column(
            "identifier_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=False,
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("event_id", "identifier_id"),
        sqlite_with_rowid=False,
    )
    with op.batch_alter_table("event_identifier", schema=None) as batch_op:
        batch_op.create_index("ix_event_identifier_identifier", ["identifier_id"], unique=False)

    op.create_table(
        "identifier",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=False,
            nullable=False,
        ),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("value", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("identifier", schema=None) as batch_op:
        batch_op.create_index("ix_identifier_value", ["kind", "value"], unique=False)
        batch_op.create_index("ix_identifier_kind_id", ["kind", "id"], unique=False)

    op.create_table(
        "merge_log",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.String(), nullable=False),
        sa.Column("at", sa.String(), nullable=False),
        sa.Column("action", sa.String(), nullable=False),
        sa.Column("profile_id", sa.String(), nullable=True),
        sa.Column("to_profile_id", sa.String(), nullable=True),
        sa.Column("identifier_id", sa.BigInteger(), nullable=True),
        sa.Column("record_a", sa.BigInteger(), nullable=True),
        sa.Column("record_b", sa.BigInteger(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("merge_log", schema=None) as batch_op:
        batch_op.create_index("ix_merge_log_profile", ["profile_id"], unique=False)
        batch_op.create_index("ix_merge_log_record_a", ["record_a"], unique=False)
        batch_op.create_index("ix_merge_log_record_b", ["record_b"], unique=False)

    op.create_table(
        "profile",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column(
            "traits",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("traits_hash", sa.String(), nullable=False),
        sa.Column("record_count", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.String(), nullable=False),
        sa.Column("run_id", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "quarantine",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.String(), nullable=False),
        sa.Column("source", sa.String(), nullable=False),
        sa.Column("stream", sa.String(), nullable=False),
        sa.Column("location", sa.String(), nullable=False),
        sa.Column("reason", sa.String(), nullable=False),
        sa.Column(
            "payload",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("created_at", sa.String(), nullable=False),
        sa.Column("replayed_at", sa.String(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("quarantine", schema=None) as batch_op:
        batch_op.create_index("ix_quarantine_open", ["replayed_at"], unique=False)

    op.create_table(
        "record_identifier",
        sa.Column(
            "record_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=False,
            nullable=False,
        ),
        sa.Column(
            "identifier_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=False,
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("record_id", "identifier_id"),
        sqlite_with_rowid=False,
    )
    with op.batch_alter_table("record_identifier", schema=None) as batch_op:
        batch_op.create_index("ix_record_identifier_identifier", ["identifier_id"], unique=False)

    op.create_table(
        "source_record",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=False,
            nullable=False,
        ),
        sa.Column("source", sa.String(), nullable=False),
        sa.Column("stream", sa.String(), nullable=False),
        sa.Column("external_id", sa.String(), nullable=False),
        sa.Column("node_kind", sa.String(), nullable=False),
        sa.Column("updated_at", sa.String(), nullable=True),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("content_hash", sa.String(), nullable=False),
        sa.Column(
            "payload",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "traits",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "notes",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("profile_id", sa.String(), nullable=True),
        sa.Column("needs_unify", sa.Boolean(), nullable=False),
        sa.Column("last_run", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("source_record", schema=None) as batch_op:
        batch_op.create_index("ix_source_record_profile", ["profile_id"], unique=False)
        batch_op.create_index("ix_source_record_stream", ["source", "stream"], unique=False)
        batch_op.create_index("ix_source_record_unify", ["needs_unify"], unique=False)

    op.create_table(
        "sync_run",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("started_at", sa.String(), nullable=False),
        sa.Column("finished_at", sa.String(), nullable=True),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column(
            "counts",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("error", sa.String(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:

    op.drop_table("sync_run")
    with op.batch_alter_table("source_record", schema=None) as batch_op:
        batch_op.drop_index("ix_source_record_unify")
        batch_op.drop_index("ix_source_record_stream")
        batch_op.drop_index("ix_source_record_profile")

    op.drop_table("source_record")
    with op.batch_alter_table("record_identifier", schema=None) as batch_op:
        batch_op.drop_index("ix_record_identifier_identifier")

    op.drop_table("record_identifier")
    with op.batch_alter_table("quarantine", schema=None) as batch_op:
        batch_op.drop_index("ix_quarantine_open")

    op.drop_table("quarantine")
    op.drop_table("profile")
    with op.batch_alter_table("merge_log", schema=None) as batch_op:
        batch_op.drop_index("ix_merge_log_record_b")
        batch_op.drop_index("ix_merge_log_record_a")
        batch_op.drop_index("ix_merge_log_profile")

    op.drop_table("merge_log")
    with op.batch_alter_table("identifier", schema=None) as batch_op:
        batch_op.drop_index("ix_identifier_kind_id")
        batch_op.drop_index("ix_identifier_value")

    op.drop_table("identifier")
    with op.batch_alter_table("event_identifier", schema=None) as batch_op:
        batch_op.drop_index("ix_event_identifier_identifier")

    op.drop_table("event_identifier")
    with op.batch_alter_table("event", schema=None) as batch_op:
        batch_op.drop_index("ix_event_pending")

    op.drop_table("event")
    op.drop_table("cursor")
