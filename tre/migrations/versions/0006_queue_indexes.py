"""Indexes for the output checkers' queue: requests by state in age order, and by project.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_export_requests_queue", "export_requests", ["state", "updated_at", "id"])
    op.create_index("ix_export_requests_state_project", "export_requests", ["state", "project_id"])
    op.drop_index("ix_export_requests_state", table_name="export_requests")


def downgrade() -> None:
    op.create_index("ix_export_requests_state", "export_requests", ["state"])
    op.drop_index("ix_export_requests_state_project", table_name="export_requests")
    op.drop_index("ix_export_requests_queue", table_name="export_requests")
