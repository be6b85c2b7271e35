"""Export requests, their outputs and reviews; portal sessions.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "export_requests",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("project_id", sa.String(30), nullable=False),
        sa.Column("author", sa.String(64), nullable=False),
        sa.Column("title", sa.String(300), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("updated_at", sa.String(32), nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_export_requests_project_id", "export_requests", ["project_id"])
    op.create_index("ix_export_requests_state", "export_requests", ["state"])
    op.create_index("ix_export_requests_updated_at", "export_requests", ["updated_at"])
    op.create_table(
        "request_outputs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=False),
        sa.Column("output_id", sa.Integer(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("released_path", sa.String(500), nullable=True),
        sa.ForeignKeyConstraint(["request_id"], ["export_requests.id"]),
        sa.ForeignKeyConstraint(["output_id"], ["outputs.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("request_id", "slot"),
    )
    op.create_index("ix_request_outputs_request_id", "request_outputs", ["request_id"])
    op.create_table(
        "reviews",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("request_output_id", sa.Integer(), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("reviewer", sa.String(64), nullable=False),
        sa.Column("vote", sa.String(16), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("visibility", sa.String(16), nullable=False),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.ForeignKeyConstraint(["request_output_id"], ["request_outputs.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("request_output_id", "round", "reviewer"),
    )
    op.create_index("ix_reviews_request_output_id", "reviews", ["request_output_id"])
    op.create_table(
        "portal_sessions",
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("roles", sa.JSON(), nullable=False),
        sa.Column("groups", sa.JSON(), nullable=False),
        sa.Column("csrf", sa.String(64), nullable=False),
        sa.Column("expires_at", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("token_hash"),
    )


def downgrade() -> None:
    op.drop_table("portal_sessions")
    op.drop_index("ix_reviews_request_output_id", "reviews")
    op.drop_table("reviews")
    op.drop_index("ix_request_outputs_request_id", "request_outputs")
    op.drop_table("request_outputs")
    op.drop_index("ix_export_requests_updated_at", "export_requests")
    op.drop_index("ix_export_requests_state", "export_requests")
    op.drop_index("ix_export_requests_project_id", "export_requests")
    op.drop_table("export_requests")
