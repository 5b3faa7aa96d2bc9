"""Catalog routes: species search, territories, releases. Parsing and shaping only."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request

from sdmatlas.catalog import queries
from sdmatlas.catalog.db import Catalog
from sdmatlas.catalog.names import MAX_QUERY

router = APIRouter(tags=["catalog"])


def _catalog(request: Request) -> Catalog:
    catalog: Catalog = request.app.state.catalog
    return catalog


@router.get("/species", summary="Search species by name, genus, family or status.")
def species(
    request: Request,
    q: Annotated[str | None, Query(max_length=MAX_QUERY, examples=["quercus"])] = None,
    mode: Literal["prefix", "fuzzy"] = "prefix",
    genus: Annotated[str | None, Query(max_length=100)] = None,
    family: Annotated[str | None, Query(max_length=100)] = None,
    status: Literal["protected", "invasive", "endemic"] | None = None,
    territory: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=queries.MAX_LIMIT)] = 20,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[dict[str, Any]]:
    with _catalog(request).session() as s:
        hits = queries.search_species(
            s, q, mode, genus, family, status, territory, limit=limit, offset=offset
        )
    return [asdict(h) for h in hits]


@router.get("/territories/at", summary="Territories containing a point.")
def territories_at(
    request: Request,
    lon: Annotated[float, Query(ge=-180, le=180)],
    lat: Annotated[float, Query(ge=-90, le=90)],
) -> list[dict[str, Any]]:
    with _catalog(request).session() as s:
        return [asdict(t) for t in queries.territories_at(s, lon, lat)]


@router.get("/releases/latest", summary="The latest published release.")
def latest_release(
    request: Request, period: Annotated[str | None, Query(max_length=32)] = None
) -> dict[str, Any]:
    with _catalog(request).session() as s:
        return asdict(queries.latest_release(s, period))
