"""Point queries ("which species here?") and area reports ("what grows in this park?")."""

from __future__ import annotations

import csv
import io
import json
import math
from typing import Annotated, Any, Literal

import numpy as np
import numpy.typing as npt
import shapely
from fastapi import APIRouter, Query, Request, Response
from pyproj import Transformer
from shapely.geometry.base import BaseGeometry

from sdmatlas import budget, polygons
from sdmatlas.catalog import queries as catalog_queries
from sdmatlas.catalog.register import footprint
from sdmatlas.errors import InvalidInputError
from sdmatlas.publish import queries
from sdmatlas.quantize import NODATA
from sdmatlas.serve.api.deps import services
from sdmatlas.serve.offload import offload
from sdmatlas.serve.services import Services
from sdmatlas.serve.tiles.reader import OpenRelease
from sdmatlas.serve.tiles.tiling import transformer
from sdmatlas.serve.tiles.versions import SHORT, Timer
from sdmatlas.settings import Settings
from sdmatlas.zarr_access import array

router = APIRouter(tags=["queries"])

ReleaseParam = Annotated[
    str | None,
    Query(max_length=100, description="Release key; default: the latest published release."),
]
PeriodParam = Annotated[
    str | None, Query(max_length=32, description="With no release: the latest of this period.")
]


def _open(svc: Services, release: str | None, period: str | None) -> OpenRelease:
    with svc.catalog.session() as s:
        if release is not None:
            info = catalog_queries.get_release(s, release)
            if info.status != "published":
                raise InvalidInputError(f"release {release!r} is {info.status}, not published")
        else:
            info = catalog_queries.latest_release(s, period)
    return svc.reader.release(info.key, info.storage_uri)


def _to_grid(rel: OpenRelease) -> Transformer:
    return transformer("EPSG:4326", rel.grid.crs)


def _indicator_values(
    svc: Services, rel: OpenRelease, row: int, col: int
) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for name in rel.indicators:
        v = float(svc.reader.value_at(rel, 0, name, row, col))
        out[name] = None if math.isnan(v) else round(v, 6)
    return out


@router.get("/point", summary="Every species' probability at a point, and the indicators there.")
def point(
    request: Request,
    lon: Annotated[float, Query(ge=-180, le=180, examples=[13.8])],
    lat: Annotated[float, Query(ge=-90, le=90, examples=[45.65])],
    release: ReleaseParam = None,
    period: PeriodParam = None,
    min_probability: Annotated[float, Query(ge=0, le=1)] = 0.0,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 50,
    offset: Annotated[int, Query(ge=0, le=catalog_queries.MAX_OFFSET)] = 0,
) -> Response:
    """Species sorted by probability (highest first), paged, with a minimum probability;
    the indicator values at the pixel; the territories containing the point. A point
    outside the release's grid or territory is not an error: ``inside`` is false and
    the lists are empty."""
    svc = services(request)
    timer = Timer()
    rel = _open(svc, release, period)
    with timer.span("read"):
        x, y = _to_grid(rel).transform(lon, lat)
        res = queries.point(rel.root, float(x), float(y))
    with svc.catalog.session() as s:
        territories = [t.code for t in catalog_queries.territories_at(s, lon, lat)]
    body: dict[str, Any] = {
        "release": rel.key,
        "lon": lon,
        "lat": lat,
        "inside": res.inside,
        "row": res.row if res.inside else None,
        "col": res.col if res.inside else None,
        "total": 0,
        "species": [],
        "indicators": {},
        "territories": territories,
    }
    if res.inside:
        with timer.span("rank"):
            p = res.probabilities
            keep = np.flatnonzero((res.codes != NODATA) & (p >= min_probability - 1e-9))
            order = keep[np.lexsort((res.species_ids[keep], -p[keep]))]
            page = order[offset : offset + limit]
            body["total"] = len(order)
            body["species"] = [
                {
                    "id": int(res.species_ids[i]),
                    "name": rel.species_names[i],
                    "probability": round(float(p[i]), 4),
                }
                for i in page
            ]
            body["indicators"] = _indicator_values(svc, rel, res.row, res.col)
    return _json(body, timer)


