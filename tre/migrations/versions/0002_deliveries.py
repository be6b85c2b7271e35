"""Custodian signing keys, deliveries and curated dataset versions.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "custodian_keys",
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("custodian", sa.String(32), nullable=False),
        sa.Column("public_key", sa.String(64), nullable=False),
        sa.Column("registered_at", sa.String(32), nullable=False),
        sa.Column("revoked_at", sa.String(32), nullable=True),
        sa.PrimaryKeyConstraint("key_id"),
    )
    op.create_index("ix_custodian_keys_custodian", "custodian_keys", ["custodian"])
    op.create_table(
        "deliveries",
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("custodian", sa.String(32), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("received_at", sa.String(32), nullable=False),
        sa.Column("ingested_by", sa.String(200), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("landing_path", sa.String(500), nullable=False),
        sa.Column("catalog_version", sa.String(64), nullable=False),
        sa.Column("rows", sa.JSON(), nullable=False),
        sa.Column("quarantined", sa.JSON(), nullable=False),
        sa.Column("linkage", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("digest"),
    )
    op.create_index("ix_deliveries_custodian", "deliveries", ["custodian"])
    op.create_table(
        "dataset_versions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("dataset", sa.String(64), nullable=False),
        sa.Column("custodian", sa.String(32), nullable=False),
        sa.Column("delivery", sa.String(64), nullable=False),
        sa.Column("path", sa.String(500), nullable=False),
        sa.Column("staging_path", sa.String(500), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("rows", sa.BigInteger(), nullable=False),
        sa.Column("files", sa.JSON(), nullable=False),
        sa.Column("catalog_version", sa.String(64), nullable=False),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.ForeignKeyConstraint(["delivery"], ["deliveries.digest"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_dataset_versions_dataset", "dataset_versions", ["dataset"])
    op.create_index("ix_dataset_versions_state", "dataset_versions", ["state"])


def downgrade() -> None:
    op.drop_index("ix_dataset_versions_state", "dataset_versions")
    op.drop_index("ix_dataset_versions_dataset", "dataset_versions")
    op.drop_table("dataset_versions")
    op.drop_index("ix_deliveries_custodian", "deliveries")
    op.drop_table("deliveries")
    op.drop_index("ix_custodian_keys_custodian", "custodian_keys")
    op.drop_table("custodian_keys")
