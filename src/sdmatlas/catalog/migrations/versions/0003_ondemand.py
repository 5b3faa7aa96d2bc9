"""On-demand prediction: registered covariates, API keys, jobs; release expiry.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)
_STATUSES = ("queued", "running", "done", "failed", "cancelled", "expired")


def upgrade() -> None:
    with op.batch_alter_table("release") as batch:
        batch.add_column(sa.Column("expires_at", _TS))
    op.create_table(
        "model_covariates",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("model_name", sa.String(200), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("model_digest", sa.String(128), nullable=False),
        sa.Column("card_path", sa.String(1000), nullable=False),
        sa.Column("period", sa.String(32), nullable=False),
        sa.Column("covariates", sa.JSON, nullable=False),
        sa.Column("checksums", sa.JSON, nullable=False),
        sa.Column("grid", sa.JSON, nullable=False),
        sa.Column("territory", sa.String(1000), nullable=False),
        sa.Column("registered_at", _TS, nullable=False),
        sa.UniqueConstraint("model_name", "model_version", "period"),
    )
    op.create_table(
        "api_key",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(100), nullable=False, unique=True),
        sa.Column("prefix", sa.String(16), nullable=False, unique=True),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("scopes", sa.JSON, nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("revoked_at", _TS),
    )
    op.create_table(
        "job",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("request_key", sa.String(64), nullable=False),
        sa.Column("api_key_id", sa.Integer, sa.ForeignKey("api_key.id", ondelete="SET NULL")),
        sa.Column(
            "covariates_id",
            sa.Integer,
            sa.ForeignKey("model_covariates.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column(
            "status",
            sa.Enum(
                *_STATUSES, name="jobstatus", native_enum=False, length=32, create_constraint=True
            ),
            nullable=False,
        ),
        sa.Column("request", sa.JSON, nullable=False),
        sa.Column("window", sa.JSON, nullable=False),
        sa.Column("area_km2", sa.Float, nullable=False),
        sa.Column("chunks_total", sa.Integer, nullable=False),
        sa.Column("chunks_done", sa.Integer, nullable=False),
        sa.Column("timings", sa.JSON, nullable=False),
        sa.Column("error", sa.String(2000)),
        sa.Column("release_key", sa.String(100)),
        sa.Column("runner", sa.String(200)),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("started_at", _TS),
        sa.Column("heartbeat_at", _TS),
        sa.Column("finished_at", _TS),
        sa.Column("expires_at", _TS, nullable=False),
    )
    op.create_index("ix_job_request", "job", ["request_key", "status"])
    op.create_index("ix_job_status", "job", ["status", "heartbeat_at"])
    op.create_index("ix_job_key", "job", ["api_key_id", "status"])


def downgrade() -> None:
    op.drop_table("job")
    op.drop_table("api_key")
    op.drop_table("model_covariates")
    with op.batch_alter_table("release") as batch:
        batch.drop_column("expires_at")
