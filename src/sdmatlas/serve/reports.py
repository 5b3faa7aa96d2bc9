"""Area reports: what a release predicts inside a polygon or a territory of the catalog.

Framework-free (the routes in ``api/queries.py`` and the CLI call it). A polygon's report
is computed on request within the budgets of the settings; a territory's is computed
once per release and territory, stored in the catalog, and answered from there until the
release is published again or the territory's geometry changes.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import shapely
from pyproj import Transformer
from shapely.geometry.base import BaseGeometry

from sdmatlas import budget, polygons
from sdmatlas.catalog import queries as catalog_queries
from sdmatlas.catalog import reports as stored_reports
from sdmatlas.catalog.register import footprint
from sdmatlas.errors import InvalidInputError
from sdmatlas.publish import queries
from sdmatlas.publish.cover import cover
from sdmatlas.serve.services import Services
from sdmatlas.serve.tiles.reader import OpenRelease
from sdmatlas.serve.tiles.tiling import transformer

REPORT_VERSION = 3
"""Bumped when the report's content changes: stored reports of another version are stale."""


def to_grid(rel: OpenRelease) -> Transformer:
    return transformer("EPSG:4326", rel.grid.crs)


def project(geom: BaseGeometry, t: Transformer) -> BaseGeometry:
    def xy(c: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        x, y = t.transform(c[:, 0], c[:, 1])
        return np.column_stack([x, y])

    return shapely.transform(geom, xy)


def footprint_lonlat(rel: OpenRelease) -> BaseGeometry:
    """The release grid's outline in longitude/latitude (as registered in the catalog)."""
    return footprint(rel.grid, 0, 0, rel.grid.height, rel.grid.width)


def area_report(
    svc: Services, rel: OpenRelease, geom: BaseGeometry, min_mean: float
) -> dict[str, Any]:
    settings = svc.settings
    # the budgets, from the geometry alone, before any data is read
    plan = cover(rel.grid, geom, settings.max_report_boundary_pixels)
    budget.check(
        "values read by the report along its outline (chunks x 64 pixels x species)",
        "max_report_values",
        plan.values_read(len(rel.species_names)),
        settings.max_report_values,
        "simplify the outline (a long, detailed boundary costs the most), split the "
        "area, or ask for a territory of the catalog (GET /report?territory=)",
    )
    res = queries.area(rel.release, geom, plan)
    indicators: dict[str, Any] = {
        name: None
        if summary is None
        else {
            "mean": round(summary.mean, 6),
            "min": round(summary.min, 6),
            "max": round(summary.max, 6),
            "pixels": summary.pixels,
        }
        for name, summary in res.indicators.items()
    }
    info = rel.info
    present = res.max_probability >= rel.threshold - 1e-9 if res.n_pixels else np.zeros(0, bool)
    species = []
    if res.n_pixels:
        order = np.lexsort((res.species_ids, -res.expected_area_km2))
        for i in order:
            mean = float(res.mean_probability[i])
            if mean <= 0 or mean < min_mean:
                continue
            species.append(
                {
                    "id": int(res.species_ids[i]),
                    "name": rel.species_names[i],
                    "mean_probability": round(mean, 6),
                    "expected_area_km2": round(float(res.expected_area_km2[i]), 4),
                    "max_probability": round(float(res.max_probability[i]), 4),
                    "present": bool(present[i]),
                    "protected": bool(info.protected[i]),
                    "invasive": bool(info.invasive[i]),
                    "endemic": bool(info.endemic[i]),
                }
            )
    return {
        "release": rel.key,
        "pixels": res.n_pixels,
        "area_km2": round(res.area_km2, 4),
        "pixels_exact": res.pixels_exact,
        "pixels_from_aggregates": res.n_pixels - res.pixels_exact,
        "blocks_from_aggregates": {str(e): n for e, n in sorted(res.blocks_aggregated.items())},
        "threshold": rel.threshold,
        "species_present": int(present.sum()),
        "protected_present": int((present & info.protected).sum()) if res.n_pixels else 0,
        "invasive_present": int((present & info.invasive).sum()) if res.n_pixels else 0,
        "endemic_present": int((present & info.endemic).sum()) if res.n_pixels else 0,
        "indicators": indicators,
        "classes": class_shares(rel, res.classes, res.n_pixels),
        "species": species,
    }


def class_shares(
    rel: OpenRelease, counts: dict[str, npt.NDArray[np.int64]], n_pixels: int
) -> dict[str, Any]:
    """Per class layer: each class's pixels, km² and share of the area's territory pixels,
    and the pixels of no class (an empty species set), so that the shares add up to 1."""
    pixel_km2 = (rel.grid.res / 1000.0) ** 2
    out: dict[str, Any] = {}
    for name, c in counts.items():
        scheme = rel.scheme(name)
        rows = [
            {"value": e.value, "code": e.code, "name": e.name, "pixels": int(n),
             "area_km2": round(int(n) * pixel_km2, 4),
             "share": round(int(n) / n_pixels, 6) if n_pixels else 0.0}
            for e, n in zip(scheme.classes, c.tolist(), strict=True)
        ]  # fmt: skip
        none = n_pixels - int(c.sum())
        out[name] = {
            "classes": rows,
            "no_class": {"meaning": scheme.empty, "pixels": none,
                         "area_km2": round(none * pixel_km2, 4),
                         "share": round(none / n_pixels, 6) if n_pixels else 0.0},
        }  # fmt: skip
    return out


def polygonal(geom: BaseGeometry) -> BaseGeometry:
    """The polygonal part of an intersection (which may add lines or points)."""
    if geom.geom_type in ("Polygon", "MultiPolygon"):
        return geom
    parts = [g for g in getattr(geom, "geoms", []) if g.geom_type in ("Polygon", "MultiPolygon")]
    return shapely.union_all(parts) if parts else shapely.Polygon()


@dataclass(frozen=True)
class TerritoryReport:
    body: bytes
    """the JSON report with every species (``min_mean_probability`` 0)"""
    stored: bool
    """answered from the catalog (True) or computed by this call (False)"""


def stamp(rel: OpenRelease, geom_lonlat: BaseGeometry) -> str:
    """What a territory report depends on: the report's version, the release's
    publication (its location and time) and the territory's geometry."""
    published = rel.release.manifest.published
    h = hashlib.sha256()
    h.update(f"{rel.uri}\n{published}\n".encode())
    h.update(shapely.to_wkb(geom_lonlat, hex=False, output_dimension=2))
    return f"v{REPORT_VERSION}:{h.hexdigest()[:40]}"


def territory_report(svc: Services, rel: OpenRelease, code: str) -> TerritoryReport:
    """The report of territory ``code`` over ``rel``: from the catalog when stored and
    current, else computed (within the budgets) and stored."""
    with svc.catalog.session() as s:
        geom_ll = catalog_queries.get_territory(s, code).geom
        current = stamp(rel, geom_ll)
        body = stored_reports.get(s, rel.key, code, current)
    if body is not None:
        return TerritoryReport(body, stored=True)
    clipped = polygonal(geom_ll.intersection(footprint_lonlat(rel)))
    if clipped.is_empty:
        raise InvalidInputError(f"territory {code!r} does not overlap release {rel.key}")
    geom = project(polygons.densify(clipped), to_grid(rel))
    t0 = time.perf_counter()
    report = area_report(svc, rel, geom, 0.0)
    report["territory"] = code
    body = json.dumps(report).encode()
    with svc.catalog.session() as s:
        stored_reports.put(s, rel.key, code, current, body, time.perf_counter() - t0)
    return TerritoryReport(body, stored=False)


def filter_species(report: dict[str, Any], min_mean: float) -> dict[str, Any]:
    """``report`` without the species whose mean probability is under ``min_mean``."""
    if min_mean <= 0:
        return report
    kept = [sp for sp in report["species"] if sp["mean_probability"] >= min_mean]
    return {**report, "species": kept}


def precompute(svc: Services, rel: OpenRelease, codes: list[str]) -> dict[str, bool]:
    """Store the reports of ``codes`` over ``rel`` (code -> whether it was already
    stored and current)."""
    return {code: territory_report(svc, rel, code).stored for code in codes}
