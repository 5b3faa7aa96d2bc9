"""Pre-generation of tiles into the tile cache (``sdmatlas seed``).

Tiles are planned per layer, TileMatrixSet and zoom over the layer's data box (so
tiles outside the data are never asked for), intersected with a bbox or a
territory's outline. Worker processes render them with the API's own renderer
(:func:`sdmatlas.serve.tiles.core.render_entry`, under :func:`make_tile`'s keys), so a
seeded tile is byte for byte what a request would get and lands in the same cache
entry. The cache itself is the journal: a tile already there (from an earlier run
killed half-way, or from requests) is skipped, not rendered again, so a seed resumes
by being run again.
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass

from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from sdmatlas.catalog import queries
from sdmatlas.classes import ClassScheme
from sdmatlas.errors import InvalidInputError
from sdmatlas.executor import ExecutorOptions
from sdmatlas.serve.cache import Entry
from sdmatlas.serve.seed_plan import (
    DENSE,
    EMPTY,
    PlanCaches,
    Verdict,
    batch_verdicts,
    constant_tile,
    tile_window,
)
from sdmatlas.serve.services import Services
from sdmatlas.serve.tiles import render
from sdmatlas.serve.tiles.core import (
    TileRequest,
    group_of,
    layer_style,
    render_entry,
    zoom_range,
)
from sdmatlas.serve.tiles.layers import LayerRef, layer_id
from sdmatlas.serve.tiles.tiling import check_tile, get_tms
from sdmatlas.serve.tiles.versions import Timer, etag
from sdmatlas.settings import Settings

Job = tuple[str, str, int, int, int]  # layer, tms, z, x, y
BATCH = 64
MAX_OVERZOOM = 4
"""Zoom levels a seed may go above a layer's native zoom (TileJSON's maxzoom): at 4 a
data pixel already covers 16 x 16 tile pixels; further up, seeding multiplies tiles
(x4 per level) that clients draw as well by overzooming."""


@dataclass
class SeedReport:
    planned: int = 0
    rendered: int = 0
    cached: int = 0  # already in the cache: skipped
    empty: int = 0  # written this run with no data (cached as empty)
    seconds: float = 0.0
    uniform: int = 0  # written from the planner's verdict, not rendered (empty included)

    @property
    def tiles_per_s(self) -> float:
        return self.rendered / self.seconds if self.seconds > 0 else 0.0

    def add(self, other: tuple[int, int, int, int]) -> None:
        self.rendered += other[0]
        self.cached += other[1]
        self.empty += other[2]
        self.uniform += other[3]


def parse_zooms(text: str) -> tuple[int, int]:
    """``"5"`` or ``"5-9"`` (inclusive)."""
    try:
        lo, _, hi = text.partition("-")
        a, b = int(lo), int(hi or lo)
    except ValueError:
        raise InvalidInputError(f"zoom {text!r} must be N or N-M, for example 5-9") from None
    if not 0 <= a <= b <= 30:
        raise InvalidInputError(f"zoom {text!r} must satisfy 0 <= N <= M <= 30")
    return a, b


def release_layers(svc: Services, release: str) -> list[str]:
    """Every species, indicator and class layer id of a release."""
    with svc.catalog.session() as s:
        out: list[str] = []
        while True:
            page = queries.find_layers(s, release=release, limit=queries.MAX_LIMIT, offset=len(out))
            out.extend(layer_id(i.release, i.name) for i in page)
            if len(page) < queries.MAX_LIMIT:
                return out


def territory_outline(svc: Services, code: str) -> BaseGeometry:
    with svc.catalog.session() as s:
        geom: BaseGeometry = queries.get_territory(s, code).geom
        return geom


def plan(
    svc: Services,
    layers: list[str],
    tms_names: list[str],
    zooms: tuple[int, int] | None,
    area: BaseGeometry | None,
) -> Iterator[Job]:
    """The tiles to seed, layer by layer (lon/lat ``area``; None: the layers' data)."""
    for lid in layers:
        ref = svc.layers.resolve(lid)
        if ref.bbox is None:
            continue  # a layer without data has no tiles to seed
        data = box(*ref.bbox)
        where = data if area is None else data.intersection(area)
        if where.is_empty:
            continue
        for name in tms_names:
            tms = get_tms(name)
            lo, hi = zooms if zooms is not None else zoom_range(svc, ref, name)
            if zooms is not None:
                check_zooms(svc, ref, name, zooms)
            w, s, e, n = where.bounds
            for t in tms.tiles(w, s, e, n, list(range(lo, hi + 1))):
                if area is not None and not where.intersects(box(*tms.bounds(t))):
                    continue
                yield lid, name, t.z, t.x, t.y


def check_zooms(svc: Services, ref: LayerRef, tms_name: str, zooms: tuple[int, int]) -> None:
    """Refuse zooms outside the TileMatrixSet or more than :data:`MAX_OVERZOOM` above the
    layer's native zoom, naming the layer's range."""
    tms = get_tms(tms_name)
    lo, hi = zoom_range(svc, ref, tms_name)
    top = min(tms.maxzoom, hi + MAX_OVERZOOM)
    if zooms[0] < tms.minzoom or zooms[1] > top:
        raise InvalidInputError(
            f"zoom {zooms[0]}-{zooms[1]} is beyond layer {ref.id}'s zooms in {tms_name}: "
            f"{lo}-{hi} (native {hi}); seed at most up to {top} ({MAX_OVERZOOM} above native: "
            "clients overzoom the native tiles)"
        )


# -- worker processes ----------------------------------------------------------------------------

_worker: dict[str, object] = {}


def _init(settings: Settings) -> None:
    from sdmatlas.catalog.db import Catalog
    from sdmatlas.serve import process

    process.tune()  # one BLAS thread per worker, as in the API

    _worker["svc"] = Services.build(settings, Catalog.from_settings(settings))


def worker_services(refs: list[LayerRef]) -> Services:
    """This worker's services, with the batch's layers as the seed resolved them."""
    svc = _worker["svc"]
    assert isinstance(svc, Services)
    svc.layers.prime(refs)
    return svc


def batch_refs(batch: list[Job], refs: Mapping[str, LayerRef] | None) -> list[LayerRef]:
    """The resolved layers of a batch's jobs, to send with it (none: workers resolve)."""
    if not refs:
        return []
    return [refs[lid] for lid in dict.fromkeys(j[0] for j in batch) if lid in refs]


def worker_verdicts(
    svc: Services, jobs: list[Job], fmt: str, params: dict[str, str | None],
    verdicts: list[Verdict | None] | None,
) -> list[Verdict | None]:  # fmt: skip
    """A batch's verdicts: those the caller planned, or (None) the planner's, made here
    in the worker that renders the batch (on Dask, whose workers may be on other
    machines; or when :func:`seed` has no services to plan with); the worker keeps the
    planner's aggregate readers and constant tiles for its next batches."""
    if verdicts is not None:
        return verdicts
    caches = _worker.setdefault("plan", PlanCaches())
    assert isinstance(caches, PlanCaches)
    return batch_verdicts(svc, jobs, fmt, params.get("colormap"), caches)


def _run(
    jobs: list[Job], fmt: str, params: dict[str, str | None],
    verdicts: list[Verdict | None] | None, refs: list[LayerRef],
) -> tuple[int, int, int, int]:  # fmt: skip
    svc = worker_services(refs)
    return seed_batch(svc, jobs, fmt, params, worker_verdicts(svc, jobs, fmt, params, verdicts))


def start_method() -> str:
    """How seed workers start: ``fork`` when this process runs no other thread, so the
    workers begin with every module imported (a spawned worker imports them again:
    ~1.5 s each, as long as rendering a seed of 100 layers takes); ``spawn`` otherwise,
    as a forked child of a threaded process can inherit a lock another thread held. A
    forked worker never uses the sockets it inherits (the catalog's, Redis'): it builds
    its own services (:func:`_init`) and leaves with ``os._exit``, closing none of them."""
    forkable = "fork" in multiprocessing.get_all_start_methods()
    return "fork" if forkable and threading.active_count() == 1 else "spawn"


@contextlib.contextmanager
def worker_pool(settings: Settings, processes: int) -> Iterator[ProcessPoolExecutor]:
    """The seed's worker processes, each with its own services, started now (before the
    caller starts any thread, such as a progress bar's)."""
    ctx = multiprocessing.get_context(start_method())
    with ProcessPoolExecutor(max(1, processes), ctx, _init, (settings,)) as pool:
        pool.submit(int).result()  # launches the workers (all at once when forking)
        yield pool


@dataclass(frozen=True)
class SeedContext:
    """What every seeding task on Dask shares (sent once per worker)."""

    settings: Settings
    fmt: str
    params: dict[str, str | None]


def seed_task(
    ctx: SeedContext, batch: tuple[list[Job], list[Verdict | None] | None, list[LayerRef]]
) -> tuple[int, int, int, int]:
    """One batch of tiles on a Dask worker: the worker builds its services (catalog
    connection, caches, readers) on its first task and keeps them for the next ones."""
    key = ctx.settings.model_dump_json()
    if _worker.get("settings") != key:
        _init(ctx.settings)
        _worker["settings"] = key
    return _run(batch[0], ctx.fmt, ctx.params, batch[1], batch[2])


@dataclass(frozen=True)
class SeedTile:
    """One planned tile, resolved: its layer, request, style and tile-cache key (the
    key a request for it with the layer's ``?v=`` uses)."""

    ref: LayerRef
    req: TileRequest
    style: render.Style
    key: str


@dataclass(frozen=True)
class SeedLayer:
    """What every tile of one layer shares in a seed: the layer, its tiles' parameters
    (with the layer version), style and style key."""

    ref: LayerRef
    params: dict[str, str | None]
    style: render.Style
    style_key: str


def seed_layer(svc: Services, layer: str, params: dict[str, str | None]) -> SeedLayer:
    """``layer`` resolved and checked, with the seed's parameters and its version."""
    ref = svc.layers.resolve(layer)
    versioned = tile_params(ref, params)
    style = layer_style(ref, versioned.get("colormap"), None)
    group_of(ref, None, None, None, None)  # group layers are not seeded: their 400
    return SeedLayer(ref, versioned, style, style.key())


def seed_tile(
    svc: Services, job: Job, fmt: str, params: dict[str, str | None],
    layers: dict[str, SeedLayer] | None = None,
) -> SeedTile:  # fmt: skip
    """``job`` resolved and validated, with the seed's parameters and the layer version;
    ``layers``: the layers resolved so far in this batch (looked up, and added to), so
    that a batch resolves each of its layers once, not each tile (~25 us a tile)."""
    layer, tms, z, x, y = job
    known = layers.get(layer) if layers is not None else None
    if known is None:
        known = seed_layer(svc, layer, params)
        if layers is not None:
            layers[layer] = known
    check_tile(get_tms(tms), z, x, y)
    key = etag(known.ref.version, tms, z, x, y, fmt, known.style_key, "").strip('"')
    req = TileRequest.of(layer, tms, z, x, y, fmt, known.params)
    return SeedTile(known.ref, req, known.style, key)


def planned_entry(svc: Services, t: SeedTile, verdict: Verdict | None) -> Entry | None:
    """For a tile the planner found empty or uniform: its cache entry, made without
    reading a pixel (the bytes the renderer gives); None for a dense one."""
    if verdict is None or verdict.kind == DENSE:
        return None
    ref, req = t.ref, t.req
    level = verdict.level
    if level is None:  # a verdict made without its window
        rel = svc.open(ref)
        level = tile_window(req.tms, req.z, req.x, req.y, rel.grid, rel.n_levels).level
    if verdict.kind == EMPTY:
        return Entry(render.empty_tile(req.format, ref.dtype), True, level)
    scheme = svc.open(ref).scheme(ref.var) if ref.kind == "classes" else None
    body = _constant(ref.kind, t.style, req.format, float(verdict.value or 0.0), scheme)
    return Entry(body, False, level)


def tile_params(ref: LayerRef, params: dict[str, str | None]) -> dict[str, str | None]:
    """A seeded tile's query parameters: the seed's, with the layer version of TileJSON's
    versioned URLs (seeded tiles never expire by TTL); a class layer's always in its
    classes' colours (a seed's colormap is for the other layers)."""
    out = {**params, "v": ref.version}
    if ref.kind == "classes":
        out["colormap"] = None
    return out


@functools.lru_cache(maxsize=4096)
def _constant(
    kind: str, style: render.Style, fmt: str, value: float, scheme: ClassScheme | None
) -> bytes:
    return constant_tile(kind, style, fmt, value, scheme)


def seed_batch(
    svc: Services,
    jobs: list[Job],
    fmt: str,
    params: dict[str, str | None],
    verdicts: list[Verdict | None] | None = None,
) -> tuple[int, int, int, int]:
    """Write each tile into the persistent caches: skipped when a cache has it, made from
    the planner's verdict when empty or uniform, else rendered (the renderer of
    :func:`make_tile`, so the same bytes and entry); returns (rendered, already cached,
    empty, written from the plan).

    Unlike a request, a seed takes no render lock and looks the tile up once (an
    existence check, not a read): a tile an API process renders at the same moment is
    rendered twice and written twice, atomically, with the same bytes. On a disk cache
    the lock and the second lookup cost about as much as rendering the tile (a seed's
    tile took ~1.7 ms with them, ~1.0 ms without)."""
    rendered = cached = empty = planned = 0
    layers: dict[str, SeedLayer] = {}
    for i, job in enumerate(jobs):
        t = seed_tile(svc, job, fmt, params, layers)
        ns = t.ref.release
        if svc.tiles.contains(ns, t.key):
            cached += 1
            continue
        entry = planned_entry(svc, t, verdicts[i] if verdicts else None)
        if entry is not None:
            planned += 1
        else:
            entry = render_entry(svc, t.ref, None, t.req, t.style, Timer(), observe=False)
            rendered += 1
        svc.tiles.put(ns, t.key, entry)  # versioned: never expires by TTL
        empty += entry.empty
    return rendered, cached, empty, planned


def seed(
    settings: Settings,
    jobs: list[Job],
    fmt: str,
    params: dict[str, str | None],
    processes: int,
    progress: Callable[[int], None] | None = None,
    verdicts: dict[Job, Verdict] | None = None,
    executor: ExecutorOptions | None = None,
    refs: Mapping[str, LayerRef] | None = None,
    plan: bool = False,
    svc: Services | None = None,
) -> SeedReport:
    """Seed ``jobs`` with ``processes`` worker processes (or on Dask: ``executor``) into
    the settings' persistent caches. ``refs``: the layers as the caller resolved them
    (sent with the batches: a worker then asks the catalog nothing). ``verdicts``: the
    planner's, made by the caller. Or with ``plan``, the planner runs batch by batch as
    the seed goes: here (``svc``: this process's services), each batch planned as it is
    handed to the local workers, so that planning overlaps rendering and the aggregate
    chunks are decoded once; on Dask or without ``svc``, in the worker that renders the
    batch (:func:`worker_verdicts`). Without either, every tile is rendered."""
    if not any(b in ("disk", "redis") for b in settings.tile_cache):
        raise InvalidInputError(
            "seeding needs a disk or redis tile cache (SDMATLAS_TILE_CACHE); memory caches "
            "live and die with each API process"
        )
    # the workers write only to the shared caches, not to a private memory one
    settings = settings.model_copy(
        update={"tile_cache": [b for b in settings.tile_cache if b != "memory"]}
    )
    report = SeedReport(planned=len(jobs))
    t0 = time.perf_counter()
    # tile by tile, then layer: the layers of one tile share its index map (the costliest
    # part of a tile), so seeding a release's 10,000 species builds each map once
    jobs = sorted(jobs, key=lambda j: (j[1], j[2], j[3], j[4], j[0]))
    batches = [jobs[i : i + BATCH] for i in range(0, len(jobs), BATCH)]

    here = plan and verdicts is None and svc is not None and executor is None
    caches = PlanCaches() if here else None

    def marks(batch: list[Job]) -> list[Verdict | None] | None:
        """A batch's verdicts; None: its worker plans it."""
        if caches is not None and svc is not None:
            return batch_verdicts(svc, batch, fmt, params.get("colormap"), caches)
        return None if plan and verdicts is None else [(verdicts or {}).get(j) for j in batch]

    if executor is not None:  # on Dask: a LocalCluster or a running scheduler
        from sdmatlas.executor import open_executor

        def done(r: tuple[int, int, int, int]) -> None:
            report.add(r)
            if progress is not None:
                progress(r[0] + r[1] + r[3])  # rendered, already cached, from the plan

        items = [(b, marks(b), batch_refs(b, refs)) for b in batches]
        with open_executor(executor) as ex:
            ex.map(seed_task, SeedContext(settings, fmt, params), items, done)
        report.seconds = time.perf_counter() - t0
        return report
    with worker_pool(settings, processes) as pool:
        # each batch is planned (``marks``) just before it is submitted: the workers
        # render the first batches while this process plans the next ones
        futures = {
            pool.submit(_run, b, fmt, params, marks(b), batch_refs(b, refs)): len(b)
            for b in batches
        }
        for f in as_completed(futures):
            report.add(f.result())
            if progress is not None:
                progress(futures[f])
    report.seconds = time.perf_counter() - t0
    return report
