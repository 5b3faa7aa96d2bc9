"""Catalog routes: species search, territories, releases. Parsing and shaping only."""

from __future__ import annotations

import hashlib
from dataclasses import asdict
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import FileResponse
from shapely.geometry import mapping

from sdmatlas.catalog import queries
from sdmatlas.catalog.db import Catalog
from sdmatlas.catalog.names import MAX_QUERY
from sdmatlas.classes import NO_CLASS
from sdmatlas.errors import NotFoundError
from sdmatlas.serve.api.deps import services
from sdmatlas.serve.offload import offload
from sdmatlas.serve.services import Services
from sdmatlas.serve.tiles.layers import layer_id
from sdmatlas.serve.tiles.versions import etag
from sdmatlas.serve.urls import public_base

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
    offset: Annotated[int, Query(ge=0, le=queries.MAX_OFFSET)] = 0,
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
        return _release(queries.latest_release(s, period))


@router.get("/releases", summary="Published releases, newest first.")
def releases(
    request: Request,
    period: Annotated[str | None, Query(max_length=32)] = None,
    include_retired: bool = False,
) -> list[dict[str, Any]]:
    with _catalog(request).session() as s:
        return [_release(r) for r in queries.list_releases(s, period, include_retired)]


@router.get("/releases/{key}", summary="One release.")
def release(request: Request, key: Annotated[str, Path(max_length=100)]) -> dict[str, Any]:
    with _catalog(request).session() as s:
        return _release(queries.get_release(s, key))


def _release(info: queries.ReleaseInfo) -> dict[str, Any]:
    """A release as clients see it: no storage location (a server path or a bucket URL
    is nobody else's business; tiles and downloads are reached through the API)."""
    d = asdict(info)
    d.pop("storage_uri", None)
    return d


@router.get("/species/{species_id}", summary="One species with its names and layers.")
def species_detail(
    request: Request, species_id: Annotated[int, Path(ge=0, le=2**31 - 1)]
) -> dict[str, Any]:
    with _catalog(request).session() as s:
        sp = queries.get_species(s, species_id)
        names = sorted((n.kind, n.lang, n.name) for n in sp.names)
        layers = queries.find_layers(s, species_id=species_id, limit=100)
        return {
            "id": sp.id,
            "scientific_name": sp.scientific_name,
            "genus": sp.genus,
            "family": sp.family,
            "gbif_key": sp.gbif_key,
            "names": [{"kind": k, "lang": lang, "name": n} for k, lang, n in names],
            "layers": [_layer(x) for x in layers],
        }


def _layer(info: queries.LayerInfo) -> dict[str, Any]:
    d = asdict(info)
    d.pop("id")
    d.pop("histogram")
    return {"id": layer_id(info.release, info.name), **d}


@router.get("/layers", summary="Layers by species, indicator, kind, territory, period, release.")
def layers(
    request: Request,
    species_id: Annotated[int | None, Query(ge=0, le=2**31 - 1)] = None,
    indicator: Annotated[str | None, Query(max_length=64)] = None,
    kind: Literal["species", "indicator", "classes", "habitat"] | None = None,
    territory: Annotated[str | None, Query(max_length=64)] = None,
    period: Annotated[str | None, Query(max_length=32)] = None,
    release: Annotated[str | None, Query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=queries.MAX_LIMIT)] = 100,
    offset: Annotated[int, Query(ge=0, le=queries.MAX_OFFSET)] = 0,
) -> list[dict[str, Any]]:
    """Each layer with its API ``id`` (for /tiles and /layers/{id}/...), statistics,
    lon/lat bbox (where the species is present) and version."""
    with _catalog(request).session() as s:
        found = queries.find_layers(
            s, species_id, indicator, kind, territory, period, release, limit=limit, offset=offset
        )
    return [_layer(x) for x in found]


@router.get("/layers/{layer}", summary="One layer: metadata, statistics and links.")
def layer(request: Request, layer: Annotated[str, Path(max_length=200)]) -> dict[str, Any]:
    from sdmatlas.serve.tiles.layers import parse_layer_id

    rel, kind, name = parse_layer_id(layer)
    if kind == "group":
        ref = request.app.state.services.layers.resolve(layer)
        return {"id": layer, "release": rel, "kind": "group", "indicator": ref.indicator,
                "title": ref.title, "units": ref.units, "version": ref.version}  # fmt: skip
    with _catalog(request).session() as s:
        found = queries.find_layers(
            s,
            species_id=int(name) if kind == "species" and name.isdigit() else None,
            indicator=name if kind in ("indicator", "classes") else None,
            kind=kind,
            release=rel,
            limit=1,
        )
        if not found or (kind == "species" and not name.isdigit()):
            raise NotFoundError(f"no layer {layer!r} (see GET /layers)")
        out = _layer(found[0])
        out["histogram"] = found[0].histogram
    if kind == "classes":
        rel_ = services(request).open(services(request).layers.resolve(layer))
        scheme = rel_.scheme(name)
        out["classes"] = [c.model_dump(exclude_none=True) for c in scheme.classes]
        out["nodata"] = {"value": NO_CLASS, "meaning": scheme.empty}
    base = public_base(request, services(request).settings)
    out["links"] = {
        "tilejson": f"{base}/layers/{layer}/tilejson.json",
        "style": f"{base}/layers/{layer}/style.json",
        "legend": f"{base}/layers/{layer}/legend.png",
        "cog": f"{base}/layers/{layer}/cog",
    }
    return out


@router.get("/territories", summary="Territories, by level.")
def territories(
    request: Request,
    level: Literal["country", "region", "protected_area", "custom"] | None = None,
    limit: Annotated[int, Query(ge=1, le=queries.MAX_LIMIT)] = 100,
    offset: Annotated[int, Query(ge=0, le=queries.MAX_OFFSET)] = 0,
) -> list[dict[str, Any]]:
    with _catalog(request).session() as s:
        return [asdict(t) for t in queries.list_territories(s, level, limit, offset)]


