"""The audit log under a key: a MAC per event, and the count of signed checkpoints written.

Events written before this revision have no MAC until `tre init` (or `tre up`) seals them, once,
before the first checkpoint (`tre.audit.seal`).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audit_events") as table:
        table.add_column(sa.Column("mac", sa.String(64), nullable=True))
    with op.batch_alter_table("audit_head") as table:
        table.add_column(
            sa.Column("checkpoint", sa.BigInteger(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("audit_head") as table:
        table.drop_column("checkpoint")
    with op.batch_alter_table("audit_events") as table:
        table.drop_column("mac")
