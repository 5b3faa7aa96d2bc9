"""On-demand prediction: jobs over an area (protected by API keys) and live point
predictions (open, like every read route)."""

from __future__ import annotations

import json
import math
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sdmatlas import polygons
from sdmatlas.catalog import queries as catalog_queries
from sdmatlas.catalog.covariates import CovariateSet, find_covariates
from sdmatlas.catalog.keys import KeyInfo
from sdmatlas.catalog.schema import JobStatus
from sdmatlas.errors import InvalidInputError, TerritoryError
from sdmatlas.jobs import store
from sdmatlas.jobs.area import client_geometry, job_area
from sdmatlas.jobs.runner import remove_data
from sdmatlas.predict.pipeline import plan_tasks
from sdmatlas.serve.api.deps import services
from sdmatlas.serve.api.queries import ranked_species
from sdmatlas.serve.auth import require
from sdmatlas.serve.offload import offload
from sdmatlas.serve.services import Services
from sdmatlas.serve.tiles.versions import Timer

router = APIRouter(tags=["on-demand"])

WRITE = "jobs:write"


class AreaIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    bbox: list[float] | None = Field(default=None, description="[west, south, east, north]")
    geometry: dict[str, Any] | None = Field(
        default=None, description="A GeoJSON Polygon or MultiPolygon in lon/lat."
    )
    territory: str | None = Field(default=None, max_length=64, description="A catalog code.")


class JobIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = Field(max_length=265, description="A model name, or name@version.")
    period: str = Field(max_length=32, description="A registered period (ISO 8601).")
    area: AreaIn


JOB_EXAMPLE = {
    "model": "demo-sdm",
    "period": "2020",
    "area": {"bbox": [13.7, 45.55, 13.95, 45.73]},
}


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(body),
        status_code=status,
        media_type="application/json",
        headers={"Cache-Control": "no-store", **(headers or {})},
    )


def _base(svc: Services) -> str:
    return (svc.settings.public_url or "").rstrip("/")


@router.post(
    "/jobs",
    status_code=202,
    summary="Predict a model over an area: the result is an ephemeral release.",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": JobIn.model_json_schema(), "example": JOB_EXAMPLE}
            },
        }
    },
)
async def create_job(
    request: Request, key: Annotated[KeyInfo, Depends(require(WRITE, limited=True))]
) -> Response:
    """Runs the model's chunk tasks restricted to the chunks the area touches (a bbox, a
    GeoJSON polygon in lon/lat, or a territory code of the catalog), then publishes the
    result as a release served by every endpoint under the job's release id until it
    expires. The same request (model digest, covariates, period, pixels) returns the
    existing job (200) instead of a new one (202). Needs an API key with ``jobs:write``."""
    svc = services(request)
    body = await request.body()  # at most SDMATLAS_MAX_BODY_BYTES (serve/guard.py)
    s = svc.settings
    polygons.prescan(body, s.max_polygon_vertices, s.max_polygon_parts)  # before parsing
    view, created = await offload(_create_job, svc, body, key)
    if created:
        return _json(view, 202, {"Location": view["links"]["self"]})
    return _json(view, 200)


def _create_job(svc: Services, body: bytes, key: KeyInfo) -> tuple[dict[str, Any], bool]:
    s = svc.settings
    try:
        req = JobIn.model_validate_json(body)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()
        )
        raise InvalidInputError(
            f"the job request is not valid: {problems} (send JSON: {json.dumps(JOB_EXAMPLE)})"
        ) from None
    cov = find_covariates(svc.catalog, req.model, req.period)
    terr_geom = None
    if req.area.territory is not None:
        with svc.catalog.session() as session:
            terr_geom = catalog_queries.get_territory(session, req.area.territory).geom
    geom = client_geometry(req.area.model_dump(), terr_geom, s)
    area = job_area(geom, cov, s.jobs_max_area_km2)
    territory = area.territory(cov, name="job")
    try:
        chunks = len(plan_tasks(territory))
    except TerritoryError:
        raise InvalidInputError(
            f"no pixel of the area lies in model {cov.model}'s coverage for {cov.period} "
            "(its covariates have no data there: sea, or outside the mapped territory)"
        ) from None
    job, created = store.submit(
        svc.catalog,
        cov,
        area,
        territory.digest(),
        chunks,
        req.model_dump(mode="json", exclude_none=True),
        key.id,
        store.Limits(s.jobs_max_active, s.jobs_max_active_per_key, s.jobs_ttl_hours),
    )
    return {**store.view(job, _base(svc)), "reused": not created}, created


