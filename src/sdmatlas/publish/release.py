"""``publish``: a complete cube becomes a release, built as chunk tasks
(:mod:`sdmatlas.publish.tasks`) in a hidden workspace and renamed into place.

The release format (its layout and manifest) is owned by :mod:`sdmatlas.release`; this
module writes it. Area queries read the block aggregates for the coarsest blocks a
polygon covers entirely and the pixel-major array only for the 8 x 8 blocks on its
boundary (see :mod:`sdmatlas.publish.queries`). The workspace, resume and locking are in
:mod:`sdmatlas.publish.workspace`; docs/publish.md, "Publish as chunk tasks", has the
rounds, the measurements and the projection to Europe.

On an object store, a release is built in a local workspace with the fast writers and
uploaded file by file (one PUT per shard), then committed with its pointer object;
with workers on other machines (``--scheduler``, ``--cluster``) the tasks write to the
store directly through zarr-python instead (slower, but nothing needs sharing).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import zarr
from zarr.codecs import TransposeCodec, ZstdCodec

from sdmatlas.chunk_writer import remove_partials
from sdmatlas.classes import NO_CLASS
from sdmatlas.errors import (
    IncompleteReleaseError,
    InvalidInputError,
    ReleaseExistsError,
)
from sdmatlas.executor import ExecutorOptions, open_executor
from sdmatlas.grid import ChunkWindow, Grid
from sdmatlas.models.habitat import classifier_for, load_habitat_card
from sdmatlas.predict.cube import SHARD_SPECIES, Cube, now, open_cube, write_georef
from sdmatlas.publish import aggregates
from sdmatlas.publish.categorical import CLASS_LAYERS, ClassLayer, habitat_layers
from sdmatlas.publish.indicators import INDICATORS, SpeciesInfo, threshold_code
from sdmatlas.publish.levels import level_count
from sdmatlas.publish.stats import INDICATOR_BINS, FloatParts, SpeciesStats, merge_boxes
from sdmatlas.publish.tasks import (
    RARITY,
    PublishJob,
    TaskResult,
    base_task,
    blocks_task,
    histogram_task,
    level_task,
    open_staging,
    rarity_task,
    tiles,
)
from sdmatlas.publish.workspace import (
    PublishLock,
    Workspace,
    plan_differences,
    temporary_workspace,
    workspace_for,
)
from sdmatlas.quantize import ENCODING, NODATA
from sdmatlas.release import layout
from sdmatlas.release.layout import FORMAT_VERSION
from sdmatlas.release.manifest import ClassLayerEntry, IndicatorEntry, Manifest, SpeciesEntry
from sdmatlas.sets import SetRule
from sdmatlas.storage import (
    FsspecReleaseStore,
    LocalReleaseStore,
    ReleaseStore,
    Staging,
    release_store,
)

BLOCK = 8
"""Edge of the pixel-major chunks and of the area-query blocks (pixels)."""
TILE_UNIT = 64
"""Task edges are multiples of this (and of the cube chunk): 8 blocks of 8 pixels, one
chunk of the 8-pixel block aggregates."""
RELEASE_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}$")
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class PublishOptions:
    threshold: float = 0.5
    min_level_size: int = 256
    tile: int | None = None
    """Pixels per task side (a multiple of the cube chunk and of 64); by default the
    smallest such multiple of at least 256."""
    executor: ExecutorOptions = field(default_factory=lambda: ExecutorOptions(workers=0))
    """Where the tasks run; the library default is this process, the CLI's a LocalCluster."""
    resume: bool = False
    """Finish the unfinished publish of this release (same cube, species and options)."""
    species_set: SetRule | None = None
    """The species-set rule of the set-based indicators (``sdmatlas calibrate`` makes one);
    None: ``p >= threshold``."""
    habitats: Path | None = None
    """A habitat classifier card: its habitat class layers are published too."""


def _zstd() -> ZstdCodec:
    return ZstdCodec(level=3)


def validate_release_id(release_id: str) -> str:
    if not RELEASE_ID.match(release_id):
        raise InvalidInputError(
            f"release id {release_id!r} must be 1-100 characters of a-z, 0-9, '.', '_', '-' "
            "and start with a letter or digit"
        )
    return release_id


