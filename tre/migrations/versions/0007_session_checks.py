"""Portal sessions keep the login's refresh token (encrypted) and when Keycloak last said who
the person is, so that roles removed in Keycloak leave the portal within minutes.

Sessions opened before this revision have neither: their people log in again.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("portal_sessions") as table:
        table.add_column(sa.Column("refresh_token", sa.Text(), nullable=True))
        table.add_column(sa.Column("checked_at", sa.String(32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("portal_sessions") as table:
        table.drop_column("checked_at")
        table.drop_column("refresh_token")