def _json(body: Any, timer: Timer) -> Response:
    import json

    return Response(
        json.dumps(body),
        media_type="application/json",
        headers={"Server-Timing": timer.header(), "Cache-Control": SHORT},
    )


def parse_area(doc: Any, rel: OpenRelease, settings: Settings) -> BaseGeometry:
    """A GeoJSON Polygon/MultiPolygon (or a Feature of one) in lon/lat, validated within
    the budgets, its edges densified as RFC 7946 lines, in the release's CRS."""
    geom = polygons.polygon_from_geojson(
        doc, settings.max_polygon_vertices, settings.max_polygon_parts
    )
    footprint = _footprint_lonlat(rel)
    if not geom.intersects(footprint):
        swapped = shapely.transform(geom, lambda xy: xy[:, ::-1])
        if swapped.intersects(footprint):
            raise InvalidInputError(
                "the polygon does not overlap the release but would with its axes swapped: "
                "GeoJSON coordinates are longitude, latitude"
            )
        raise InvalidInputError(f"the polygon does not overlap release {rel.key}")
    return _project(polygons.densify(geom), _to_grid(rel))


def _project(geom: BaseGeometry, t: Transformer) -> BaseGeometry:
    def xy(c: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        x, y = t.transform(c[:, 0], c[:, 1])
        return np.column_stack([x, y])

    return shapely.transform(geom, xy)


def _footprint_lonlat(rel: OpenRelease) -> BaseGeometry:
    """The release grid's outline in longitude/latitude (as registered in the catalog)."""
    return footprint(rel.grid, 0, 0, rel.grid.height, rel.grid.width)


def _report(svc: Services, rel: OpenRelease, geom: BaseGeometry, min_mean: float) -> dict[str, Any]:
    # rasterised once, for both uses
    mask, r0, c0 = queries.area_mask(rel.grid, geom, svc.settings.max_report_pixels)
    # the budget, before any data is read: boundary blocks x block pixels x species
    blocks = queries.boundary_blocks(mask, r0, c0, rel.grid, rel.block)
    budget.check(
        "values read by the report (boundary blocks x pixels x species)",
        "max_report_values",
        blocks * rel.block**2 * len(rel.species_names),
        svc.settings.max_report_values,
        "simplify the outline (a long, detailed boundary costs the most), split the "
        "area, or ask for a territory of the catalog (GET /report?territory=)",
    )
    res = queries.area(rel.root, geom, (mask, r0, c0))
    window = (slice(r0, r0 + mask.shape[0]), slice(c0, c0 + mask.shape[1]))
    terr = np.asarray(array(rel.root, "territory")[window]) == 1
    sel = mask & terr
    indicators: dict[str, Any] = {}
    for name in rel.indicators:
        vals = np.asarray(rel.arr(0, name)[window])[sel]
        vals = vals[np.isfinite(vals)]
        indicators[name] = (
            {
                "mean": round(float(vals.mean()), 6),
                "min": round(float(vals.min()), 6),
                "max": round(float(vals.max()), 6),
            }
            if vals.size
            else None
        )
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
        "threshold": rel.threshold,
        "species_present": int(present.sum()),
        "protected_present": int((present & info.protected).sum()) if res.n_pixels else 0,
        "invasive_present": int((present & info.invasive).sum()) if res.n_pixels else 0,
        "endemic_present": int((present & info.endemic).sum()) if res.n_pixels else 0,
        "indicators": indicators,
        "species": species,
    }


def _polygons(geom: BaseGeometry) -> BaseGeometry:
    """The polygonal part of an intersection (which may add lines or points)."""
    if geom.geom_type in ("Polygon", "MultiPolygon"):
        return geom
    parts = [g for g in getattr(geom, "geoms", []) if g.geom_type in ("Polygon", "MultiPolygon")]
    return shapely.union_all(parts) if parts else shapely.Polygon()


CSV_FIELDS = (
    "id", "name", "mean_probability", "expected_area_km2", "max_probability", "present",
    "protected", "invasive", "endemic",
)  # fmt: skip


