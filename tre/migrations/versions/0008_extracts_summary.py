"""What a project's extracts hold (datasets, rows, columns), kept with the project: the portal
shows it without reading the extracts, which only the project's own accounts may open.

Projects provisioned before this revision show no summary until provisioned again.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("projects") as table:
        table.add_column(sa.Column("extracts_summary", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("projects") as table:
        table.drop_column("extracts_summary")
