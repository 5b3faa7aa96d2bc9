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
from shapely.geometry.base import BaseGeometry

from sdmatlas import polygons
from sdmatlas.catalog import queries as catalog_queries
from sdmatlas.errors import InvalidInputError
from sdmatlas.publish import queries
from sdmatlas.quantize import NODATA, dequantize
from sdmatlas.serve import reports
from sdmatlas.serve.api.deps import services
from sdmatlas.serve.offload import offload
from sdmatlas.serve.services import Services
from sdmatlas.serve.tiles.reader import OpenRelease
from sdmatlas.serve.tiles.versions import SHORT, Timer
from sdmatlas.settings import Settings

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
    the indicator values and the class layers' classes (value, code, name) at the pixel;
    the territories containing the point. A point
    outside the release's grid or territory is not an error: ``inside`` is false and
    the lists are empty."""
    svc = services(request)
    timer = Timer()
    rel = _open(svc, release, period)
    with timer.span("read"):
        x, y = reports.to_grid(rel).transform(lon, lat)
        res = queries.point(rel.release, float(x), float(y))
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
        "classes": {},
        "territories": territories,
    }
    if res.inside:
        with timer.span("rank"):
            body["total"], body["species"] = ranked_species(
                res.species_ids, rel.species_names, res.codes, min_probability, offset, limit
            )
            body["indicators"] = _indicator_values(svc, rel, res.row, res.col)
            body["classes"] = {
                name: svc.reader.class_at(rel, name, res.row, res.col) for name in rel.class_layers
            }
    return _json(body, timer)


def ranked_species(
    ids: npt.NDArray[np.int64],
    names: list[str],
    codes: npt.NDArray[np.uint8],
    min_probability: float,
    offset: int,
    limit: int,
) -> tuple[int, list[dict[str, Any]]]:
    """Species at a pixel by probability (highest first, then id), at least
    ``min_probability``, paged: the total and one page of ``{id, name, probability}``
    (``/point`` and ``/predict/point`` answer the same way)."""
    p = dequantize(codes)
    keep = np.flatnonzero((codes != NODATA) & (p >= min_probability - 1e-9))
    order = keep[np.lexsort((ids[keep], -p[keep]))]
    page = [
        {"id": int(ids[i]), "name": names[i], "probability": round(float(p[i]), 4)}
        for i in order[offset : offset + limit]
    ]
    return len(order), page


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
    footprint = reports.footprint_lonlat(rel)
    if not geom.intersects(footprint):
        swapped = shapely.transform(geom, lambda xy: xy[:, ::-1])
        if swapped.intersects(footprint):
            raise InvalidInputError(
                "the polygon does not overlap the release but would with its axes swapped: "
                "GeoJSON coordinates are longitude, latitude"
            )
        raise InvalidInputError(f"the polygon does not overlap release {rel.key}")
    return reports.project(polygons.densify(geom), reports.to_grid(rel))


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
        report = reports.area_report(svc, rel, geom, min_mean)
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
    """The report of a territory of the catalog, clipped to the release. Computed on
    first use and stored in the catalog; later calls answer from there (``X-Report:
    stored``) until the release is published again or the territory changes."""
    svc = services(request)
    timer = Timer()
    rel = _open(svc, release, period)
    with timer.span("read"):
        got = reports.territory_report(svc, rel, territory)
    source = {"X-Report": "stored" if got.stored else "computed"}
    if format == "json" and min_mean_probability <= 0:
        return Response(
            got.body,
            media_type="application/json",
            headers={"Server-Timing": timer.header(), "Cache-Control": SHORT, **source},
        )
    body = reports.filter_species(json.loads(got.body), min_mean_probability)
    response = _respond(body, format, timer)
    response.headers.update(source)
    return response
