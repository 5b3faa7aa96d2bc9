"""Imports into the catalog: species (with names and status flags) from CSV, and
territories from GeoJSON, GeoPackage, Shapefile or TopoJSON.

Imports are idempotent: rows are matched by their natural key (species id, territory
code) and only changed fields are written, so importing a file twice changes nothing.
Each import is one transaction: a bad row refuses the whole file, naming the row.
"""

from __future__ import annotations

import csv
import functools
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import shapely
from pyproj import CRS, Transformer
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from sdmatlas.catalog.db import Catalog
from sdmatlas.catalog.names import name_key, trigrams
from sdmatlas.catalog.schema import (
    NameTrigram,
    Species,
    SpeciesName,
    SpeciesStatus,
    Territory,
    TerritoryLevel,
)
from sdmatlas.errors import InvalidInputError, NotFoundError, TerritoryError
from sdmatlas.status import parse_iucn

FLAGS = ("protected", "invasive", "endemic")
_TRUE = {"1", "true", "yes", "y", "t"}
_FALSE = {"0", "false", "no", "n", "f", ""}
MAX_TERRITORY_VERTICES = 5_000_000
#: Equal-area CRS used for territory areas (km²); fine for Europe, approximate elsewhere.
_AREA_CRS = "EPSG:3035"


@dataclass
class ImportReport:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    repaired: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        s = f"{self.added} added, {self.updated} updated, {self.unchanged} unchanged"
        if self.repaired:
            s += f"; geometry repaired for {', '.join(self.repaired)}"
        return s


# -- species ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpeciesRow:
    id: int
    scientific_name: str
    genus: str | None
    family: str | None
    gbif_key: int | None
    vernacular: tuple[tuple[str, str], ...]  # (lang, name)
    flags: dict[str, Any] | None  # protected, invasive, endemic (bool), iucn (str | None)


def _flag(value: str | None, where: str, name: str) -> bool:
    v = (value or "").strip().lower()
    if v not in _TRUE | _FALSE:
        raise InvalidInputError(f"{where}: {name}={value!r} is not a yes/no value")
    return v in _TRUE


def _int(value: str | None, where: str, name: str, required: bool) -> int | None:
    v = (value or "").strip()
    if not v:
        if required:
            raise InvalidInputError(f"{where}: {name} is missing")
        return None
    try:
        return int(v)
    except ValueError:
        raise InvalidInputError(f"{where}: {name} {v!r} is not an integer") from None


def _text(value: str | None, where: str, name: str, limit: int) -> str | None:
    v = " ".join((value or "").split())
    if len(v) > limit:
        raise InvalidInputError(f"{where}: {name} is longer than {limit} characters")
    return v or None


def _vernacular(value: str | None, where: str) -> tuple[tuple[str, str], ...]:
    """``"en:Common oak; fr:Chêne pédonculé"`` -> ((en, Common oak), (fr, Chêne pédonculé))."""
    out = []
    for item in (value or "").split(";"):
        item = item.strip()
        if not item:
            continue
        lang, sep, name = item.partition(":")
        if not sep or not lang.strip().isalpha() or len(lang.strip()) > 8 or not name.strip():
            raise InvalidInputError(
                f"{where}: vernacular name {item!r} must be written lang:name (en:Common oak)"
            )
        clean = _text(name, where, "vernacular name", 200)
        assert clean is not None
        out.append((lang.strip().lower(), clean))
    return tuple(sorted(set(out)))


