"""Map tiles, TileJSON, MapLibre styles and legends of a layer."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import JSONResponse

from sdmatlas.classes import NO_CLASS
from sdmatlas.serve.api.deps import services
from sdmatlas.serve.api.http import answer_tile, respond, tile_response
from sdmatlas.serve.tiles import render
from sdmatlas.serve.tiles.core import (
    PARAM_LIMITS,
    TileRequest,
    group_of,
    layer_style,
    zoom_range,
)
from sdmatlas.serve.tiles.tiling import TMS_NAMES, get_tms
from sdmatlas.serve.tiles.versions import SHORT, Timer, etag
from sdmatlas.serve.urls import public_base

router = APIRouter(tags=["tiles"])

LayerId = Annotated[
    str,
    Path(
        max_length=200,
        description="<release>:species:<id>, <release>:indicator:<name> or "
        "<release>:group:<indicator> (see GET /layers).",
        examples=["demo-1.0.0:species:17", "demo-1.0.0:indicator:richness"],
    ),
]
#: The longest value accepted for each tile query parameter (the fast path uses them too).

Colormap = Annotated[
    str | None,
    Query(
        max_length=PARAM_LIMITS["colormap"],
        description=f"One of {', '.join(render.STYLE_NAMES)}, or 2 to 32 comma-separated hex "
        "colours. Default viridis.",
        examples=["viridis", "ffffcc,41ab5d,004529"],
    ),
]
Rescale = Annotated[
    str | None,
    Query(
        max_length=PARAM_LIMITS["rescale"],
        description="min,max in the layer's units mapped to the colormap's ends "
        "(default: 0,1 for species; the layer's min,max for indicators).",
        examples=["0,0.8"],
    ),
]
Version = Annotated[
    str | None,
    Query(
        max_length=PARAM_LIMITS["v"],
        description="The layer version (from TileJSON): with it the response is cached "
        "as immutable.",
    ),
]
Genus = Annotated[
    str | None, Query(max_length=PARAM_LIMITS["genus"], description="Group: a genus.")
]
Family = Annotated[
    str | None, Query(max_length=PARAM_LIMITS["family"], description="Group: a family.")
]
Status = Annotated[
    str | None,
    Query(max_length=PARAM_LIMITS["status"], description="Group: protected, invasive or endemic."),
]
Ids = Annotated[
    str | None,
    Query(max_length=PARAM_LIMITS["ids"], description="Group: comma-separated species ids."),
]

TILE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {m: {} for m in render.FORMATS.values()},
        "description": "The tile. Where the layer has no data the tile is fully transparent "
        "(all nodata for npy), still 200, with the header X-Tile-Empty: true.",
    },
    304: {"description": "Not modified (If-None-Match matched the ETag)."},
}


@router.get(
    "/tiles/{layer}/{tms}/{z}/{x}/{y}.{format}",
    summary="A map tile of a layer.",
    response_class=Response,
    responses=TILE_RESPONSES,
)
async def tile(
    request: Request,
    layer: LayerId,
    tms: Annotated[
        str, Path(description=f"One of {', '.join(TMS_NAMES)}.", examples=["WebMercatorQuad"])
    ],
    z: Annotated[int, Path(ge=0, le=30)],
    x: Annotated[int, Path(ge=0)],
    y: Annotated[int, Path(ge=0)],
    format: Annotated[str, Path(description="png, webp or npy (raw values).", examples=["png"])],
    colormap: Colormap = None,
    rescale: Rescale = None,
    v: Version = None,
    genus: Genus = None,
    family: Family = None,
    status: Status = None,
    ids: Ids = None,
) -> Response:
    """Tiles of species, indicator and group layers. ``npy`` tiles hold the raw values:
    uint8 codes for species (p = code / 254, 255 = nodata), float32 with NaN otherwise.
    Tiles where the layer has no data are transparent, with ``X-Tile-Empty: true``."""
    req = TileRequest(layer, tms, z, x, y, format, colormap, rescale, v, genus, family, status,
                      ids)  # fmt: skip
    return tile_response(await answer_tile(services(request), req,
                                           request.headers.get("if-none-match")))  # fmt: skip


def _query_string(**params: str | None) -> str:
    from urllib.parse import urlencode

    return urlencode({k: v for k, v in params.items() if v is not None})


@router.get("/layers/{layer}/tilejson.json", summary="TileJSON 3.0 of a layer in a TileMatrixSet.")
def tilejson(
    request: Request,
    layer: LayerId,
    tms: Annotated[str, Query(description=f"One of {', '.join(TMS_NAMES)}.")] = "WebMercatorQuad",
    format: Annotated[str, Query(description="png, webp or npy.")] = "png",
    colormap: Colormap = None,
    rescale: Rescale = None,
    genus: Genus = None,
    family: Family = None,
    status: Status = None,
    ids: Ids = None,
) -> JSONResponse:
    svc = services(request)
    ref = svc.layers.resolve(layer)
    get_tms(tms)
    render.check_format(format)
    group = group_of(ref, genus, family, status, ids)
    layer_style(ref, colormap, rescale)  # validate now, not per tile
    if group is not None:
        svc.group_rows(ref, group)
    minz, maxz = zoom_range(svc, ref, tms)
    qs = _query_string(
        colormap=colormap, rescale=rescale, v=ref.version, genus=genus, family=family,
        status=status, ids=ids,
    )  # fmt: skip
    base = public_base(request, services(request).settings)
    bounds = list(ref.bbox) if ref.bbox else [-180.0, -85.0, 180.0, 85.0]
    doc = {
        "tilejson": "3.0.0",
        "name": ref.id,
        "description": ref.title,
        "version": ref.version,
        "scheme": "xyz",
        "tiles": [f"{base}/tiles/{ref.id}/{tms}/{{z}}/{{x}}/{{y}}.{format}?{qs}"],
        "minzoom": minz,
        "maxzoom": maxz,
        "bounds": bounds,
        "center": [(bounds[0] + bounds[2]) / 2, (bounds[1] + bounds[3]) / 2, minz + 2],
        "attribution": "sdmatlas: AI-predicted species distributions",
        "tileMatrixSet": tms,
    }
    if ref.kind == "classes":  # what each pixel value means (an extension of TileJSON)
        scheme = svc.open(ref).scheme(ref.var)
        doc["classes"] = [c.model_dump(exclude_none=True) for c in scheme.classes]
        doc["nodata"] = {"value": NO_CLASS, "meaning": scheme.empty}
    return JSONResponse(doc, headers={"Cache-Control": SHORT})


@router.get("/layers/{layer}/style.json", summary="A MapLibre GL style showing the layer.")
def style_json(
    request: Request,
    layer: LayerId,
    colormap: Colormap = None,
    rescale: Rescale = None,
    opacity: Annotated[float, Query(ge=0, le=1)] = 0.8,
    genus: Genus = None,
    family: Family = None,
    status: Status = None,
    ids: Ids = None,
) -> JSONResponse:
    svc = services(request)
    ref = svc.layers.resolve(layer)
    group_of(ref, genus, family, status, ids)
    layer_style(ref, colormap, rescale)
    qs = _query_string(
        colormap=colormap, rescale=rescale, genus=genus, family=family, status=status, ids=ids
    )
    base = public_base(request, services(request).settings)
    doc = {
        "version": 8,
        "name": ref.title,
        "sources": {
            "sdmatlas": {
                "type": "raster",
                "url": f"{base}/layers/{ref.id}/tilejson.json?{qs}",
                "tileSize": 256,
            }
        },
        "layers": [
            {
                "id": ref.id,
                "type": "raster",
                "source": "sdmatlas",
                "paint": {"raster-opacity": opacity, "raster-resampling": "nearest"},
            }
        ],
    }
    return JSONResponse(doc, headers={"Cache-Control": SHORT})


@router.get(
    "/layers/{layer}/legend.png",
    summary="A legend (colour bar) of the layer under a colormap and rescale.",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}},
)
def legend(
    request: Request,
    layer: LayerId,
    colormap: Colormap = None,
    rescale: Rescale = None,
    width: Annotated[int, Query(ge=64, le=1024)] = 256,
    height: Annotated[int, Query(ge=24, le=256)] = 48,
) -> Response:
    svc = services(request)
    ref = svc.layers.resolve(layer)
    style = layer_style(ref, colormap, rescale)
    timer = Timer()
    tag = etag(ref.version, "legend", style.key(), width, height)
    with timer.span("render"):
        if ref.kind == "classes":  # swatches and names, one row a class
            body = render.class_legend_png(svc.open(ref).scheme(ref.var), ref.title, width)
        else:
            body = render.legend_png(style, ref.units or "probability", width, height)
    return respond(request, body, "image/png", tag, SHORT, timer)
