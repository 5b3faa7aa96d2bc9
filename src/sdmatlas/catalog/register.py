"""Registering a published release, its model and all its layers in the catalog.

Everything goes in one transaction: a reader sees the release with every one of its
layers, or not at all. Species the catalog does not know yet are added from the
release's own species list (names, genus, family), so a release never points at a
missing species.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
from pyproj import Transformer
from shapely.geometry import Polygon, box
from sqlalchemy import insert, select

from sdmatlas.catalog.db import Catalog
from sdmatlas.catalog.imports import ImportReport, SpeciesRow, upsert_species
from sdmatlas.catalog.schema import (
    Layer,
    LayerKind,
    Model,
    Release,
    ReleaseStatus,
    Species,
)
from sdmatlas.errors import InvalidInputError, NotFoundError, ReleaseExistsError
from sdmatlas.grid import Grid
from sdmatlas.publish.stats import code_summary
from sdmatlas.release import Release as PublishedRelease

_ISO_DATE = re.compile(r"^\d{4}(-\d{2}(-\d{2})?)?$")


def _iso_date(text: str) -> str | None:
    """``text`` as a comparable ISO 8601 year, month or date, or None if it is none."""
    if not _ISO_DATE.match(text):
        return None
    parts = [int(p) for p in text.split("-")] + [1, 1]
    try:
        date(parts[0], parts[1], parts[2])
    except ValueError:
        return None
    return text


def validate_period(period: str) -> str:
    """A period in ISO 8601, as WMS TIME values are: a year (``2020``), a month
    (``2020-06``), a date (``2020-06-01``), or an interval of two of them
    (``2041/2060``)."""
    ends = period.split("/")
    ok = 1 <= len(ends) <= 2 and all(_iso_date(e) is not None for e in ends)
    if ok and len(ends) == 2 and ends[0] > ends[1]:
        raise InvalidInputError(f"period {period[:40]!r} ends before it starts")
    if not ok:
        hint = ""
        m = re.fullmatch(r"(\d{4})-(\d{4})", period)
        if m:
            hint = f" (an interval of years is written {m[1]}/{m[2]})"
        raise InvalidInputError(
            f"period {period[:40]!r} is not in ISO 8601{hint}: give a year (2020), a month "
            "(2020-06), a date (2020-06-01) or an interval (2041/2060); a scenario belongs "
            "in the release key, not the period"
        )
    return period


@functools.lru_cache(maxsize=8)
def _to_wgs84(crs: str) -> Transformer:
    # made once per CRS: building a transformer costs ~10 ms, and a release of 10,000
    # species needs 20,000 footprints (that was 3 to 4 minutes of registering)
    return Transformer.from_crs(crs, 4326, always_xy=True)


def footprint(grid: Grid, row0: int, col0: int, row1: int, col1: int) -> Polygon:
    """The WGS 84 outline of a pixel rectangle of ``grid`` (edges densified, so that the
    projected rectangle's curved sides stay inside a small tolerance)."""
    x0, y0 = grid.x0 + col0 * grid.res, grid.y0 - row1 * grid.res
    x1, y1 = grid.x0 + col1 * grid.res, grid.y0 - row0 * grid.res
    t = _to_wgs84(grid.crs)
    ring = box(x0, y0, x1, y1).exterior.segmentize(max(x1 - x0, y1 - y0) / 16)
    xs, ys = t.transform(*np.asarray(ring.coords).T)
    return Polygon(zip(xs, ys, strict=True))


def layer_version(release_key: str, published: str, name: str) -> str:
    """A version string for cache keys and ETags: changes whenever the data may."""
    return hashlib.sha256(f"{release_key}\n{published}\n{name}".encode()).hexdigest()[:16]


def _bbox(geom: Polygon | None, prefix: str = "") -> dict[str, float | None]:
    keys = [f"{prefix}{k}" for k in ("minx", "miny", "maxx", "maxy")]
    if geom is None:
        return dict.fromkeys(keys)
    return dict(zip(keys, geom.bounds, strict=True))


def _pixel_footprint(grid: Grid, pixels: npt.NDArray[np.int64]) -> Polygon | None:
    """The lon/lat outline of a pixel box (row0, col0, row1, col1; -1: none)."""
    r0, c0, r1, c1 = (int(v) for v in pixels)
    return footprint(grid, r0, c0, r1, c1) if r0 >= 0 else None


def register_release(
    catalog: Catalog, release: PublishedRelease, storage_uri: str, period: str
) -> int:
    """Record the published ``release`` (its model, its species and indicator layers),
    stored at ``storage_uri``, and return its catalog id."""
    validate_period(period)
    meta = release.manifest
    key = meta.release_id
    grid = meta.grid
    published = meta.published
    card = meta.model_card
    model_name, model_version = meta.model_name, meta.model_version

    ids = release.species_ids
    names = release.species_names
    none: list[str | None] = [None] * len(ids)
    genus: list[str | None] = list(meta.species.genus or none)
    family: list[str | None] = list(meta.species.family or none)
    hist, presence, extent = (release.stats(n) for n in ("histogram", "presence", "extent"))
    whole = footprint(grid, 0, 0, grid.height, grid.width)
    now = datetime.now(UTC)

    with catalog.session() as session:
        if session.scalar(select(Release.id).where(Release.key == key)) is not None:
            raise ReleaseExistsError(f"release {key!r} is already in the catalog")
        model = session.scalar(
            select(Model).where(Model.name == model_name, Model.version == model_version)
        )
        if model is None:
            digest = hashlib.sha256(json.dumps(card, sort_keys=True).encode()).hexdigest()
            model = Model(name=model_name, version=model_version, digest=digest, card=card)
            session.add(model)
        known = set(session.scalars(select(Species.id).where(Species.id.in_(ids.tolist()))))
        missing = [
            SpeciesRow(
                id=int(sid),
                scientific_name=names[i] if i < len(names) and names[i] else f"species {sid}",
                genus=genus[i] or None,
                family=family[i] or None,
                gbif_key=None,
                vernacular=(),
                flags=None,
            )
            for i, sid in enumerate(ids)
            if int(sid) not in known
        ]
        if missing:
            upsert_species(session, missing, ImportReport())
        row = Release(
            key=key,
            model=model,
            period=period,
            status=ReleaseStatus.published,
            storage_uri=storage_uri,
            grid=grid.model_dump(),
            threshold=meta.threshold,
            footprint=whole,
            created_at=now,
            published_at=datetime.fromisoformat(published),
        )
        session.add(row)
        session.flush()
        rows: list[dict[str, Any]] = []
        for i, sid in enumerate(ids):
            summary = code_summary(hist[i])
            # advertised: where the layer draws something (p > 0), not only where the
            # species is present (p >= threshold), which is kept as its own box
            fp = _pixel_footprint(grid, extent[i])
            present = _pixel_footprint(grid, presence[i])
            name = f"species/{int(sid)}"
            rows.append(
                {
                    "release_id": row.id,
                    "kind": LayerKind.species,
                    "name": name,
                    "species_id": int(sid),
                    "indicator": None,
                    "title": names[i] if i < len(names) else name,
                    "units": "probability",
                    "min": summary["min"],
                    "max": summary["max"],
                    "mean": summary["mean"],
                    "histogram": summary["histogram"],
                    "footprint": fp,
                    **_bbox(fp),
                    **_bbox(present, "presence_"),
                    "version": layer_version(key, published, name),
                }
            )
        for ind, info in meta.indicators.items():
            st = info.stats
            name = f"indicator/{ind}"
            rows.append(
                {
                    "release_id": row.id,
                    "kind": LayerKind.indicator,
                    "name": name,
                    "species_id": None,
                    "indicator": ind,
                    "title": info.title,
                    "units": info.units,
                    "min": st.get("min"),
                    "max": st.get("max"),
                    "mean": st.get("mean"),
                    "histogram": st.get("histogram", {}),
                    "footprint": whole,
                    **_bbox(whole),
                    **_bbox(None, "presence_"),
                    "version": layer_version(key, published, name),
                }
            )
        for name, entry in meta.class_layers.items():
            counts = np.asarray(entry.counts, np.int64)
            layer_name = f"classes/{name}"
            rows.append(
                {
                    "release_id": row.id,
                    "kind": LayerKind.classes,
                    "name": layer_name,
                    "species_id": None,
                    "indicator": name,
                    "title": entry.title,
                    "units": "class",
                    "min": None,
                    "max": None,
                    "mean": None,
                    # the class counts as a histogram: one bin per class, edges the values
                    "histogram": {
                        "classes": [c.code for c in entry.scheme.classes],
                        "counts": counts.tolist(),
                    },
                    "footprint": whole,
                    **_bbox(whole),
                    **_bbox(None, "presence_"),
                    "version": layer_version(key, published, layer_name),
                }
            )
        session.execute(insert(Layer), rows)
        return row.id


def set_release_status(catalog: Catalog, key: str, status: ReleaseStatus | str) -> None:
    """Move a release to ``status`` (retiring keeps its rows; readers filter on status)."""
    try:
        status = ReleaseStatus(status)
    except ValueError:
        raise InvalidInputError(
            f"status {status!r} is not one of {[s.value for s in ReleaseStatus]}"
        ) from None
    with catalog.session() as session:
        rel = session.scalar(select(Release).where(Release.key == key))
        if rel is None:
            raise NotFoundError(f"no release {key!r} in the catalog")
        rel.status = status
        if status is ReleaseStatus.retired:
            rel.retired_at = datetime.now(UTC)