def read_species_csv(path: Path) -> list[SpeciesRow]:
    """Rows of a species CSV. Columns: ``species_id``, ``scientific_name`` (required);
    ``genus``, ``family``, ``gbif_key``, ``vernacular`` (``lang:name; ...``),
    ``protected``, ``invasive``, ``endemic``, ``iucn`` (an IUCN Red List category)
    (optional)."""
    if not path.exists():
        raise NotFoundError(f"species file {path} does not exist")
    rows: list[SpeciesRow] = []
    seen: set[int] = set()
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        cols = set(reader.fieldnames or [])
        for needed in ("species_id", "scientific_name"):
            if needed not in cols:
                raise InvalidInputError(f"{path} needs a {needed} column")
        has_flags = bool(cols & {*FLAGS, "iucn"})
        for line, row in enumerate(reader, start=2):
            where = f"{path.name}, line {line}"
            sid = _int(row["species_id"], where, "species_id", required=True)
            assert sid is not None
            if sid in seen:
                raise InvalidInputError(f"{where}: species_id {sid} appears twice")
            seen.add(sid)
            name = _text(row["scientific_name"], where, "scientific_name", 200)
            if name is None:
                raise InvalidInputError(f"{where}: scientific_name is missing")
            rows.append(
                SpeciesRow(
                    id=sid,
                    scientific_name=name,
                    genus=_text(row.get("genus"), where, "genus", 100),
                    family=_text(row.get("family"), where, "family", 100),
                    gbif_key=_int(row.get("gbif_key"), where, "gbif_key", required=False),
                    vernacular=_vernacular(row.get("vernacular"), where),
                    flags={
                        **{f: _flag(row.get(f), where, f) for f in FLAGS},
                        "iucn": parse_iucn(row.get("iucn"), where),
                    }
                    if has_flags
                    else None,
                )
            )
    return rows


def _name_rows(
    species_id: int, scientific: str, vernacular: Iterable[tuple[str, str]]
) -> list[tuple[str, str, str]]:
    return [("scientific", "", scientific), *(("vernacular", lang, n) for lang, n in vernacular)]


def _set_names(
    session: Session, sp: Species, wanted: list[tuple[str, str, str]], new: list[SpeciesName]
) -> bool:
    """Make ``sp``'s names ``wanted``; names to insert are appended to ``new``."""
    have = {(n.kind, n.lang, n.name): n for n in sp.names}
    if set(have) == set(wanted):
        return False
    gone = [n for k, n in have.items() if k not in wanted]
    for n in gone:
        sp.names.remove(n)
    if gone:
        session.flush()  # deletes before the inserts that may reuse their unique keys
    for kind, lang, name in wanted:
        if (kind, lang, name) not in have:
            nk = name_key(name)
            row = SpeciesName(
                kind=kind, lang=lang, name=name, name_key=nk, n_trigrams=len(trigrams(nk))
            )
            sp.names.append(row)
            new.append(row)
    return True


def upsert_species(session: Session, rows: list[SpeciesRow], report: ImportReport) -> None:
    """Insert or update species and their names (not their status flags).

    New rows are flushed together (one batched INSERT per table rather than a round trip
    per name: 10,000 species with 30,000 names import in seconds, not minutes)."""
    existing = {
        s.id: s
        for s in session.scalars(select(Species).where(Species.id.in_([r.id for r in rows])))
    }
    new_names: list[SpeciesName] = []
    for r in rows:
        sp = existing.get(r.id)
        fields = {
            "scientific_name": r.scientific_name,
            "genus": r.genus,
            "family": r.family,
            "gbif_key": r.gbif_key,
        }
        wanted = _name_rows(r.id, r.scientific_name, r.vernacular)
        if sp is None:
            sp = Species(id=r.id, **fields)
            session.add(sp)
            _set_names(session, sp, wanted, new_names)
            report.added += 1
            continue
        changed = False
        for k, v in fields.items():
            if getattr(sp, k) != v:
                setattr(sp, k, v)
                changed = True
        changed |= _set_names(session, sp, wanted, new_names)
        if changed:
            report.updated += 1
        else:
            report.unchanged += 1
    session.flush()  # new species and names get their ids
    grams = [{"trigram": g, "name_id": n.id} for n in new_names for g in trigrams(n.name_key)]
    if grams:
        session.execute(insert(NameTrigram), grams)


