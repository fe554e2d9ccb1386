"""SQLite: hash-keyed tables keep their rows in arrival order; two identifier indexes go

On SQLite an INTEGER PRIMARY KEY is the rowid, so rows keyed by 64-bit hashes were stored in
hash order: every insert landed on a random page of the largest tables, and each commit
rewrote thousands of pages. As BIGINT the key is a separate, much smaller index and rows are
appended. PostgreSQL keeps rows in a heap anyway: nothing to do there.

Nothing reads identifier by (kind, value): lookups compute the identifier's id. Nor by
(kind, id) any more: a full resolution reads identifiers and edges in id order and merges them.
Each was one more B-tree to insert into at a random place for every new identifier.

Revision ID: 0004
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

HASH_KEYED = ("source_record", "identifier", "event")


def _retype_keys(old: sa.types.TypeEngine[int], new: sa.types.TypeEngine[int]) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for table in HASH_KEYED:
        with op.batch_alter_table(table, recreate="always") as batch_op:
            batch_op.alter_column("id", existing_type=old, type_=new, existing_nullable=False)


def upgrade() -> None:
    with op.batch_alter_table("identifier") as batch_op:
        batch_op.drop_index("ix_identifier_value")
        batch_op.drop_index("ix_identifier_kind_id")
    _retype_keys(sa.Integer(), sa.BigInteger())


def downgrade() -> None:
    _retype_keys(sa.BigInteger(), sa.Integer())
    with op.batch_alter_table("identifier") as batch_op:
        batch_op.create_index("ix_identifier_value", ["kind", "value"], unique=False)
        batch_op.create_index("ix_identifier_kind_id", ["kind", "id"], unique=False)
