"""The catalog queries every map client needs, each an indexed query on both backends.

PostgreSQL answers spatial questions with PostGIS (GiST indexes) and fuzzy name search
with pg_trgm (GIN index). SQLite answers them with R*Tree bounding-box look-ups refined
by shapely (GEOS, the same predicates as PostGIS), and with the ``name_trigram`` table.
The results are the same on both; the tests run every query on both.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import shapely
from shapely.geometry import Point, box
from shapely.geometry.base import BaseGeometry
from shapely.prepared import prep
from sqlalchemy import and_, exists, func, literal, select, text
from sqlalchemy.orm import Session

from sdmatlas.catalog.names import FUZZY_THRESHOLD, clean_query, trigrams
from sdmatlas.catalog.schema import (
    Layer,
    LayerKind,
    NameTrigram,
    Release,
    ReleaseStatus,
    Species,
    SpeciesName,
    SpeciesStatus,
    Territory,
    TerritoryLevel,
)
from sdmatlas.errors import InvalidInputError, NotFoundError

MAX_LIMIT = 1000
#: The largest page offset accepted (SQL engines take 64-bit offsets; a client's larger
#: integer would overflow the driver, a 500, instead of being refused).
MAX_OFFSET = 2**31 - 1
StatusFlag = Literal["protected", "invasive", "endemic"]


def _page(limit: int, offset: int) -> None:
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInputError(f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
    if offset < 0:
        raise InvalidInputError(f"offset must be 0 or more, got {offset}")


def _is_pg(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


# -- species ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpeciesHit:
    id: int
    scientific_name: str
    genus: str | None
    family: str | None
    gbif_key: int | None
    matched: str | None  # the name that matched the search text
    score: float  # 1 for prefix matches; trigram similarity for fuzzy ones


def _species_filters(
    genus: str | None,
    family: str | None,
    status: StatusFlag | None,
    territory_id: int | None,
) -> list[Any]:
    where: list[Any] = []
    if genus is not None:
        where.append(Species.genus == genus)
    if family is not None:
        where.append(Species.family == family)
    if status is not None:
        if status not in ("protected", "invasive", "endemic"):
            raise InvalidInputError(f"status {status!r} is not one of protected, invasive, endemic")
        cond = [SpeciesStatus.species_id == Species.id, getattr(SpeciesStatus, status).is_(True)]
        if territory_id is not None:
            cond.append(SpeciesStatus.territory_id == territory_id)
        where.append(exists().where(*cond))
    return where


def _prefix_upper(key: str) -> str:
    return key[:-1] + chr(ord(key[-1]) + 1)


def search_species(
    session: Session,
    q: str | None = None,
    mode: Literal["prefix", "fuzzy"] = "prefix",
    genus: str | None = None,
    family: str | None = None,
    status: StatusFlag | None = None,
    territory: str | None = None,
    limit: int = 20,
    offset: int = 0,
) -> list[SpeciesHit]:
    """Species whose scientific or vernacular name starts with ``q`` (``prefix``; sorted
    by scientific name) or resembles it (``fuzzy``: pg_trgm similarity >= 0.3, best
    first), filtered by genus, family and a status flag (in ``territory`` if given)."""
    _page(limit, offset)
    if mode not in ("prefix", "fuzzy"):
        raise InvalidInputError(f"search mode {mode!r} is not prefix or fuzzy")
    territory_id = get_territory(session, territory).id if territory is not None else None
    where = _species_filters(genus, family, status, territory_id)
    cols = (Species.id, Species.scientific_name, Species.genus, Species.family, Species.gbif_key)
    if q is None:
        stmt: Any = (
            select(*cols, literal(None).label("matched"), literal(1.0).label("score"))
            .where(*where)
            .order_by(Species.scientific_name, Species.id)
        )
    else:
        key = clean_query(q)
        if mode == "prefix":
            names = (
                select(
                    SpeciesName.species_id.label("sid"),
                    func.min(SpeciesName.name).label("matched"),
                )
                .where(SpeciesName.name_key >= key, SpeciesName.name_key < _prefix_upper(key))
                .group_by(SpeciesName.species_id)
                .subquery()
            )
            stmt = (
                select(*cols, names.c.matched, literal(1.0).label("score"))
                .join(names, names.c.sid == Species.id)
                .where(*where)
                .order_by(Species.scientific_name, Species.id)
            )
        elif not trigrams(key):
            return []  # no letters or digits: nothing is similar (as in pg_trgm)
        else:
            stmt = _fuzzy(session, key, cols, where)
    rows = session.execute(stmt.limit(limit).offset(offset)).all()
    return [
        SpeciesHit(
            id=r.id,
            scientific_name=r.scientific_name,
            genus=r.genus,
            family=r.family,
            gbif_key=r.gbif_key,
            matched=r.matched,
            score=round(float(r.score), 4),
        )
        for r in rows
    ]


def _fuzzy(session: Session, key: str, cols: tuple[Any, ...], where: list[Any]) -> Any:
    if _is_pg(session):
        sim: Any = func.similarity(SpeciesName.name_key, key)
        scored = (
            select(SpeciesName.species_id.label("sid"), SpeciesName.name, sim.label("score"))
            .where(SpeciesName.name_key.op("%")(key), sim >= FUZZY_THRESHOLD)
            .subquery()
        )
    else:
        grams = sorted(trigrams(key))
        shared = (
            select(NameTrigram.name_id, func.count().label("n"))
            .where(NameTrigram.trigram.in_(grams))
            .group_by(NameTrigram.name_id)
            .subquery()
        )
        sim = shared.c.n * 1.0 / (SpeciesName.n_trigrams + len(grams) - shared.c.n)
        scored = (
            select(SpeciesName.species_id.label("sid"), SpeciesName.name, sim.label("score"))
            .join(shared, shared.c.name_id == SpeciesName.id)
            .where(sim >= FUZZY_THRESHOLD)
            .subquery()
        )
    # best-scoring name per species, ties to the alphabetically first name
    ranked = select(
        scored.c.sid,
        scored.c.name,
        scored.c.score,
        func.row_number()
        .over(partition_by=scored.c.sid, order_by=(scored.c.score.desc(), scored.c.name))
        .label("rn"),
    ).subquery()
    return (
        select(*cols, ranked.c.name.label("matched"), ranked.c.score)
        .join(ranked, and_(ranked.c.sid == Species.id, ranked.c.rn == 1))
        .where(*where)
        .order_by(ranked.c.score.desc(), Species.scientific_name, Species.id)
    )


def get_species(session: Session, species_id: int) -> Species:
    sp = session.get(Species, species_id)
    if sp is None:
        raise NotFoundError(f"no species with id {species_id}")
    return sp


# -- territories --------------------------------------------------------------------------------


@dataclass(frozen=True)
class TerritoryInfo:
    id: int
    code: str
    name: str
    level: str
    area_km2: float
    bbox: tuple[float, float, float, float]


def _territory_info(t: Territory) -> TerritoryInfo:
    return TerritoryInfo(
        t.id,
        t.code,
        t.name,
        TerritoryLevel(t.level).value,
        t.area_km2,
        (t.minx, t.miny, t.maxx, t.maxy),
    )


def get_territory(session: Session, code: str) -> Territory:
    if len(code) > 64:
        raise InvalidInputError("a territory code has at most 64 characters")
    t = session.scalar(select(Territory).where(Territory.code == code))
    if t is None:
        raise NotFoundError(f"no territory with code {code!r}")
    return t


def get_territory_info(session: Session, code: str) -> TerritoryInfo:
    return _territory_info(get_territory(session, code))


def _check_lonlat(lon: float, lat: float) -> None:
    if not (-180.0 <= lon <= 180.0 and -90.0 <= lat <= 90.0):
        raise InvalidInputError(f"({lon}, {lat}) is not a longitude/latitude in degrees")


def _spatial_territories(
    session: Session, geom: BaseGeometry, predicate: str, level: str | None
) -> list[TerritoryInfo]:
    if level is not None:
        try:
            level = TerritoryLevel(level).value
        except ValueError:
            raise InvalidInputError(f"territory level {level!r} is unknown") from None
    if _is_pg(session):
        fn = {"covers": func.ST_Covers, "intersects": func.ST_Intersects}[predicate]
        stmt = select(Territory).where(fn(Territory.geom, func.ST_GeomFromText(geom.wkt, 4326)))
        if level is not None:
            stmt = stmt.where(Territory.level == level)
        found = list(session.scalars(stmt))
    else:
        minx, miny, maxx, maxy = geom.bounds
        ids = (
            session.execute(
                text(
                    "SELECT id FROM territory_rtree WHERE minx <= :maxx AND maxx >= :minx "
                    "AND miny <= :maxy AND maxy >= :miny"
                ),
                {"minx": minx, "miny": miny, "maxx": maxx, "maxy": maxy},
            )
            .scalars()
            .all()
        )
        stmt = select(Territory).where(Territory.id.in_(ids))
        if level is not None:
            stmt = stmt.where(Territory.level == level)
        test = {"covers": shapely.covers, "intersects": shapely.intersects}[predicate]
        found = [t for t in session.scalars(stmt) if test(t.geom, geom)]
    found.sort(key=lambda t: (t.area_km2, t.code))  # most specific first
    return [_territory_info(t) for t in found]


def territories_at(
    session: Session, lon: float, lat: float, level: str | None = None
) -> list[TerritoryInfo]:
    """Territories containing the point (boundary included), smallest first."""
    _check_lonlat(lon, lat)
    return _spatial_territories(session, Point(lon, lat), "covers", level)


def territories_in_bbox(
    session: Session,
    bbox: tuple[float, float, float, float],
    level: str | None = None,
) -> list[TerritoryInfo]:
    """Territories intersecting a lon/lat box (west, south, east, north), smallest first."""
    w, s, e, n = bbox
    _check_lonlat(w, s)
    _check_lonlat(e, n)
    if not (w < e and s < n):
        raise InvalidInputError(f"bbox {bbox} must be west < east and south < north")
    return _spatial_territories(session, box(w, s, e, n), "intersects", level)


def list_territories(
    session: Session, level: str | None = None, limit: int = 100, offset: int = 0
) -> list[TerritoryInfo]:
    _page(limit, offset)
    stmt = select(Territory).order_by(Territory.code)
    if level is not None:
        try:
            stmt = stmt.where(Territory.level == TerritoryLevel(level))
        except ValueError:
            raise InvalidInputError(f"territory level {level!r} is unknown") from None
    return [_territory_info(t) for t in session.scalars(stmt.limit(limit).offset(offset))]


# -- releases and layers ------------------------------------------------------------------------


@dataclass(frozen=True)
class ReleaseInfo:
    id: int
    key: str
    period: str
    status: str
    storage_uri: str
    model: str
    model_version: str
    published_at: datetime | None
    expires_at: datetime | None = None
    """set on an on-demand job's release"""


