"""The tiles core: a :class:`TileRequest` becomes a :class:`Tile`, with no web framework.

Every tile-producing path goes through :func:`make_tile`: the XYZ route and its fast
path, WMTS and TMS tiles, WMS GetMaps that are exactly one tile, and seeding. So a
tile has the same bytes, ETag and cache entry however it was asked for. The steps:
resolve the layer (the catalog on a resolver miss), validate the matrix set, format,
style and group, compute the strong ETag from the layer version, answer 304 when the
client has it, then the tile cache (one render per missing tile across processes),
else render: the index map from the tile to the release grid, a gather of the codes
or values through the chunk cache, the palette, the encoding.

With ``hot=True`` only what cannot block is done (safe on the event loop): the layer
from this process's resolver cache, the tile from the in-process LRU, or a render when
no cache backend does I/O. Anything else answers None, and the caller runs the same
request again in the executor.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt

from sdmatlas.classes import NO_CLASS
from sdmatlas.errors import InvalidInputError
from sdmatlas.quantize import NODATA, SCALE
from sdmatlas.serve.cache import Entry
from sdmatlas.serve.observe import metrics
from sdmatlas.serve.services import Services
from sdmatlas.serve.tiles import render
from sdmatlas.serve.tiles.layers import GroupSpec, LayerRef, parse_group
from sdmatlas.serve.tiles.tiling import check_tile, get_tms, tms_crs, transformer
from sdmatlas.serve.tiles.versions import Timer, cache_control, etag, tag_matches

#: The query parameters of a tile, and the longest value accepted for each.
PARAM_LIMITS = {"colormap": 600, "rescale": 100, "v": 64, "genus": 100, "family": 100,
                "status": 16, "ids": 20_000}  # fmt: skip


@dataclass(frozen=True)
class TileRequest:
    """One tile of a layer in a TileMatrixSet, with its style and group parameters."""

    layer: str
    tms: str
    z: int
    x: int
    y: int
    format: str
    colormap: str | None = None
    rescale: str | None = None
    v: str | None = None  # the layer version of a versioned URL
    genus: str | None = None
    family: str | None = None
    status: str | None = None
    ids: str | None = None

    @classmethod
    def of(
        cls, layer: str, tms: str, z: int, x: int, y: int, format: str,
        params: Mapping[str, str | None] | None = None,
    ) -> TileRequest:  # fmt: skip
        """A request from the query parameters of a tile URL (unknown keys ignored)."""
        known = {k: v for k, v in (params or {}).items() if k in PARAM_LIMITS}
        return cls(layer, tms, z, x, y, format, **known)


@dataclass(frozen=True)
class Tile:
    """A tile answer: 200 with a body, or 304 (the client's ETag matched)."""

    status: int
    body: bytes
    media_type: str | None
    etag: str
    cache_control: str
    empty: bool = False
    level: int | None = None
    source: str = "off"  # off (no cache), miss, hit-memory, hit-disk, hit-redis
    timings: str = ""
    extra: dict[str, str] = field(default_factory=dict)  # X-Scale, X-Nodata of npy tiles

    def headers(self) -> dict[str, str]:
        """The response headers of the tile."""
        h = {"ETag": self.etag, "Cache-Control": self.cache_control}
        if self.status == 304:
            return h
        h |= {"Server-Timing": self.timings, "X-Cache": self.source}
        if self.empty:
            h["X-Tile-Empty"] = "true"
        if self.level is not None:
            h["X-Pyramid-Level"] = str(self.level)
        return h | self.extra


def group_of(
    ref: LayerRef, genus: str | None, family: str | None, status: str | None, ids: str | None
) -> GroupSpec | None:
    """The species group of a group layer; group parameters on other layers are a 400."""
    if ref.kind == "group":
        return parse_group(genus, family, status, ids)
    if any(v is not None for v in (genus, family, status, ids)):
        raise InvalidInputError(
            "genus, family, status and ids apply to group layers (<release>:group:<indicator>)"
        )
    return None


def layer_style(ref: LayerRef, colormap: str | None, rescale: str | None) -> render.Style:
    """The validated style of a tile of ``ref``: a colormap and range, or for a class
    layer its classes' colours (:func:`render.class_style`)."""
    if ref.kind == "classes":
        return render.class_style(colormap, rescale)
    return render.parse_style(colormap, rescale, ref.default_range, ref.fade)


def make_tile(
    svc: Services, req: TileRequest, if_none_match: str | None = None, hot: bool = False
) -> Tile | None:
    """The tile (never None unless ``hot``: see the module's docstring)."""
    timer = Timer()
    with timer.span("layer"):
        ref = svc.layers.cached(req.layer) if hot else svc.layers.resolve(req.layer)
    if ref is None:
        return None
    get_tms(req.tms)
    render.check_format(req.format)
    group = group_of(ref, req.genus, req.family, req.status, req.ids)
    rows = None
    if group is not None:
        rows = svc.cached_group_rows(ref, group) if hot else svc.group_rows(ref, group)
        if rows is None:
            return None
    style = layer_style(ref, req.colormap, req.rescale)
    tag = etag(ref.version, req.tms, req.z, req.x, req.y, req.format, style.key(),
               group.key() if group else "")  # fmt: skip
    cache = cache_control(ref.version, req.v)
    if if_none_match and tag_matches(if_none_match, tag):
        check_tile(get_tms(req.tms), req.z, req.x, req.y)
        return Tile(304, b"", None, tag, cache)
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
                    entry = render_entry(svc, ref, rows, req, style, timer)
                    # tiles first asked for without ?v= expire from the disk cache
                    entry = replace(entry, transient=req.v != ref.version)
                    svc.tiles.put(ref.release, key, entry)
                    source = "miss"
        if hit is not None:
            entry, source = hit[0], f"hit-{hit[1]}"
    if entry is None:
        entry = render_entry(svc, ref, rows, req, style, timer)
    metrics.TILE_BYTES.observe(len(entry.body))
    extra = {}
    if req.format == "npy" and ref.kind == "species":
        extra = {"X-Scale": repr(SCALE), "X-Nodata": str(NODATA)}
    elif req.format == "npy" and ref.kind == "classes":
        extra = {"X-Nodata": str(NO_CLASS)}
    return Tile(200, entry.body, render.FORMATS[req.format], tag, cache, entry.empty,
                entry.level, source, timer.header(), extra)  # fmt: skip


def render_entry(
    svc: Services, ref: LayerRef, rows: npt.NDArray[np.intp] | None, req: TileRequest,
    style: render.Style, timer: Timer, observe: bool = True,
) -> Entry:  # fmt: skip
    """Render a tile (the cache's miss path, and seeding's), with its stage times in the
    metrics (``observe``; a seed worker, which no one scrapes, skips them: ~20 us a
    tile)."""
    n = len(timer.spans)
    body, empty = render_tile(svc, ref, rows, req, style, timer)
    if observe:
        metrics.RENDERS.inc()
        for name, ms in timer.spans[n:]:
            metrics.STAGE.labels(name).observe(ms / 1000)
    return Entry(body, empty, timer.level)


def render_tile(
    svc: Services, ref: LayerRef, rows: npt.NDArray[np.intp] | None, req: TileRequest,
    style: render.Style, timer: Timer,
) -> tuple[bytes, bool]:  # fmt: skip
    """The encoded tile and whether it is empty."""
    tms = get_tms(req.tms)
    check_tile(tms, req.z, req.x, req.y)
    rel = svc.open(ref)
    with timer.span("index"):
        idx = svc.indexes.get(tms, req.z, req.x, req.y, rel.grid, rel.n_levels)
    timer.level = idx.level
    fmt = req.format
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
        elif ref.kind == "classes":
            data = svc.reader.gather(rel, idx, ref.var)
            empty = bool((data == NO_CLASS).all())
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
        elif ref.kind == "classes":
            indices, palette = data, render.class_palette(rel.scheme(ref.var))
        else:
            indices, palette = render.palette_indices(data, style), render.index_palette(style)
    with timer.span("encode"):
        return render.encode_indexed(indices, palette, fmt), False


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