def import_species(catalog: Catalog, path: Path, territory: str | None = None) -> ImportReport:
    """Import a species CSV; status flags, if the file has them, are recorded for
    ``territory`` (a territory code, which must exist)."""
    rows = read_species_csv(Path(path))
    report = ImportReport()
    with catalog.session() as session:
        upsert_species(session, rows, report)
        flagged = [r for r in rows if r.flags is not None]
        if flagged:
            if territory is None:
                raise InvalidInputError(
                    f"{Path(path).name} has status flags: name the territory they hold in "
                    "(--territory CODE)"
                )
            terr_id = session.scalar(select(Territory.id).where(Territory.code == territory))
            if terr_id is None:
                raise NotFoundError(f"no territory with code {territory!r}; import it first")
            have = {
                s.species_id: s
                for s in session.scalars(
                    select(SpeciesStatus).where(SpeciesStatus.territory_id == terr_id)
                )
            }
            for r in flagged:
                assert r.flags is not None
                st = have.get(r.id)
                if st is None:
                    session.add(SpeciesStatus(species_id=r.id, territory_id=terr_id, **r.flags))
                else:
                    for k, v in r.flags.items():
                        if getattr(st, k) != v:
                            setattr(st, k, v)
    return report


# -- territories --------------------------------------------------------------------------------


@dataclass(frozen=True)
class TerritoryFeature:
    code: str
    name: str
    level: TerritoryLevel | None
    geom: MultiPolygon
    repaired: bool


def _polygonal(geom: BaseGeometry) -> MultiPolygon:
    parts: list[Polygon] = []
    for g in getattr(geom, "geoms", [geom]):
        if isinstance(g, Polygon) and not g.is_empty:
            parts.append(g)
        elif isinstance(g, MultiPolygon):
            parts.extend(p for p in g.geoms if not p.is_empty)
        elif hasattr(g, "geoms"):
            parts.extend(_polygonal(g).geoms)
    return MultiPolygon(parts)


def clean_geometry(geom: BaseGeometry | None, fid: str) -> tuple[MultiPolygon, bool]:
    """A territory geometry as a valid MultiPolygon, and whether it had to be repaired.
    Invalid polygons (self-intersections, bad rings) are repaired with GEOS's
    ``make_valid``, keeping the polygonal parts; what cannot become a polygon is refused."""
    if geom is None or geom.is_empty:
        raise TerritoryError(f"feature {fid}: the geometry is empty")
    if geom.geom_type not in ("Polygon", "MultiPolygon"):
        raise TerritoryError(f"feature {fid}: a territory must be a polygon, not {geom.geom_type}")
    if shapely.get_num_coordinates(geom) > MAX_TERRITORY_VERTICES:
        raise TerritoryError(f"feature {fid}: more than {MAX_TERRITORY_VERTICES} vertices")
    if not shapely.is_valid(geom):
        fixed = _polygonal(shapely.make_valid(geom))
        if fixed.is_empty or fixed.area == 0:
            raise TerritoryError(
                f"feature {fid}: invalid polygon ({shapely.is_valid_reason(geom)}) "
                "with no area left after repair"
            )
        return fixed, True
    return _polygonal(geom), False