def _release_info(r: Release) -> ReleaseInfo:
    return ReleaseInfo(
        r.id,
        r.key,
        r.period,
        ReleaseStatus(r.status).value,
        r.storage_uri,
        r.model.name,
        r.model.version,
        r.published_at,
        r.expires_at,
    )


def get_release(session: Session, key: str) -> ReleaseInfo:
    r = session.scalar(select(Release).where(Release.key == key))
    if r is None:
        raise NotFoundError(f"no release {key!r} in the catalog")
    return _release_info(r)


def list_releases(
    session: Session, period: str | None = None, include_retired: bool = False
) -> list[ReleaseInfo]:
    """Published releases (and retired ones if asked), newest first."""
    statuses = [ReleaseStatus.published] + ([ReleaseStatus.retired] if include_retired else [])
    stmt = select(Release).where(Release.status.in_(statuses), Release.expires_at.is_(None))
    if period is not None:
        stmt = stmt.where(Release.period == period)
    stmt = stmt.order_by(Release.published_at.desc(), Release.id.desc())
    return [_release_info(r) for r in session.scalars(stmt)]


def latest_release(session: Session, period: str | None = None) -> ReleaseInfo:
    """The most recently published release (of ``period`` if given)."""
    stmt = select(Release).where(
        Release.status == ReleaseStatus.published, Release.expires_at.is_(None)
    )
    if period is not None:
        stmt = stmt.where(Release.period == period)
    r = session.scalar(stmt.order_by(Release.published_at.desc(), Release.id.desc()).limit(1))
    if r is None:
        raise NotFoundError("no published release" + (f" for period {period!r}" if period else ""))
    return _release_info(r)


