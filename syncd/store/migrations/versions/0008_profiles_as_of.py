"""Remember when the profiles were last refreshed, for traits over a window of days

Events leaving a `within_days` window are found from the last refresh on. That moment was
taken from the start of the last successful run, which a dry run (no refresh) moved on and a
failed run (refreshed all the same) did not; now the refresh writes it in its own
transaction. An upgraded store starts from the last successful run, as before.

Revision ID: 0008
Revises: 0007
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("unify_state", sa.Column("profiles_as_of", sa.String(), nullable=True))
    op.execute(
        "UPDATE unify_state SET profiles_as_of = "
        "(SELECT MAX(started_at) FROM sync_run WHERE status = 'ok')"
    )


def downgrade() -> None:
    op.drop_column("unify_state", "profiles_as_of")