@router.get("/jobs/{job_id}", summary="A job's status, progress, timings, errors and links.")
def get_job(request: Request, job_id: Annotated[str, Path(max_length=32)]) -> Response:
    svc = services(request)
    return _json(store.view(store.get(svc.catalog, job_id), _base(svc)))


@router.delete("/jobs/{job_id}", status_code=202, summary="Cancel a job and remove its data.")
async def delete_job(
    request: Request,
    job_id: Annotated[str, Path(max_length=32)],
    key: Annotated[KeyInfo, Depends(require(WRITE, limited=True))],
) -> Response:
    """Cancels a queued or running job, or removes a finished job's release. Its data is
    removed by the runner that runs it (at its next chunk) or by the next sweep.
    Only the key that created the job, or an admin key, may."""
    svc = services(request)
    job = await offload(_cancel, svc, job_id, key)
    status = 202 if JobStatus(job.status) == JobStatus.cancelled else 200
    return _json(store.view(job, _base(svc)), status)


def _cancel(svc: Services, job_id: str, key: KeyInfo) -> Any:
    job, before = store.request_cancel(svc.catalog, job_id, key.id, "admin" in key.scopes)
    if before in (JobStatus.queued, JobStatus.done):  # no runner works on it: remove now
        remove_data(svc.catalog, svc.settings, job.id)
    return job


@router.get(
    "/predict/point",
    summary="Every species' probability at a point, predicted live from the covariates.",
)
def predict_point(
    request: Request,
    model: Annotated[str, Query(max_length=265, examples=["demo-sdm"])],
    lon: Annotated[float, Query(ge=-180, le=180, examples=[13.8])],
    lat: Annotated[float, Query(ge=-90, le=90, examples=[45.65])],
    period: Annotated[str | None, Query(max_length=32)] = None,
    min_probability: Annotated[float, Query(ge=0, le=1)] = 0.0,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 50,
    offset: Annotated[int, Query(ge=0, le=catalog_queries.MAX_OFFSET)] = 0,
) -> Response:
    """Reads the covariate patch around the pixel, runs the model on it, and answers in
    the shape of ``/point`` (species sorted by probability, paged), with the model's
    version. Answers are cached per process by model digest, covariates and pixel."""
    svc = services(request)
    if not (math.isfinite(lon) and math.isfinite(lat)):
        raise InvalidInputError("lon and lat must be finite numbers")
    timer = Timer()
    cov: CovariateSet = svc.memo(  # one catalog query per layer_cache_seconds
        ("covariates", model, period), lambda: find_covariates(svc.catalog, model, period)
    )
    with timer.span("predict"):
        res = svc.live.predict(cov, lon, lat)
    body: dict[str, Any] = {
        "model": cov.model_name,
        "model_version": cov.model_version,
        "period": cov.period,
        "lon": lon,
        "lat": lat,
        "inside": res.inside,
        "row": res.row if res.inside else None,
        "col": res.col if res.inside else None,
        "total": 0,
        "species": [],
        "cached": res.cached,
    }
    if res.inside:
        body["total"], body["species"] = ranked_species(
            res.species_ids, res.species_names, res.codes, min_probability, offset, limit
        )
    return Response(
        json.dumps(body),
        media_type="application/json",
        headers={"Server-Timing": timer.header(), "Cache-Control": "no-store"},
    )