@dataclass(frozen=True)
class LayerInfo:
    id: int
    release: str
    period: str
    name: str
    kind: str
    species_id: int | None
    indicator: str | None
    title: str
    units: str
    min: float | None
    max: float | None
    mean: float | None
    histogram: dict[str, Any]
    bbox: tuple[float, float, float, float] | None
    """where the layer has data to show (species: p > 0)"""
    presence_bbox: tuple[float, float, float, float] | None
    """species: where p >= the release's threshold"""
    version: str


def _box(*b: float | None) -> tuple[float, float, float, float] | None:
    return None if any(v is None for v in b) else b  # type: ignore[return-value]


def find_layers(
    session: Session,
    species_id: int | None = None,
    indicator: str | None = None,
    kind: LayerKind | str | None = None,
    territory: str | None = None,
    period: str | None = None,
    release: str | None = None,
    include_retired: bool = False,
    limit: int = 100,
    offset: int = 0,
) -> list[LayerInfo]:
    """Layers of published releases by species, indicator, kind, period, release, and
    territory (the layer's footprint intersects the territory), newest release first."""
    _page(limit, offset)
    stmt = select(Layer, Release.key, Release.period).join(Release, Layer.release_id == Release.id)
    statuses = [ReleaseStatus.published] + ([ReleaseStatus.retired] if include_retired else [])
    stmt = stmt.where(Release.status.in_(statuses))
    if species_id is not None:
        stmt = stmt.where(Layer.species_id == species_id)
    if indicator is not None:
        stmt = stmt.where(Layer.indicator == indicator)
    if kind is not None:
        try:
            stmt = stmt.where(Layer.kind == LayerKind(kind))
        except ValueError:
            raise InvalidInputError(f"layer kind {kind!r} is unknown") from None
    if period is not None:
        stmt = stmt.where(Release.period == period)
    if release is not None:
        stmt = stmt.where(Release.key == release)
    else:  # a job's release is found by its id only
        stmt = stmt.where(Release.expires_at.is_(None))
    stmt = stmt.order_by(Release.published_at.desc(), Release.id.desc(), Layer.id)
    if territory is None:
        rows = session.execute(stmt.limit(limit).offset(offset)).all()
    else:
        terr = get_territory(session, territory)
        if _is_pg(session):
            stmt = stmt.where(
                func.ST_Intersects(
                    Layer.footprint,
                    select(Territory.geom).where(Territory.id == terr.id).scalar_subquery(),
                )
            )
            rows = session.execute(stmt.limit(limit).offset(offset)).all()
        else:
            cand = (
                select(text("id"))
                .select_from(text("layer_rtree"))
                .where(text("minx <= :maxx AND maxx >= :minx AND miny <= :maxy AND maxy >= :miny"))
            )
            stmt = stmt.where(Layer.id.in_(cand)).params(
                minx=terr.minx, miny=terr.miny, maxx=terr.maxx, maxy=terr.maxy
            )
            prepared = prep(terr.geom)
            hits = [
                r
                for r in session.execute(stmt).all()
                if r[0].footprint is not None and prepared.intersects(r[0].footprint)
            ]
            rows = hits[offset : offset + limit]
    return [
        LayerInfo(
            id=layer.id,
            release=key,
            period=period_,
            name=layer.name,
            kind=LayerKind(layer.kind).value,
            species_id=layer.species_id,
            indicator=layer.indicator,
            title=layer.title,
            units=layer.units,
            min=layer.min,
            max=layer.max,
            mean=layer.mean,
            histogram=layer.histogram,
            bbox=_box(layer.minx, layer.miny, layer.maxx, layer.maxy),
            presence_bbox=_box(
                layer.presence_minx, layer.presence_miny, layer.presence_maxx, layer.presence_maxy
            ),
            version=layer.version,
        )
        for layer, key, period_ in rows
    ]