def read_territories(
    path: Path,
    code_field: str = "code",
    name_field: str = "name",
    layer: str | None = None,
    level_field: str = "level",
) -> list[TerritoryFeature]:
    """Features of a vector file (any format GDAL reads through pyogrio), in WGS 84.
    A ``level_field`` column, when the file has one, gives each feature's level."""
    import pyogrio  # type: ignore[import-untyped]

    path = Path(path)
    if not path.exists():
        raise NotFoundError(f"territory file {path} does not exist")
    try:
        meta, _, geoms, field_data = pyogrio.raw.read(path, layer=layer)
    except Exception as e:  # pyogrio raises its own DataSourceError/DataLayerError types
        raise InvalidInputError(f"cannot read territories from {path}: {e}") from None
    fields = list(meta["fields"])
    for f in (code_field, name_field):
        if f not in fields:
            raise InvalidInputError(f"{path.name} has no {f!r} field (fields: {fields})")
    codes, names = field_data[fields.index(code_field)], field_data[fields.index(name_field)]
    levels = field_data[fields.index(level_field)] if level_field in fields else [None] * len(codes)
    src = CRS.from_user_input(meta["crs"]) if meta.get("crs") else CRS.from_epsg(4326)
    to_wgs84 = (
        None if src.equals(CRS.from_epsg(4326)) else Transformer.from_crs(src, 4326, always_xy=True)
    )
    out: list[TerritoryFeature] = []
    seen: set[str] = set()
    for i, (wkb, code_v, name_v, level_v) in enumerate(
        zip(geoms, codes, names, levels, strict=True)
    ):
        code = str(code_v).strip() if code_v is not None else ""
        fid = repr(code) if code else f"#{i}"
        if not code or len(code) > 64:
            raise TerritoryError(f"feature #{i}: {code_field} must be 1 to 64 characters")
        if code in seen:
            raise TerritoryError(f"feature {fid}: code appears twice in {path.name}")
        seen.add(code)
        name = " ".join(str(name_v or "").split())
        if not name or len(name) > 200:
            raise TerritoryError(f"feature {fid}: {name_field} must be 1 to 200 characters")
        geom = shapely.from_wkb(wkb) if wkb is not None else None
        if geom is not None and to_wgs84 is not None:
            geom = shapely.transform(geom, lambda xy: _transform(to_wgs84, xy))
        level = None
        if level_v is not None and str(level_v).strip():
            level = _level(str(level_v).strip(), f"feature {fid}: ")
        clean, repaired = clean_geometry(geom, fid)
        out.append(TerritoryFeature(code, name, level, clean, repaired))
    return out


def _transform(t: Transformer, xy: Any) -> Any:
    import numpy as np

    x, y = t.transform(xy[:, 0], xy[:, 1])
    return np.column_stack([x, y])


@functools.cache
def _to_area_crs() -> Transformer:
    # building a Transformer costs ~50 ms (PROJ database look-ups): once per process
    return Transformer.from_crs(4326, _AREA_CRS, always_xy=True)


def _area_km2(geom: MultiPolygon) -> float:
    to_laea = _to_area_crs()
    return float(shapely.transform(geom, lambda xy: _transform(to_laea, xy)).area / 1e6)


def _level(value: str, where: str = "") -> TerritoryLevel:
    try:
        return TerritoryLevel(value)
    except ValueError:
        raise InvalidInputError(
            f"{where}territory level {value!r} is not one of {[v.value for v in TerritoryLevel]}"
        ) from None


def import_territories(
    catalog: Catalog,
    path: Path,
    level: TerritoryLevel | str | None = None,
    code_field: str = "code",
    name_field: str = "name",
    layer: str | None = None,
) -> ImportReport:
    """Import (insert or update by code) the territories of a vector file. ``level``
    applies to every feature; without it, each feature needs a ``level`` field."""
    default = _level(str(level)) if level is not None else None
    features = read_territories(Path(path), code_field, name_field, layer)
    for f in features:
        if default is None and f.level is None:
            raise InvalidInputError(
                f"feature {f.code!r} has no level: give one (--level) or a 'level' field"
            )
    report = ImportReport(repaired=[f.code for f in features if f.repaired])
    with catalog.session() as session:
        existing = {
            t.code: t
            for t in session.scalars(
                select(Territory).where(Territory.code.in_([f.code for f in features]))
            )
        }
        for f in features:
            minx, miny, maxx, maxy = f.geom.bounds
            values = {
                "name": f.name,
                "level": default or f.level,
                "minx": minx,
                "miny": miny,
                "maxx": maxx,
                "maxy": maxy,
                "source": Path(path).name,
            }
            t = existing.get(f.code)
            if t is None:
                session.add(
                    Territory(code=f.code, geom=f.geom, area_km2=_area_km2(f.geom), **values)
                )
                report.added += 1
                continue
            changed = any(getattr(t, k) != v for k, v in values.items())
            if not t.geom.equals_exact(f.geom, 0.0):
                t.geom, t.area_km2 = f.geom, _area_km2(f.geom)
                changed = True
            for k, v in values.items():
                setattr(t, k, v)
            report.updated += changed
            report.unchanged += not changed
    return report
