"""ingest spool: events acknowledged by the ingest endpoint, read by the ingest source

Revision ID: 0003
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "ingest_spool",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("message_id", sa.Text(), nullable=False),
        sa.Column("type", sa.String(), nullable=False),
        sa.Column("received_at", sa.String(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("message_id"),
    )
    # The ingest source reads one message type at a time, after the last id it read.
    op.create_index("ix_ingest_spool_type", "ingest_spool", ["type", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_ingest_spool_type", table_name="ingest_spool")
    op.drop_table("ingest_spool")
