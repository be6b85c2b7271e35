"""Each output's population sketches, kept for differencing by populations.

Outputs released before this revision have none: the output engine computes theirs again from
their specifications when it compares (`tre.outputs.engine._released_populations`).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outputs") as table:
        table.add_column(sa.Column("populations", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("outputs") as table:
        table.drop_column("populations")
