"""Record edges in one B-tree keyed by identifier; each record lists its identifier ids

An edge was in two B-trees, (record, identifier) and (identifier, record), both keyed by
hashes, so each new edge was two inserts at random places. Now the edge table is keyed by
identifier alone, and the way from a record to its edges is the record's own row, which is
written anyway.

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _list_ids(aggregate: str) -> None:
    op.execute(
        f"UPDATE source_record SET identifier_ids = (SELECT {aggregate} FROM record_identifier "
        "WHERE record_id = source_record.id) "
        "WHERE id IN (SELECT record_id FROM record_identifier)"
    )


def _rekey(first: str, second: str) -> None:
    """The edge table again, keyed (first, second), rows kept."""
    op.create_table(
        "record_identifier_rekeyed",
        sa.Column(first, ID, autoincrement=False, nullable=False),
        sa.Column(second, ID, autoincrement=False, nullable=False),
        sa.PrimaryKeyConstraint(first, second),
        sqlite_with_rowid=False,
    )
    op.execute(
        f"INSERT INTO record_identifier_rekeyed ({first}, {second}) "
        f"SELECT {first}, {second} FROM record_identifier ORDER BY {first}, {second}"
    )
    op.drop_table("record_identifier")
    op.rename_table("record_identifier_rekeyed", "record_identifier")
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "ALTER TABLE record_identifier "
            "RENAME CONSTRAINT record_identifier_rekeyed_pkey TO record_identifier_pkey"
        )


def upgrade() -> None:
    with op.batch_alter_table("source_record") as batch_op:
        batch_op.add_column(sa.Column("identifier_ids", sa.String(), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        _list_ids("string_agg(CAST(identifier_id AS TEXT), ',')")
    else:
        _list_ids("group_concat(identifier_id, ',')")
    _rekey("identifier_id", "record_id")


def downgrade() -> None:
    _rekey("record_id", "identifier_id")
    with op.batch_alter_table("record_identifier") as batch_op:
        batch_op.create_index("ix_record_identifier_identifier", ["identifier_id"], unique=False)
    with op.batch_alter_table("source_record") as batch_op:
        batch_op.drop_column("identifier_ids")