@router.get("/territories/{code}", summary="A territory as a GeoJSON Feature (lon/lat).")
def territory(
    request: Request,
    code: Annotated[str, Path(max_length=64)],
    simplify: Annotated[
        float, Query(ge=0, le=1, description="Simplification tolerance in degrees.")
    ] = 0.0,
) -> dict[str, Any]:
    with _catalog(request).session() as s:
        t = queries.get_territory(s, code)
        geom = t.geom.simplify(simplify, preserve_topology=True) if simplify else t.geom
        info = asdict(queries.get_territory_info(s, code))
    return {"type": "Feature", "id": code, "properties": info, "geometry": mapping(geom)}


@router.get("/tms", summary="The TileMatrixSets served.")
def tile_matrix_sets() -> list[dict[str, Any]]:
    from sdmatlas.serve.tiles.tiling import TMS_NAMES, get_tms

    return [
        {"id": n, "crs": f"EPSG:{get_tms(n).crs.to_epsg()}", "title": get_tms(n).title}
        for n in TMS_NAMES
    ]


@router.get(
    "/layers/{layer}/cog.aux.xml",
    summary="GDAL's sidecar of a class layer's COG: the category (class) names.",
    response_class=Response,
    responses={200: {"content": {"application/xml": {}}}},
)
def cog_sidecar(request: Request, layer: Annotated[str, Path(max_length=200)]) -> Response:
    """GDAL keeps a band's category names only in a PAM ``.aux.xml`` beside the file; a
    client reading ``/layers/{id}/cog`` through ``/vsicurl/`` (QGIS, gdalinfo) asks for
    this URL and lists each class by name. Only class layers have one (404 otherwise)."""
    from sdmatlas.errors import NotFoundError
    from sdmatlas.publish.export import category_names_xml

    svc = services(request)
    ref = svc.layers.resolve(layer)
    if ref.kind != "classes":
        raise NotFoundError(f"{layer} is not a class layer: its COG has no sidecar")
    body = category_names_xml(svc.open(ref).scheme(ref.var))
    headers = {"ETag": etag(ref.version, "aux"), "Cache-Control": "public, max-age=60"}
    return Response(body, media_type="application/xml", headers=headers)


@router.get(
    "/layers/{layer}/cog",
    summary="Download a layer, whole or clipped to a lon/lat bbox, as a Cloud-Optimized GeoTIFF.",
    response_class=Response,
    responses={200: {"content": {"image/tiff; application=geotiff; profile=cloud-optimized": {}}}},
)
async def cog(
    request: Request,
    layer: Annotated[str, Path(max_length=200)],
    bbox: Annotated[
        str | None,
        Query(
            max_length=200,
            description="west,south,east,north in degrees.",
            examples=["13.5,45.5,14.0,46.0"],
        ),
    ] = None,
) -> Response:
    """Species layers hold uint8 codes (p = code / 254, 255 = nodata; the scale is in the
    file's metadata), indicators float32 with NaN, class layers uint8 classes with a colour
    table and category names (255 = no class). A heavy request: one at a time per
    process (SDMATLAS_HEAVY_REQUESTS), in the executor."""
    svc = services(request)
    async with svc.heavy.slot():
        return await offload(_cog, svc, layer, bbox)


def _cog(svc: Services, layer: str, bbox: str | None) -> Response:
    import tempfile
    from pathlib import Path as FsPath

    from rasterio.warp import transform_bounds

    from sdmatlas.errors import InvalidInputError
    from sdmatlas.publish.export import export_cog

    ref = svc.layers.resolve(layer)
    if ref.kind == "group":
        raise InvalidInputError("group layers are computed on demand and cannot be downloaded")
    rel = svc.open(ref)
    box = None
    if bbox is not None:
        try:
            w, s_, e, n = (float(v) for v in bbox.split(","))
        except ValueError:
            raise InvalidInputError(
                f"bbox {bbox[:60]!r} must be four numbers: west,south,east,north"
            ) from None
        if not (-180 <= w < e <= 180 and -90 <= s_ < n <= 90):
            raise InvalidInputError("bbox must be west < east and south < north, in degrees")
        box = transform_bounds("EPSG:4326", rel.grid.crs, w, s_, e, n)
    name = f"species/{ref.species_id}" if ref.kind == "species" else f"{ref.kind}/{ref.indicator}"
    # Exported once per layer version and bbox, kept on disk, and served as a file: with
    # Range (206), Accept-Ranges, ETag and If-Range, so GDAL and QGIS read it as a remote
    # COG (/vsicurl/) without downloading it whole.
    key = hashlib.sha256(f"{ref.version}\n{name}\n{box}".encode()).hexdigest()
    ns = ref.release
    path = svc.exports.file(ns, key)
    if path is None:
        with svc.exports.lock(key):
            path = svc.exports.file(ns, key)  # another request may have made it meanwhile
            if path is None:
                with tempfile.TemporaryDirectory() as tmp:
                    out = export_cog(rel.release, name, FsPath(tmp) / "layer.tif", bbox=box)
                    svc.exports.put(ns, key, out.read_bytes())
                path = svc.exports.path(ns, key)
    fname = layer.replace(":", "_") + ".tif"
    return FileResponse(
        path,
        media_type="image/tiff; application=geotiff; profile=cloud-optimized",
        headers={
            "Content-Disposition": f'attachment; filename="{fname}"',
            "ETag": etag(ref.version, "cog", bbox),
            "Cache-Control": "public, max-age=60",
        },
    )
