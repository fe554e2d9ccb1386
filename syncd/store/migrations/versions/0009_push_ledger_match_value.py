"""Keep the match value each profile was pushed with

A profile matched by an identifier kind took its smallest value of that kind, so a record
with a smaller one joining it moved the upsert key to a value the destination did not know,
and the destination created a second record. The ledger now keeps the match value of every
outcome, and the planner keeps using it while the profile still has it. Entries written
before have none: their profiles take the smallest value, as before, until their next push.

Revision ID: 0009
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("push_ledger", sa.Column("match_value", sa.String(), nullable=True))


def downgrade() -> None:
    op.drop_column("push_ledger", "match_value")
