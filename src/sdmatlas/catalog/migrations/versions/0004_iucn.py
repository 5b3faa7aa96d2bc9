"""A species' IUCN Red List category in each territory's status.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("species_status") as batch:
        batch.add_column(sa.Column("iucn", sa.String(2)))


def downgrade() -> None:
    with op.batch_alter_table("species_status") as batch:
        batch.drop_column("iucn")
