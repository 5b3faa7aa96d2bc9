"""The catalog's tables (SQLAlchemy 2 declarative), one schema for PostGIS and SQLite.

Backend-specific parts (the PostGIS GiST and pg_trgm GIN indexes, SQLite's R*Tree
tables and their triggers) live in the Alembic migrations, not here.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any, ClassVar

from shapely.geometry.base import BaseGeometry
from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from sdmatlas.catalog.geometry import Geometry

#: Case-folded names compared byte-wise on both backends (prefix ranges must agree).
NameKey = String(200).with_variant(String(200, collation="C"), "postgresql")


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON}


class TerritoryLevel(enum.StrEnum):
    country = "country"
    region = "region"
    protected_area = "protected_area"
    custom = "custom"


class ReleaseStatus(enum.StrEnum):
    running = "running"
    complete = "complete"
    published = "published"
    retired = "retired"


class LayerKind(enum.StrEnum):
    species = "species"
    indicator = "indicator"
    habitat = "habitat"
    classes = "classes"
    """A class layer (categorical: worst status, habitat types), migration 0005."""


def _enum(cls: type[enum.Enum]) -> Enum:
    # stored as plain strings with a CHECK: identical on both backends, easy to extend
    return Enum(cls, native_enum=False, length=32, validate_strings=True, create_constraint=True)


class Species(Base):
    __tablename__ = "species"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    scientific_name: Mapped[str] = mapped_column(String(200), unique=True)
    genus: Mapped[str | None] = mapped_column(String(100), index=True)
    family: Mapped[str | None] = mapped_column(String(100), index=True)
    gbif_key: Mapped[int | None] = mapped_column(Integer, unique=True)

    names: Mapped[list[SpeciesName]] = relationship(
        back_populates="species", cascade="all, delete-orphan"
    )


class SpeciesName(Base):
    """Every name a species is searched by: its scientific name and vernacular names."""

    __tablename__ = "species_name"
    __table_args__ = (
        UniqueConstraint("species_id", "kind", "lang", "name"),
        Index("ix_species_name_key", "name_key"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    species_id: Mapped[int] = mapped_column(ForeignKey("species.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))  # scientific | vernacular
    lang: Mapped[str] = mapped_column(String(8), default="")
    name: Mapped[str] = mapped_column(String(200))
    name_key: Mapped[str] = mapped_column(NameKey)
    n_trigrams: Mapped[int] = mapped_column(Integer)

    species: Mapped[Species] = relationship(back_populates="names")


class NameTrigram(Base):
    """pg_trgm-compatible trigrams of every name: fuzzy search on SQLite (PostgreSQL uses
    pg_trgm's GIN index; a test checks that both give the same trigrams)."""

    __tablename__ = "name_trigram"

    trigram: Mapped[str] = mapped_column(String(16), primary_key=True)
    name_id: Mapped[int] = mapped_column(
        ForeignKey("species_name.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class Territory(Base):
    __tablename__ = "territory"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    level: Mapped[TerritoryLevel] = mapped_column(_enum(TerritoryLevel), index=True)
    geom: Mapped[BaseGeometry] = mapped_column(Geometry("MULTIPOLYGON"))
    minx: Mapped[float] = mapped_column(Float)
    miny: Mapped[float] = mapped_column(Float)
    maxx: Mapped[float] = mapped_column(Float)
    maxy: Mapped[float] = mapped_column(Float)
    area_km2: Mapped[float] = mapped_column(Float)
    source: Mapped[str] = mapped_column(String(500), default="")


class SpeciesStatus(Base):
    """Status flags of a species in a territory (protected, invasive, endemic)."""

    __tablename__ = "species_status"
    __table_args__ = (Index("ix_species_status_territory", "territory_id", "species_id"),)

    species_id: Mapped[int] = mapped_column(
        ForeignKey("species.id", ondelete="CASCADE"), primary_key=True
    )
    territory_id: Mapped[int] = mapped_column(
        ForeignKey("territory.id", ondelete="CASCADE"), primary_key=True
    )
    protected: Mapped[bool] = mapped_column(Boolean, default=False)
    invasive: Mapped[bool] = mapped_column(Boolean, default=False)
    endemic: Mapped[bool] = mapped_column(Boolean, default=False)
    iucn: Mapped[str | None] = mapped_column(String(2))  # IUCN Red List category


class Model(Base):
    __tablename__ = "model"
    __table_args__ = (UniqueConstraint("name", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    version: Mapped[str] = mapped_column(String(64))
    digest: Mapped[str] = mapped_column(String(128), default="")
    card: Mapped[dict[str, Any]] = mapped_column(JSON)


class Release(Base):
    __tablename__ = "release"
    __table_args__ = (Index("ix_release_period_status", "period", "status", "published_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(100), unique=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("model.id"), index=True)
    period: Mapped[str] = mapped_column(String(32))
    status: Mapped[ReleaseStatus] = mapped_column(_enum(ReleaseStatus))
    storage_uri: Mapped[str] = mapped_column(String(1000))
    grid: Mapped[dict[str, Any]] = mapped_column(JSON)
    threshold: Mapped[float] = mapped_column(Float)
    footprint: Mapped[BaseGeometry] = mapped_column(Geometry("POLYGON"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    retired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # an on-demand job's release: served by id until then, left out of listings and of
    # "the latest release", removed with its data by the job runner after it
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    model: Mapped[Model] = relationship()


class Layer(Base):
    """One map layer of a release: a species, an indicator, a class layer (its name in
    ``indicator``)."""

    __tablename__ = "layer"
    __table_args__ = (
        UniqueConstraint("release_id", "name"),
        Index("ix_layer_species", "species_id", "release_id"),
        Index("ix_layer_indicator", "indicator", "release_id"),
        Index("ix_layer_release_kind", "release_id", "kind"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    release_id: Mapped[int] = mapped_column(ForeignKey("release.id", ondelete="CASCADE"))
    kind: Mapped[LayerKind] = mapped_column(_enum(LayerKind))
    name: Mapped[str] = mapped_column(String(200))  # "species/12", "indicator/richness"
    species_id: Mapped[int | None] = mapped_column(ForeignKey("species.id"))
    indicator: Mapped[str | None] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(String(300))
    units: Mapped[str] = mapped_column(String(64), default="")
    min: Mapped[float | None] = mapped_column(Float)
    max: Mapped[float | None] = mapped_column(Float)
    mean: Mapped[float | None] = mapped_column(Float)
    histogram: Mapped[dict[str, Any]] = mapped_column(JSON)  # {"edges": [...], "counts": [...]}
    footprint: Mapped[BaseGeometry | None] = mapped_column(Geometry("POLYGON"))
    minx: Mapped[float | None] = mapped_column(Float)
    miny: Mapped[float | None] = mapped_column(Float)
    maxx: Mapped[float | None] = mapped_column(Float)
    maxy: Mapped[float | None] = mapped_column(Float)
    # where the species is present (p >= the release's threshold); the footprint and
    # min/max x/y above are where the layer has data to show (p > 0)
    presence_minx: Mapped[float | None] = mapped_column(Float)
    presence_miny: Mapped[float | None] = mapped_column(Float)
    presence_maxx: Mapped[float | None] = mapped_column(Float)
    presence_maxy: Mapped[float | None] = mapped_column(Float)
    version: Mapped[str] = mapped_column(String(32))

    release: Mapped[Release] = relationship()


class TerritoryReport(Base):
    """A territory's area report over a release, computed once and answered from here.

    ``stamp`` names what the report was computed from (the release's publication and
    the territory's geometry); a report whose stamp differs from the current one is
    stale and is computed again.
    """

    __tablename__ = "territory_report"

    release_id: Mapped[int] = mapped_column(
        ForeignKey("release.id", ondelete="CASCADE"), primary_key=True
    )
    territory_id: Mapped[int] = mapped_column(
        ForeignKey("territory.id", ondelete="CASCADE"), primary_key=True
    )
    stamp: Mapped[str] = mapped_column(String(200))
    body: Mapped[bytes] = mapped_column(LargeBinary)  # the JSON report, as served
    seconds: Mapped[float] = mapped_column(Float)  # what computing it took
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ModelCovariates(Base):
    """Where a model's covariate rasters live for one period, checked at registration
    against the model card and a reference grid (what on-demand prediction runs on)."""

    __tablename__ = "model_covariates"
    __table_args__ = (UniqueConstraint("model_name", "model_version", "period"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_name: Mapped[str] = mapped_column(String(200))
    model_version: Mapped[str] = mapped_column(String(64))
    model_digest: Mapped[str] = mapped_column(String(128))
    card_path: Mapped[str] = mapped_column(String(1000))
    period: Mapped[str] = mapped_column(String(32))
    covariates: Mapped[dict[str, Any]] = mapped_column(JSON)  # {name: location}
    checksums: Mapped[dict[str, Any]] = mapped_column(JSON)  # {name: sha256}
    grid: Mapped[dict[str, Any]] = mapped_column(JSON)  # the reference grid (Grid)
    territory: Mapped[str] = mapped_column(String(1000))  # mask raster of the coverage
    registered_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ApiKey(Base):
    """An API key for write access: only its SHA-256 is stored (keys are 256-bit random,
    so a fast hash is safe), looked up by its public prefix."""

    __tablename__ = "api_key"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    scopes: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class JobStatus(enum.StrEnum):
    queued = "queued"
    running = "running"
    done = "done"
    failed = "failed"
    cancelled = "cancelled"
    expired = "expired"


class Job(Base):
    """An on-demand prediction job: its request, its state, and its result release."""

    __tablename__ = "job"
    __table_args__ = (
        Index("ix_job_request", "request_key", "status"),
        Index("ix_job_status", "status", "heartbeat_at"),
        Index("ix_job_key", "api_key_id", "status"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    request_key: Mapped[str] = mapped_column(String(64))
    api_key_id: Mapped[int | None] = mapped_column(ForeignKey("api_key.id", ondelete="SET NULL"))
    covariates_id: Mapped[int] = mapped_column(
        ForeignKey("model_covariates.id", ondelete="CASCADE")
    )
    status: Mapped[JobStatus] = mapped_column(_enum(JobStatus))
    request: Mapped[dict[str, Any]] = mapped_column(JSON)  # model, period, area (as given)
    window: Mapped[dict[str, Any]] = mapped_column(JSON)  # the job's grid, area in its CRS
    area_km2: Mapped[float] = mapped_column(Float)
    chunks_total: Mapped[int] = mapped_column(Integer, default=0)
    chunks_done: Mapped[int] = mapped_column(Integer, default=0)
    timings: Mapped[dict[str, Any]] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(String(2000))
    release_key: Mapped[str | None] = mapped_column(String(100))
    runner: Mapped[str | None] = mapped_column(String(200))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