def _respond(report: dict[str, Any], fmt: str, timer: Timer) -> Response:
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
        w.writeheader()
        w.writerows(report["species"])
        return Response(
            buf.getvalue(),
            media_type="text/csv",
            headers={
                "Content-Disposition": f'attachment; filename="report-{report["release"]}.csv"',
                "Server-Timing": timer.header(),
            },
        )
    return _json(report, timer)


ReportFormat = Annotated[Literal["json", "csv"], Query(description="json or csv (species rows).")]
MinMean = Annotated[
    float, Query(ge=0, le=1, description="Leave out species with a lower mean probability.")
]

POLYGON_EXAMPLE = {
    "type": "Polygon",
    "coordinates": [[[13.6, 45.6], [13.9, 45.6], [13.9, 45.8], [13.6, 45.8], [13.6, 45.6]]],
}


@router.post(
    "/report",
    summary="Area report for a GeoJSON polygon (lon/lat).",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/geo+json": {
                    "schema": {"type": "object"},
                    "example": POLYGON_EXAMPLE,
                },
                "application/json": {"schema": {"type": "object"}, "example": POLYGON_EXAMPLE},
            },
        }
    },
)
async def report_polygon(
    request: Request,
    release: ReleaseParam = None,
    period: PeriodParam = None,
    format: ReportFormat = "json",
    min_mean_probability: MinMean = 0.0,
) -> Response:
    """Species present in the polygon with their mean probability and expected occupied
    area (pixels whose centre is inside), counts of protected, invasive and endemic
    species present (p >= the release threshold somewhere in the area), and each
    indicator's mean, min and max there. The body is a GeoJSON Polygon or MultiPolygon
    (or a Feature of one) in longitude/latitude, within the body, vertex and part
    budgets (413 beyond, with the budget named)."""
    svc = services(request)
    body = await request.body()  # at most SDMATLAS_MAX_BODY_BYTES (serve/guard.py)
    s = svc.settings
    polygons.prescan(body, s.max_polygon_vertices, s.max_polygon_parts)  # before parsing
    media = request.headers.get("content-type", "")
    return await offload(_report_polygon, svc, body, media, release, period, format,
                         min_mean_probability)  # fmt: skip


def _report_polygon(
    svc: Services, body: bytes, media: str, release: str | None, period: str | None,
    format: str, min_mean: float,
) -> Response:  # fmt: skip
    timer = Timer()
    doc = _json_body(body, media)
    rel = _open(svc, release, period)
    geom = parse_area(doc, rel, svc.settings)
    with timer.span("read"):
        report = _report(svc, rel, geom, min_mean)
    return _respond(report, format, timer)


def _json_body(body: bytes, media: str) -> Any:
    """The parsed body. JSON is read whatever the Content-Type says (curl -d sends
    form-urlencoded), and the error says what was expected."""
    try:
        return json.loads(body)
    except RecursionError:
        raise InvalidInputError("the body is nested too deeply to be GeoJSON") from None
    except ValueError:
        sent = f" (sent as {media.split(';')[0][:60]})" if media else ""
        raise InvalidInputError(
            f"the body is not JSON{sent}: send a GeoJSON Polygon or MultiPolygon in "
            "longitude/latitude, with Content-Type: application/geo+json"
        ) from None


@router.get("/report", summary="Area report for a territory of the catalog.")
def report_territory(
    request: Request,
    territory: Annotated[str, Query(max_length=64, examples=["demo-pa-1"])],
    release: ReleaseParam = None,
    period: PeriodParam = None,
    format: ReportFormat = "json",
    min_mean_probability: MinMean = 0.0,
) -> Response:
    svc = services(request)
    timer = Timer()
    rel = _open(svc, release, period)
    with svc.catalog.session() as s:
        terr = catalog_queries.get_territory(s, territory)
        geom_ll = terr.geom
    clipped = _polygons(geom_ll.intersection(_footprint_lonlat(rel)))
    if clipped.is_empty:
        raise InvalidInputError(f"territory {territory!r} does not overlap release {rel.key}")
    geom = _project(polygons.densify(clipped), _to_grid(rel))
    with timer.span("read"):
        body = _report(svc, rel, geom, min_mean_probability)
    body["territory"] = territory
    return _respond(body, format, timer)
