"""Map tiles, TileJSON, MapLibre styles and legends of a layer."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Annotated, Any

import numpy as np
import numpy.typing as npt
from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import JSONResponse

from sdmatlas.errors import InvalidInputError
from sdmatlas.quantize import NODATA, SCALE
from sdmatlas.serve import metrics, render
from sdmatlas.serve.cache import Entry
from sdmatlas.serve.http import SHORT, Timer, cache_control, etag, respond, tag_matches
from sdmatlas.serve.layers import GroupSpec, LayerRef, parse_group
from sdmatlas.serve.offload import offload
from sdmatlas.serve.services import Services, services
from sdmatlas.serve.tiling import TMS_NAMES, check_tile, get_tms, tms_crs, transformer
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
PARAM_LIMITS = {"colormap": 600, "rescale": 100, "v": 64, "genus": 100, "family": 100,
                "status": 16, "ids": 20_000}  # fmt: skip

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


def _group(ref: LayerRef, genus: Any, family: Any, status: Any, ids: Any) -> GroupSpec | None:
    if ref.kind == "group":
        return parse_group(genus, family, status, ids)
    if any(v is not None for v in (genus, family, status, ids)):
        raise InvalidInputError(
            "genus, family, status and ids apply to group layers (<release>:group:<indicator>)"
        )
    return None


def render_tile(
    svc: Services,
    ref: LayerRef,
    rows: npt.NDArray[np.intp] | None,
    tms_name: str,
    z: int,
    x: int,
    y: int,
    fmt: str,
    style: render.Style,
    timer: Timer,
) -> tuple[bytes, bool]:
    """The encoded tile and whether it is empty. One renderer for every tile path."""
    tms = get_tms(tms_name)
    check_tile(tms, z, x, y)
    rel = svc.open(ref)
    with timer.span("index"):
        idx = svc.indexes.get(tms, z, x, y, rel.grid, rel.n_levels)
    timer.level = idx.level
    if idx.empty:
        return render.empty_tile(fmt, ref.dtype), True
    with timer.span("read"):
        if ref.kind == "species":
            assert ref.species_id is not None
            data: np.ndarray = svc.reader.gather(
                rel, idx, "probability", rel.species_row(ref.species_id)
            )
            empty = bool((data == NODATA).all())
        elif ref.kind == "indicator":
            data = svc.reader.gather(rel, idx, ref.var)
            empty = bool(np.isnan(data).all())
        else:
            assert rows is not None and ref.indicator is not None
            data = svc.reader.gather_group(rel, idx, rows, ref.indicator)
            empty = bool(np.isnan(data).all())
    if empty:
        return render.empty_tile(fmt, ref.dtype), True
    with timer.span("render"):
        if fmt == "npy":
            return render.encode_array(data), False
        if ref.kind == "species":
            indices, palette = data, render.code_palette(style)
        else:
            indices, palette = render.quantise(data, style), render.index_palette(style)
    with timer.span("encode"):
        return render.encode_indexed(indices, palette, fmt), False


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
    params = {
        "colormap": colormap, "rescale": rescale, "v": v, "genus": genus, "family": family,
        "status": status, "ids": ids,
    }  # fmt: skip
    status_code, headers, body, media = await answer_tile(
        services(request), request.headers.get("if-none-match"), layer, tms, z, x, y, format,
        params,
    )  # fmt: skip
    return Response(body, status_code=status_code, headers=headers, media_type=media)


TileParams = dict[str, str | None]
#: status, headers, body and media type of a tile response
TileAnswer = tuple[int, dict[str, str], bytes, str | None]


def tile_response(
    svc: Services, if_none_match: str | None, layer: str, tms: str, z: int, x: int, y: int,
    format: str, params: TileParams,
) -> TileAnswer:  # fmt: skip
    """Status, headers, body and media type of a tile request (may block: run it in the
    executor, or where blocking is fine, as in seeding)."""
    answer = _tile(svc, if_none_match, layer, tms, z, x, y, format, params, hot=False)
    assert answer is not None
    return answer


def hot_tile(
    svc: Services,
    if_none_match: str | None,
    layer: str,
    tms: str,
    z: int,
    x: int,
    y: int,
    format: str,
    params: TileParams,
) -> TileAnswer | None:
    """The tile if it can be answered without blocking (on the event loop), else None."""
    return _tile(svc, if_none_match, layer, tms, z, x, y, format, params, hot=True)


def _tile(
    svc: Services,
    if_none_match: str | None,
    layer: str,
    tms: str,
    z: int,
    x: int,
    y: int,
    format: str,
    params: TileParams,
    hot: bool,
) -> TileAnswer | None:
    """Status, headers, body and media type of a tile request: shared by the FastAPI
    route and the fast path (serve/fastpath.py), so both answer the same bytes.

    With ``hot``, only what cannot block is done (safe on the event loop): the layer
    from this process's resolver cache, the tile from the in-process LRU, or rendered
    when no cache backend does I/O; anything needing the catalog, a disk or Redis
    lookup, or a lock answers None, and the caller runs it again in the executor."""
    timer = Timer()
    with timer.span("layer"):
        ref = svc.layers.cached(layer) if hot else svc.layers.resolve(layer)
    if ref is None:
        return None
    get_tms(tms)
    render.check_format(format)
    group = _group(ref, params.get("genus"), params.get("family"), params.get("status"),
                   params.get("ids"))  # fmt: skip
    rows = None
    if group is not None:
        rows = svc.cached_group_rows(ref, group) if hot else svc.group_rows(ref, group)
        if rows is None:
            return None
    style = render.parse_style(params.get("colormap"), params.get("rescale"), ref.default_range,
                               ref.fade)  # fmt: skip
    tag = etag(ref.version, tms, z, x, y, format, style.key(), group.key() if group else "")
    cache = cache_control(ref.version, params.get("v"))
    if if_none_match and tag_matches(if_none_match, tag):
        check_tile(get_tms(tms), z, x, y)
        return 304, {"ETag": tag, "Cache-Control": cache}, b"", None
    key = tag.strip('"')
    entry, source = None, "off"
    if svc.tiles.enabled:
        with timer.span("cache"):
            hit = svc.tiles.get(ref.release, key, memory_only=hot)
        if hit is None and hot and not svc.tiles.in_process:
            return None  # a disk or Redis lookup, and the render lock: in the executor
        if hit is None:
            with svc.tiles.flight(ref.release, key):  # concurrent requests render it once
                hit = svc.tiles.get(ref.release, key)
                if hit is None:
                    entry = _render_entry(svc, ref, rows, tms, z, x, y, format, style, timer)
                    # tiles first asked for without ?v= expire from the disk cache
                    entry = replace(entry, transient=params.get("v") != ref.version)
                    svc.tiles.put(ref.release, key, entry)
                    source = "miss"
        if hit is not None:
            entry, source = hit[0], f"hit-{hit[1]}"
    if entry is None:
        entry = _render_entry(svc, ref, rows, tms, z, x, y, format, style, timer)
    metrics.TILE_BYTES.observe(len(entry.body))
    headers = {"ETag": tag, "Cache-Control": cache, "Server-Timing": timer.header(),
               "X-Cache": source}  # fmt: skip
    if entry.empty:
        headers["X-Tile-Empty"] = "true"
    if entry.level is not None:
        headers["X-Pyramid-Level"] = str(entry.level)
    if format == "npy" and ref.kind == "species":
        headers |= {"X-Scale": repr(SCALE), "X-Nodata": str(NODATA)}
    return 200, headers, entry.body, render.FORMATS[format]


async def answer_tile(
    svc: Services, if_none_match: str | None, layer: str, tms: str, z: int, x: int, y: int,
    format: str, params: TileParams,
) -> TileAnswer:  # fmt: skip
    """A tile for an async route: on the event loop when nothing can block (a hit in
    the in-process LRU, or a render with only in-process caches), else in the executor."""
    args = (svc, if_none_match, layer, tms, z, x, y, format, params)
    answer = hot_tile(*args)
    return answer if answer is not None else await offload(tile_response, *args)


def _render_entry(
    svc: Services, ref: LayerRef, rows: npt.NDArray[np.intp] | None, tms: str, z: int, x: int,
    y: int, fmt: str, style: render.Style, timer: Timer,
) -> Entry:  # fmt: skip
    """Render a tile (the cache's miss path), with its stage times in the metrics."""
    n = len(timer.spans)
    body, empty = render_tile(svc, ref, rows, tms, z, x, y, fmt, style, timer)
    metrics.RENDERS.inc()
    for name, ms in timer.spans[n:]:
        metrics.STAGE.labels(name).observe(ms / 1000)
    return Entry(body, empty, timer.level)


def zoom_range(svc: Services, ref: LayerRef, tms_name: str) -> tuple[int, int]:
    """maxzoom: the first zoom whose pixels are as fine as the release's; minzoom: that,
    less the pyramid's levels and three more (coarser tiles come from the last level)."""
    tms = get_tms(tms_name)
    rel = svc.open(ref)
    g = rel.grid
    cx, cy = g.x0 + g.width * g.res / 2, g.y0 - g.height * g.res / 2
    t = transformer(g.crs, tms_crs(tms))
    (ax, bx), (ay, by) = t.transform([cx, cx + g.res], [cy, cy])
    res = math.hypot(bx - ax, by - ay)
    maxz = tms.minzoom
    for z in range(tms.minzoom, tms.maxzoom + 1):
        maxz = z
        if tms.matrix(z).cellSize <= res * 1.0001:
            break
    return max(tms.minzoom, maxz - rel.n_levels - 3), maxz


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
    group = _group(ref, genus, family, status, ids)
    render.parse_style(colormap, rescale, ref.default_range, ref.fade)  # validate now, not per tile
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
    _group(ref, genus, family, status, ids)
    render.parse_style(colormap, rescale, ref.default_range, ref.fade)
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
    style = render.parse_style(colormap, rescale, ref.default_range, ref.fade)
    timer = Timer()
    tag = etag(ref.version, "legend", style.key(), width, height)
    with timer.span("render"):
        body = render.legend_png(style, ref.units or "probability", width, height)
    return respond(request, body, "image/png", tag, SHORT, timer)
