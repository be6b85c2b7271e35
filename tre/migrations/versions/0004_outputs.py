"""Outputs and the privacy budget ledger.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "outputs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("project_id", sa.String(30), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("result", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("file_path", sa.String(500), nullable=True),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("released_at", sa.String(32), nullable=True),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_outputs_project_id", "outputs", ["project_id"])
    op.create_table(
        "privacy_budgets",
        sa.Column("project_id", sa.String(30), nullable=False),
        sa.Column("epsilon", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"]),
        sa.PrimaryKeyConstraint("project_id"),
    )
    op.create_table(
        "privacy_spends",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("project_id", sa.String(30), nullable=False),
        sa.Column("query", sa.String(200), nullable=False),
        sa.Column("epsilon", sa.Float(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("spent_by", sa.String(64), nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_privacy_spends_project_id", "privacy_spends", ["project_id"])


def downgrade() -> None:
    op.drop_index("ix_privacy_spends_project_id", "privacy_spends")
    op.drop_table("privacy_spends")
    op.drop_table("privacy_budgets")
    op.drop_index("ix_outputs_project_id", "outputs")
    op.drop_table("outputs")