def task_tile(chunk: int, tile: int | None) -> int:
    """The task edge: a multiple of the cube chunk (whole level shards) and of 64 (whole
    pixel shards and aggregate chunks)."""
    unit = math.lcm(chunk, TILE_UNIT)
    if tile is None:
        return unit * -(-256 // unit)
    if tile <= 0 or tile % unit or tile > 8192:
        raise InvalidInputError(
            f"tile {tile} must be a multiple of {unit} (the cube chunk {chunk} and "
            f"{TILE_UNIT}) and at most 8192 pixels"
        )
    return tile


def _level_grid(grid: Grid, k: int) -> Grid:
    f = 2**k
    return Grid(
        crs=grid.crs,
        res=grid.res * f,
        x0=grid.x0,
        y0=grid.y0,
        width=-(-grid.width // f),
        height=-(-grid.height // f),
        chunk=grid.chunk,
    )


def _cube_digest(cube: Cube) -> str:
    """What identifies the cube's content: its metadata without the run records."""
    meta = {k: v for k, v in cube.meta.items() if k not in ("runs", "status")}
    return hashlib.sha256(json.dumps(meta, sort_keys=True, default=str).encode()).hexdigest()


def _species_digest(species: SpeciesInfo) -> str:
    h = hashlib.sha256()
    for a in (species.ids, species.protected, species.invasive, species.endemic):
        h.update(np.ascontiguousarray(a).tobytes())
    names = [list(map(str, a)) for a in (species.genus, species.family, species.iucn)]
    h.update(json.dumps(names).encode())
    return h.hexdigest()


def publish(
    cube_path: Path,
    root: ReleaseStore | Path | str,
    release_id: str,
    species: SpeciesInfo,
    options: PublishOptions | None = None,
    progress: Progress | None = None,
) -> str:
    """Publish a complete cube as ``release_id`` in ``root`` (a directory, an fsspec URL or
    a :class:`~sdmatlas.storage.ReleaseStore`); returns the release's location.

    The work runs as chunk tasks (:mod:`sdmatlas.publish.tasks`) on
    ``options.executor``. Nothing is visible under ``release_id`` until everything is
    written: the release is built in a hidden workspace and committed in one step (a
    rename, or one pointer object). In a local directory the workspace outlives a failure
    or a kill, and ``options.resume`` finishes it, running only the tasks that had not
    finished; on other stores a failure removes the partial data.
    """
    options = options or PublishOptions()
    validate_release_id(release_id)
    if not 0.0 < options.threshold <= 1.0:
        raise InvalidInputError(f"threshold must be in (0, 1], got {options.threshold}")
    cube = open_cube(cube_path)
    if not cube.is_complete:
        raise IncompleteReleaseError(
            f"cube {cube_path} is {cube.status}: finish its prediction (--resume) before publishing"
        )
    ids = np.asarray(cube.species_ids, dtype=np.int64)
    if not np.array_equal(species.ids, ids):
        raise InvalidInputError(
            "the species information does not list the cube's species in the cube's order"
        )
    grid = cube.grid
    tile = task_tile(grid.chunk, options.tile)
    layers = release_class_layers(options, ids)  # a bad classifier card: refused before work
    store = release_store(root)
    if store.exists(release_id):
        raise ReleaseExistsError(
            f"release {release_id!r} already exists at {store.location(release_id)}"
        )
    plan = {
        "format_version": FORMAT_VERSION,
        "release_id": release_id,
        "cube": str(Path(cube_path).resolve()),
        "cube_content": _cube_digest(cube),
        "species": _species_digest(species),
        "threshold": options.threshold,
        "species_set": options.species_set.model_dump() if options.species_set else None,
        "min_level_size": options.min_level_size,
        "tile": tile,
        "class_layers": sorted(layers),
        "habitats": _habitat_digest(options.habitats),
    }
    if not isinstance(store, LocalReleaseStore):
        if options.resume:
            raise InvalidInputError(
                f"--resume needs a local releases directory; {store.location(release_id)} "
                "is not one (a failed publish there leaves nothing to resume)"
            )
        # workers on this machine share its disk: build with the fast local writers,
        # then upload; remote workers write to the store themselves
        local = options.executor.scheduler is None and options.executor.cluster is None
        if not local and not isinstance(store, FsspecReleaseStore):
            raise InvalidInputError(
                f"{store.location(release_id)}: this store is written from this machine; "
                "publish with local workers (--workers), not --scheduler or --cluster"
            )
        staging = store.begin(release_id)
        ws = temporary_workspace()
        try:
            if local:
                group = zarr.open_group(ws.release_dir, mode="w", zarr_format=3)
                _setup(group, cube, grid, species, options, tile, layers)
                where, opts = str(ws.release_dir.resolve()), None
            else:
                assert staging.group is not None  # a Zarr store (checked above)
                _setup(staging.group, cube, grid, species, options, tile, layers)
                where = (
                    f"{store.url}/{staging.token}" if isinstance(store, FsspecReleaseStore) else ""
                )
                opts = store.storage_options if isinstance(store, FsspecReleaseStore) else None
            _run(where, opts, ws, cube, grid, species, options, tile, release_id, progress, layers)
            if local:
                store.upload(staging, ws.release_dir)
            store.commit(staging)
        except BaseException:
            store.abort(staging)
            raise
        finally:
            ws.remove()
        return store.location(release_id)

    lock = PublishLock(store.root, release_id)
    lock.acquire()
    try:
        if store.exists(release_id):  # published while we waited for nothing: re-check
            raise ReleaseExistsError(f"release {release_id!r} already exists")
        ws = _workspace(store.root, release_id, plan, options.resume)
        if ws.read_plan() is None:
            ws.remove()
            group = zarr.open_group(ws.release_dir, mode="w", zarr_format=3)
            _setup(group, cube, grid, species, options, tile, layers)
            ws.write_plan(plan)
        location = str(ws.release_dir.resolve())
        _run(location, None, ws, cube, grid, species, options, tile, release_id, progress, layers)
        # every task has finished and we hold the lock: a temporary file still there is a
        # write a killed run interrupted (its task ran again since), not part of the release
        remove_partials(ws.release_dir)
        store.commit(Staging(release_id, zarr.open_group(location, mode="r"), location))
        ws.remove()
    finally:
        lock.release(remove=True)  # the workspace, not the lock, holds what a resume needs
    return store.location(release_id)


def _workspace(root: Path, release_id: str, plan: dict[str, Any], resume: bool) -> Workspace:
    ws = workspace_for(root, release_id)
    old = ws.read_plan()
    if old is None:
        return ws  # none, or one whose set-up never finished: started afresh
    if not resume:
        runs = ws.runs()
        since = runs[0]["started"] if runs else "an earlier run"
        raise ReleaseExistsError(
            f"an unfinished publish of {release_id!r} (since {since}) is at {ws.path}: "
            "run again with --resume to finish it, or remove it with `sdmatlas clean`"
        )
    diffs = plan_differences(old, plan)
    if diffs:
        detail = "; ".join(f"{k}: {old.get(k)!r} there, {plan.get(k)!r} now" for k in diffs)
        raise InvalidInputError(
            f"cannot resume the unfinished publish at {ws.path}: it publishes something "
            f"else ({detail}); remove it with `sdmatlas clean` or use another release id"
        )
    return ws


def _setup(
    root: zarr.Group,
    cube: Cube,
    grid: Grid,
    species: SpeciesInfo,
    options: PublishOptions,
    tile: int,
    class_layers: Mapping[str, ClassLayer],
) -> None:
    """Every array of the release, empty. The arrays a ``base`` task writes in small
    chunks (``pixels``, ``blocks/8``) are sharded by task: a task writes one file each."""
    s, h, w = len(species.ids), grid.height, grid.width
    n_levels = level_count(h, w, options.min_level_size)
    sp = root.create_array(
        layout.SPECIES,
        shape=(s,),
        dtype="int64",
        dimension_names=("species",),
        attributes={layout.NAMES_ATTR: cube.species_names},
    )
    sp[:] = species.ids
    for k in range(n_levels):
        g = root.require_group(layout.level_group(k))
        lg = _level_grid(grid, k)
        write_georef(g, lg)
        g.create_array(
            layout.PROBABILITY,
            shape=(s, lg.height, lg.width),
            chunks=(1, grid.chunk, grid.chunk),
            shards=(min(s, SHARD_SPECIES), grid.chunk, grid.chunk),
            dtype="uint8",
            fill_value=NODATA,
            compressors=_zstd(),
            dimension_names=("species", "y", "x"),
            attributes={
                "grid_mapping": "spatial_ref",
                "scale_factor": ENCODING["scale_factor"],
                "add_offset": 0.0,
                "encoding": ENCODING,
            },
        )
        for name, ind in INDICATORS.items():
            _plane(g, name, lg, "float32", np.nan, long_name=ind.title, units=ind.units)
        for name, layer in class_layers.items():
            classes = layer.scheme.classes
            _plane(g, name, lg, "uint8", NO_CLASS, long_name=layer.title,
                   flag_values=[c.value for c in classes],
                   flag_meanings=" ".join(c.code for c in classes),
                   resampling="mode of the valid children (sdmatlas.classes)")  # fmt: skip
    root.create_array(
        layout.PIXELS,
        shape=(h, w, s),
        chunks=(BLOCK, BLOCK, s),
        # One shard a task: a task writes one file, not one per 8 x 8 pixels (that was 260
        # million files for Europe, and file creation dominated the 16-species publish).
        shards=(tile, tile, s),
        dtype="uint8",
        fill_value=NODATA,
        # Bytes stored species-major inside each chunk: neighbouring pixels of one species
        # compress far better than neighbouring species of one pixel (210 MB -> 86 MB on the
        # synthetic 10,000-species release, with faster point reads; docs/publish.md).
        filters=[TransposeCodec(order=(2, 0, 1))],
        compressors=_zstd(),
        dimension_names=("y", "x", "species"),
    )
    n_classes = sum(len(c.scheme.classes) for c in class_layers.values())
    aggregates.create(root, h, w, s, len(INDICATORS), shard=tile, n_classes=n_classes)
    root.create_array(
        layout.TERRITORY,
        shape=(h, w),
        chunks=(grid.chunk, grid.chunk),
        dtype="uint8",
        fill_value=0,
        compressors=_zstd(),
        dimension_names=("y", "x"),
    )


def _plane(g: zarr.Group, name: str, lg: Grid, dtype: str, fill: Any, **attrs: Any) -> None:
    """One [y, x] array of a level (an indicator or a class layer), in cube-sized chunks."""
    g.create_array(
        name,
        shape=(lg.height, lg.width),
        chunks=(lg.chunk, lg.chunk),
        dtype=dtype,
        fill_value=fill,
        compressors=_zstd(),
        dimension_names=("y", "x"),
        attributes={"grid_mapping": "spatial_ref", **attrs},
    )


def _run(
    release: str,
    storage_options: dict[str, Any] | None,
    ws: Workspace,
    cube: Cube,
    grid: Grid,
    species: SpeciesInfo,
    options: PublishOptions,
    tile: int,
    release_id: str,
    progress: Progress | None,
    class_layers: Mapping[str, ClassLayer],
) -> None:
    """Run (or finish) every task, reduce their partial results, write the manifest."""
    t_start = time.perf_counter()
    started = now()
    s, h, w = len(species.ids), grid.height, grid.width
    n_levels = level_count(h, w, options.min_level_size)
    # the release's threshold and set rule, whatever the species information said
    rule = options.species_set or SetRule(threshold=options.threshold)
    species = replace(species, threshold=options.threshold, species_set=rule)
    job = PublishJob(
        release=release,
        storage_options=storage_options,
        workspace=ws,
        cube=cube.path.resolve(),
        grid=grid,
        n_species=s,
        tile=tile,
        threshold_code=threshold_code(options.threshold),
        species=species,
        class_layers=dict(class_layers),
    )
    # Tiles without a territory pixel write nothing but their blocks' empty indicator
    # summaries (every other array holds its fill value there): only the tiles with a cube
    # chunk the prediction marked done run the level-0 and histogram tasks, and the
    # pyramid only where such a tile lies below (half of Europe's tiles are sea).
    all_tiles = tiles(h, w, tile)
    windows = occupied_tiles(all_tiles, cube.done_chunks(), grid.chunk)
    occupied = {(win.row0, win.col0) for win in windows}

    def below(row0: int, row1: int, col0: int, col1: int) -> bool:
        """Whether level-0 pixels [row0:row1, col0:col1] hold an occupied tile."""
        return any(
            (y, x) in occupied
            for y in range(row0 - row0 % tile, row1, tile)
            for x in range(col0 - col0 % tile, col1, tile)
        )

    counts: dict[str, dict[str, Any]] = {}
    executor = options.executor
    run: dict[str, Any] = {
        "started": started,
        "finished": None,  # stays None in the record of a run that was killed
        "executor": executor.label,
        "workers": executor.workers if executor.label == "local" else None,
        "tasks": counts,
    }
    run_index = ws.start_run(run)

    def stages(*specs: Stage) -> list[dict[str, dict[str, Any]]]:
        """Run stages that do not depend on one another together (fewer barriers); the
        finished tasks of each, with what they recorded."""
        dones, groups, labels = [], [], {}
        for spec in specs:
            done = ws.done(spec.name)
            todo = [it for it in spec.items if _key(it) not in done]
            counts[spec.name] = {
                "total": len(spec.items),
                "already_done": len(spec.items) - len(todo),
                "computed": 0,
                "task_seconds": 0.0,
            }
            labels[spec.name] = (spec.label, done, len(spec.items))
            dones.append(done)
            groups.append((spec.fn, spec.job, todo))

        def on_done(r: TaskResult) -> None:
            label, done, total = labels[r.stage]
            done[r.key] = r.info
            counts[r.stage]["computed"] += 1
            counts[r.stage]["task_seconds"] += round(r.seconds, 4)
            if progress:
                progress(label, len(done), total)

        ex.map_all(groups, on_done)
        return dones

    error: BaseException | None = None
    try:
        with open_executor(options.executor) as ex:
            label0 = "level 0, pixel index, aggregates"
            (base,) = stages(Stage("base", label0, base_task, windows, job))
            sstats = SpeciesStats(s, job.threshold_code)
            # the skipped tiles' pixels are nodata for every species
            sstats.histogram[:, NODATA] = h * w - sum(
                (win.row1 - win.row0) * (win.col1 - win.col0) for win in windows
            )
            code_sums = np.zeros(s, dtype=np.int64)
            for win in windows:
                part = ws.load_partial("base", win.key)
                sstats.histogram += part["histogram"]
                merge_boxes(sstats.presence, part["presence"])
                merge_boxes(sstats.extent, part["extent"])
                code_sums += part["code_sums"]
            pixel_km2 = (grid.res / 1000.0) ** 2
            range_km2 = code_sums.astype(np.float64) / 254.0 * pixel_km2
            job = replace(job, species=replace(species, range_km2=range_km2))
            label1 = "rarity and indicator blocks"
            every = [(win, (win.row0, win.col0) in occupied) for win in all_tiles]
            (rarity,) = stages(Stage("rarity", label1, rarity_task, every, job))
            parts = {
                n: FloatParts(
                    [r for d in rarity.values() for r in d["stats"]]
                    if n == RARITY
                    else [r for d in base.values() for r in d["stats"][n]]
                )
                for n in INDICATORS
            }
            edges = {n: e for n, p in parts.items() if (e := p.edges()) is not None}
            # then, together: the histograms; pyramid level k with block edge 8^(k+1)
            # (each needs only the round before it)
            later: list[list[Stage]] = [
                [
                    Stage(
                        "hist",
                        "indicator statistics",
                        histogram_task,
                        windows,
                        replace(job, edges=edges),
                    )
                ]
            ]
            for k in range(1, n_levels):
                lg = _level_grid(grid, k)
                f = 2**k
                items = [
                    (k, win)
                    for win in tiles(lg.height, lg.width, tile)
                    if below(win.row0 * f, win.row1 * f, win.col0 * f, win.col1 * f)
                ]
                if len(later) < k:
                    later.append([])
                later[k - 1].append(
                    Stage(f"level{k}", f"pyramid level {k}", level_task, items, job)
                )
            for i, coarse in enumerate(aggregates.EDGES[1:]):  # each from the one before
                bh, bw = aggregates.block_shape(h, w, coarse)
                # every chunk, with territory or not: empty blocks hold (0, 0, NaN, NaN)
                # indicator summaries, not the fill value (the tasks are cheap)
                items = [(coarse, win) for win in tiles(bh, bw, aggregates.CHUNK_BLOCKS)]
                if len(later) <= i:
                    later.append([])
                later[i].append(
                    Stage(f"blocks{coarse}", f"block aggregates {coarse}", blocks_task, items, job)
                )
            hist = stages(*later[0])[0]
            for round_ in later[1:]:
                stages(*round_)
    except BaseException as exc:
        error = exc
    run.update(finished=now(), seconds=round(time.perf_counter() - t_start, 3))
    if error is not None:
        run["error"] = f"{type(error).__name__}: {error}"
    ws.finish_run(run_index, run)
    if error is not None:
        raise error
    root = open_staging(job)
    stats = root.require_group(layout.stats_group())
    stats.create_array("histogram", shape=(s, 256), dtype="int64", fill_value=0)[:] = (
        sstats.histogram
    )
    stats.create_array("presence", shape=(s, 4), dtype="int64", fill_value=-1)[:] = sstats.presence
    stats.create_array("extent", shape=(s, 4), dtype="int64", fill_value=-1)[:] = sstats.extent
    indicator_stats = {}
    for n, p in parts.items():
        c = np.zeros(INDICATOR_BINS, np.int64) if n in edges else None
        for d in hist.values():
            if c is not None:
                c += np.asarray(d["counts"][n], dtype=np.int64)
        indicator_stats[n] = p.summary(None if c is None else c.tolist())
    grid_levels = [_level_grid(grid, k) for k in range(n_levels)]
    root.attrs[layout.MULTISCALES_ATTR] = [
        {
            "name": release_id,
            "type": "mean over valid pixels (weighted by level-0 territory pixels)",
            "datasets": [
                {"path": layout.level_group(k), "resolution": g.res}
                for k, g in enumerate(grid_levels)
            ],
        }
    ]
    cube_meta = cube.meta
    manifest = Manifest(
        format_version=FORMAT_VERSION,
        kind="release",
        release_id=release_id,
        status="published",
        published=now(),
        seconds=round(sum(r.get("seconds") or 0.0 for r in ws.runs()), 3),
        grid=grid,
        levels=n_levels,
        encoding=ENCODING,
        threshold=options.threshold,
        block=BLOCK,
        aggregates=list(aggregates.EDGES),
        indicator_order=list(INDICATORS),
        indicators={
            n: IndicatorEntry(title=i.title, units=i.units, stats=indicator_stats[n])
            for n, i in INDICATORS.items()
        },
        species=SpeciesEntry(
            ids=species.ids.tolist(),
            protected=species.protected.tolist(),
            invasive=species.invasive.tolist(),
            endemic=species.endemic.tolist(),
            range_km2=[round(float(r), 4) for r in range_km2],
            genus=[str(g) for g in species.genus] if len(species.genus) else None,
            family=[str(f) for f in species.family] if len(species.family) else None,
            iucn=[str(c) for c in species.iucn] if len(species.iucn) else None,
        ),
        source={
            "model": cube_meta.get("model", {}),
            "inputs": cube_meta.get("inputs", {}),
            "territory": cube_meta.get("territory"),
        },
        publish={"tile": tile, "runs": ws.runs()},
        species_set=species.species_set,
        class_layers={
            n: ClassLayerEntry(
                title=c.title,
                scheme=c.scheme,
                counts=np.sum(
                    [d["classes"][n] for d in base.values()] or [[0] * len(c.scheme.classes)],
                    axis=0,
                ).tolist(),
            )
            for n, c in class_layers.items()
        },
    )
    root.attrs[layout.MANIFEST_ATTR] = manifest.model_dump(mode="json")


def release_class_layers(
    options: PublishOptions, species_ids: npt.NDArray[np.int64]
) -> dict[str, ClassLayer]:
    """The class layers a publish writes: the registry's, then the habitat classifier's
    (its card checked, and its species found in the cube, before any work)."""
    layers = dict(CLASS_LAYERS)
    if options.habitats is not None:
        habitats = habitat_layers(options.habitats)
        classifier_for(options.habitats).rows_in(species_ids)
        layers.update(habitats)
    return layers


def _habitat_digest(card: Path | None) -> str | None:
    if card is None:
        return None
    path = Path(card)
    h = hashlib.sha256(path.read_bytes())
    h.update(load_habitat_card(path).model_path().read_bytes())
    return h.hexdigest()


def occupied_tiles(
    windows: list[ChunkWindow], done_chunks: set[str], chunk: int
) -> list[ChunkWindow]:
    """The tiles holding at least one cube chunk with a done marker (prediction marks
    exactly the chunks with territory pixels)."""
    out = []
    for win in windows:
        keys = (
            f"{iy}.{ix}"
            for iy in range(win.row0 // chunk, -(-win.row1 // chunk))
            for ix in range(win.col0 // chunk, -(-win.col1 // chunk))
        )
        if any(k in done_chunks for k in keys):
            out.append(win)
    return out


@dataclass(frozen=True)
class Stage:
    """One kind of task over its items."""

    name: str
    label: str
    fn: Callable[[PublishJob, Any], TaskResult]
    items: list[Any]
    job: PublishJob


def _key(item: Any) -> str:
    """The marker key of a task's item: its window's (items are a window, or a tuple
    holding one)."""
    win = next(i for i in item if isinstance(i, ChunkWindow)) if isinstance(item, tuple) else item
    return str(win.key)
