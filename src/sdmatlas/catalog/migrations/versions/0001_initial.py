"""Initial catalog: species and names, territories, statuses, models, releases, layers.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from sdmatlas.catalog.geometry import Geometry
from sdmatlas.catalog.schema import NameKey

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# R*Tree tables of bounding boxes on SQLite, kept in step with their table by triggers,
# so that spatial look-ups are index look-ups on both backends.
_RTREES = {"territory": "territory_rtree", "layer": "layer_rtree"}


def _enum(name: str, *values: str) -> sa.Enum:
    return sa.Enum(*values, name=name, native_enum=False, length=32, create_constraint=True)


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute("CREATE EXTENSION IF NOT EXISTS postgis")
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")

    op.create_table(
        "species",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("scientific_name", sa.String(200), nullable=False, unique=True),
        sa.Column("genus", sa.String(100), index=True),
        sa.Column("family", sa.String(100), index=True),
        sa.Column("gbif_key", sa.Integer, unique=True),
    )
    op.create_table(
        "species_name",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "species_id",
            sa.Integer,
            sa.ForeignKey("species.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("lang", sa.String(8), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("name_key", NameKey, nullable=False),
        sa.Column("n_trigrams", sa.Integer, nullable=False),
        sa.UniqueConstraint("species_id", "kind", "lang", "name"),
    )
    op.create_index("ix_species_name_key", "species_name", ["name_key"])
    op.create_table(
        "name_trigram",
        sa.Column("trigram", sa.String(16), primary_key=True),
        sa.Column(
            "name_id",
            sa.Integer,
            sa.ForeignKey("species_name.id", ondelete="CASCADE"),
            primary_key=True,
        ),
    )
    op.create_index("ix_name_trigram_name_id", "name_trigram", ["name_id"])
    op.create_table(
        "territory",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("code", sa.String(64), nullable=False, unique=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column(
            "level",
            _enum("territorylevel", "country", "region", "protected_area", "custom"),
            nullable=False,
        ),
        sa.Column("geom", Geometry("MULTIPOLYGON"), nullable=False),
        sa.Column("minx", sa.Float, nullable=False),
        sa.Column("miny", sa.Float, nullable=False),
        sa.Column("maxx", sa.Float, nullable=False),
        sa.Column("maxy", sa.Float, nullable=False),
        sa.Column("area_km2", sa.Float, nullable=False),
        sa.Column("source", sa.String(500), nullable=False),
    )
    op.create_index("ix_territory_level", "territory", ["level"])
    op.create_table(
        "species_status",
        sa.Column(
            "species_id",
            sa.Integer,
            sa.ForeignKey("species.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column(
            "territory_id",
            sa.Integer,
            sa.ForeignKey("territory.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("protected", sa.Boolean, nullable=False),
        sa.Column("invasive", sa.Boolean, nullable=False),
        sa.Column("endemic", sa.Boolean, nullable=False),
    )
    op.create_index("ix_species_status_territory", "species_status", ["territory_id", "species_id"])
    op.create_table(
        "model",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("digest", sa.String(128), nullable=False),
        sa.Column("card", sa.JSON, nullable=False),
        sa.UniqueConstraint("name", "version"),
    )
    op.create_table(
        "release",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("key", sa.String(100), nullable=False, unique=True),
        sa.Column("model_id", sa.Integer, sa.ForeignKey("model.id"), nullable=False),
        sa.Column("period", sa.String(32), nullable=False),
        sa.Column(
            "status",
            _enum("releasestatus", "running", "complete", "published", "retired"),
            nullable=False,
        ),
        sa.Column("storage_uri", sa.String(1000), nullable=False),
        sa.Column("grid", sa.JSON, nullable=False),
        sa.Column("threshold", sa.Float, nullable=False),
        sa.Column("footprint", Geometry("POLYGON"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True)),
        sa.Column("retired_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_release_model_id", "release", ["model_id"])
    op.create_index("ix_release_period_status", "release", ["period", "status", "published_at"])
    op.create_table(
        "layer",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "release_id",
            sa.Integer,
            sa.ForeignKey("release.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("kind", _enum("layerkind", "species", "indicator", "habitat"), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("species_id", sa.Integer, sa.ForeignKey("species.id")),
        sa.Column("indicator", sa.String(64)),
        sa.Column("title", sa.String(300), nullable=False),
        sa.Column("units", sa.String(64), nullable=False),
        sa.Column("min", sa.Float),
        sa.Column("max", sa.Float),
        sa.Column("mean", sa.Float),
        sa.Column("histogram", sa.JSON, nullable=False),
        sa.Column("footprint", Geometry("POLYGON")),
        sa.Column("minx", sa.Float),
        sa.Column("miny", sa.Float),
        sa.Column("maxx", sa.Float),
        sa.Column("maxy", sa.Float),
        sa.Column("version", sa.String(32), nullable=False),
        sa.UniqueConstraint("release_id", "name"),
    )
    op.create_index("ix_layer_species", "layer", ["species_id", "release_id"])
    op.create_index("ix_layer_indicator", "layer", ["indicator", "release_id"])
    op.create_index("ix_layer_release_kind", "layer", ["release_id", "kind"])

    if dialect == "postgresql":
        op.execute("CREATE INDEX ix_territory_geom ON territory USING gist (geom)")
        op.execute("CREATE INDEX ix_layer_footprint ON layer USING gist (footprint)")
        op.execute("CREATE INDEX ix_release_footprint ON release USING gist (footprint)")
        op.execute(
            "CREATE INDEX ix_species_name_trgm ON species_name USING gin (name_key gin_trgm_ops)"
        )
    elif dialect == "sqlite":
        for table, rtree in _RTREES.items():
            op.execute(f"CREATE VIRTUAL TABLE {rtree} USING rtree(id, minx, maxx, miny, maxy)")
            values = "NEW.id, NEW.minx, NEW.maxx, NEW.miny, NEW.maxy"
            when = "WHEN NEW.minx IS NOT NULL"
            op.execute(
                f"CREATE TRIGGER {rtree}_insert AFTER INSERT ON {table} {when} BEGIN "
                f"INSERT INTO {rtree} VALUES ({values}); END"
            )
            op.execute(
                f"CREATE TRIGGER {rtree}_update AFTER UPDATE ON {table} BEGIN "
                f"DELETE FROM {rtree} WHERE id = OLD.id; "
                f"INSERT INTO {rtree} SELECT {values} WHERE NEW.minx IS NOT NULL; END"
            )
            op.execute(
                f"CREATE TRIGGER {rtree}_delete AFTER DELETE ON {table} BEGIN "
                f"DELETE FROM {rtree} WHERE id = OLD.id; END"
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for rtree in _RTREES.values():
            op.execute(f"DROP TABLE IF EXISTS {rtree}")
    for table in (
        "layer",
        "release",
        "model",
        "species_status",
        "territory",
        "name_trigram",
        "species_name",
        "species",
    ):
        op.drop_table(table)
