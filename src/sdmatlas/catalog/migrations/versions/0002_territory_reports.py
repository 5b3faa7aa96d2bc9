"""Stored territory reports (computed once per release and territory); a layer's
presence box beside its data footprint.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_PRESENCE = ("presence_minx", "presence_miny", "presence_maxx", "presence_maxy")


def upgrade() -> None:
    op.create_table(
        "territory_report",
        sa.Column(
            "release_id",
            sa.Integer,
            sa.ForeignKey("release.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column(
            "territory_id",
            sa.Integer,
            sa.ForeignKey("territory.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("stamp", sa.String(200), nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("seconds", sa.Float, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )

    with op.batch_alter_table("layer") as batch:
        for col in _PRESENCE:
            batch.add_column(sa.Column(col, sa.Float))


def downgrade() -> None:
    with op.batch_alter_table("layer") as batch:
        for col in _PRESENCE:
            batch.drop_column(col)
    op.drop_table("territory_report")
