"""Publish as chunk tasks (issue 14): the shard writer, equality with the single-process
publish, independence from how the work is cut, resume after SIGKILL, one publisher per
release, leftovers, and a working set that does not grow with the extent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import tracemalloc
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from zarr.codecs import TransposeCodec, ZstdCodec

from reference.compare import assert_same_release, manifest
from reference.single_process_publish import _write_release
from sdmatlas.chunk_writer import ChunkWriter
from sdmatlas.chunks import local_reader
from sdmatlas.errors import InvalidInputError, ReleaseExistsError
from sdmatlas.executor import ExecutorOptions
from sdmatlas.predict.cube import Cube, open_cube
from sdmatlas.publish.categorical import CLASS_LAYERS
from sdmatlas.publish.indicators import SpeciesInfo
from sdmatlas.publish.levels import downsample_weights
from sdmatlas.publish.release import PublishOptions, publish
from sdmatlas.publish.species_csv import species_info_from_csv
from sdmatlas.publish.workspace import PublishLock, leftovers, workspace_for
from sdmatlas.sets import SetRule
from sdmatlas.testing.synthetic import write_synthetic_cube


def info_for(cube: Cube) -> SpeciesInfo:
    ids = np.asarray(cube.species_ids, np.int64)
    n = len(ids)
    return SpeciesInfo(
        ids=ids,
        protected=np.arange(n) % 3 == 0,
        invasive=np.arange(n) % 7 == 0,
        endemic=np.arange(n) % 5 == 0,
    )


@pytest.fixture(scope="module")
def multi_shard(tmp_path_factory: pytest.TempPathFactory) -> Cube:
    """300 species (two species shards), 200 x 200 pixels in 48-pixel chunks: neither the
    chunk nor the 192-pixel tasks divide the extent."""
    root = tmp_path_factory.mktemp("multi")
    return write_synthetic_cube(root / "cube.zarr", n_species=300, size=200, chunk=48, seed=5)


# -- the shard writer ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "chunks", "shards", "dtype", "fill", "filters"),
    [
        ((600, 70, 45), (1, 16, 16), (256, 16, 16), "uint8", 255, None),  # level, 3 shards
        ((70, 45, 300), (8, 8, 300), (64, 64, 300), "uint8", 255, (2, 0, 1)),  # pixels
        ((9, 6, 300), (8, 8, 300), None, "uint16", 0, None),  # block sums
        ((70, 45), (16, 16), None, "float32", np.nan, None),  # an indicator
        ((9, 6, 7, 4), (8, 8, 7, 4), None, "float64", np.nan, None),  # block indicators
    ],
)
def test_the_chunk_writer_writes_what_zarr_reads(
    tmp_path: Path,
    shape: tuple[int, ...],
    chunks: tuple[int, ...],
    shards: tuple[int, ...] | None,
    dtype: str,
    fill: Any,
    filters: tuple[int, ...] | None,
) -> None:
    rng = np.random.default_rng(3)
    data = rng.integers(0, 200, shape).astype(dtype)
    if np.issubdtype(data.dtype, np.floating):
        data = (rng.random(shape) * 1e3).astype(dtype)
    first = tuple(slice(0, min(u, n)) for u, n in zip(shards or chunks, shape, strict=True))
    data[first] = fill  # a whole unit of fill: its file must not exist
    data[tuple(slice(-1, None) for _ in shape)] = fill  # and a single fill value inside one
    arr = zarr.open_group(tmp_path, mode="w", zarr_format=3).create_array(
        "a",
        shape=shape,
        chunks=chunks,
        shards=shards,
        dtype=dtype,
        fill_value=fill,
        filters=[TransposeCodec(order=filters)] if filters else None,
        compressors=ZstdCodec(level=3),
    )
    writer = ChunkWriter.of(arr)
    assert writer.layout is not None, "the fast path must be taken for this layout"
    unit = shards or chunks
    grid = [-(-n // u) for n, u in zip(shape, unit, strict=True)]
    for start in np.ndindex(*grid):
        lo = [i * u for i, u in zip(start, unit, strict=True)]
        part = tuple(slice(a, a + u) for a, u in zip(lo, unit, strict=True))
        writer.write(tuple(lo), data[part])
    back = np.asarray(zarr.open_array(tmp_path / "a", mode="r")[...])
    assert back.dtype == data.dtype
    assert np.array_equal(back, data, equal_nan=True)
    files = sorted(p for p in (tmp_path / "a" / "c").rglob("*") if p.is_file())
    assert not [p for p in files if p.name.endswith(".partial")]
    assert len(files) == int(np.prod(grid)) - 1
    origin = (0,) * len(shape)
    assert not Path(writer.layout.chunk_path(origin)).exists()
    # a unit rewritten with nothing but fill loses its file, as with zarr
    last = tuple(g - 1 for g in grid)
    assert Path(writer.layout.chunk_path(last)).exists()
    lo = tuple(i * u for i, u in zip(last, unit, strict=True))
    writer.write(lo, np.full([n - a for n, a in zip(shape, lo, strict=True)], fill, dtype))
    assert not Path(writer.layout.chunk_path(last)).exists()
    with pytest.raises(InvalidInputError, match="not aligned"):
        writer.write((1,) * len(shape), data[tuple(slice(1, 2) for _ in shape)])


def test_the_local_reader_reads_every_species_shard(tmp_path: Path, multi_shard: Cube) -> None:
    """The serving side's hand-written shard reader over 300 species (two shards) at
    every level of a release, against zarr-python, chunk by chunk and by regions."""
    rel = Path(
        publish(
            multi_shard.path,
            tmp_path,
            "r",
            info_for(multi_shard),
            PublishOptions(min_level_size=40),
        )
    )
    levels = sorted(p for p in (rel / "levels").iterdir() if p.is_dir())
    assert len(levels) == 4
    for level in levels:
        arr = zarr.open_array(level / "probability", mode="r")
        reader = local_reader(level / "probability")
        assert reader is not None and reader.sharded and arr.shape[0] == 300
        full = np.asarray(arr[...])
        _, h, w = arr.shape
        for sp in (0, 255, 256, 299):
            for cy in range(-(-h // reader.inner[1])):
                for cx in range(-(-w // reader.inner[2])):
                    got = reader.chunk((sp, cy, cx))
                    c = reader.inner[1]
                    want = full[sp, cy * c : (cy + 1) * c, cx * c : (cx + 1) * c]
                    assert np.array_equal(got[0, : want.shape[0], : want.shape[1]], want)
        region = (slice(250, 262), slice(h // 3, h - 1), slice(1, w))
        assert np.array_equal(reader.region(region), full[region])
    pixels = local_reader(rel / "pixels")
    assert pixels is not None and pixels.sharded
    assert np.array_equal(
        pixels.region((slice(37, 101), slice(60, 200), slice(0, 300))),
        np.asarray(zarr.open_array(rel / "pixels", mode="r")[37:101, 60:200]),
    )


# -- the same release as before, however it is cut -------------------------------------------


def reference_release(cube: Cube, info: SpeciesInfo, path: Path, **options: Any) -> zarr.Group:
    root = zarr.open_group(path, mode="w", zarr_format=3)
    _write_release(
        cube.array(),
        cube.grid,
        cube.meta,
        info,
        cube.species_names,
        PublishOptions(**options),
        root,
        "r",
        None,
    )
    return root


def arrays(group: zarr.Group, prefix: str = "") -> dict[str, zarr.Array[Any]]:
    out: dict[str, zarr.Array[Any]] = {}
    for name, node in group.members():
        if isinstance(node, zarr.Group):
            out.update(arrays(node, f"{prefix}{name}/"))
        else:
            out[f"{prefix}{name}"] = node
    return out


def _check_class_layers(
    new: zarr.Group, ref: zarr.Group, entries: dict[str, Any], info: SpeciesInfo
) -> None:
    """Each class layer of the task publish against references built from the reference
    release: level 0 from its codes, each coarser level by the plain mode rule of
    tests/test_classes.py from the level below and the territory counts, the block class
    counts by counting level 0's pixels, and the manifest's counts."""
    from test_classes import mode_reference

    codes = np.asarray(ref["levels/0/probability"][...])
    terr = np.asarray(ref["territory"][...]).astype(np.int64)
    offset = 0
    for name, layer in CLASS_LAYERS.items():
        level0 = layer(codes, info, codes[0] != 255)
        np.testing.assert_array_equal(new[f"levels/0/{name}"][...], level0)
        weights, prev = terr, level0
        for k in range(1, len([g for g in new["levels"].group_keys()])):
            got = np.asarray(new[f"levels/{k}/{name}"][...])
            np.testing.assert_array_equal(got, mode_reference(prev, weights), err_msg=f"{k}")
            weights, prev = downsample_weights(weights), got
        n = len(layer.scheme.classes)
        for edge in (8, 64, 512):
            counts = np.asarray(new[f"blocks/{edge}/classes"][...])[..., offset : offset + n]
            for i, cls in enumerate(layer.scheme.classes):
                hit = np.pad(level0 == cls.value, [(0, (-d) % edge) for d in level0.shape])
                h, w = hit.shape
                per_block = hit.reshape(h // edge, edge, w // edge, edge).sum(axis=(1, 3))
                np.testing.assert_array_equal(counts[..., i], per_block)
        expected = [int((level0 == c.value).sum()) for c in layer.scheme.classes]
        assert entries[name]["counts"] == expected and sum(expected) > 0
        offset += n


@pytest.mark.parametrize("which", ["demo", "multi-shard", "empty-tiles"])
def test_the_task_publish_equals_the_single_process_publish(
    tmp_path: Path, which: str, cube: Path, multi_shard: Cube
) -> None:
    """Byte for byte: every array's values and dtype, and the manifest (its timings
    aside), against the single-process publish of commit e4c41bf kept in tests/reference.
    The files differ only where the layout changed (``pixels`` and ``blocks/8`` are
    sharded by task). ``empty-tiles``: 600 x 600 pixels in 256-pixel tasks, some of
    them without territory (skipped, yet their blocks get empty summaries)."""
    if which == "demo":
        c = open_cube(cube)
    elif which == "multi-shard":
        c = multi_shard
    else:
        c = write_synthetic_cube(tmp_path / "e.zarr", n_species=24, size=600, chunk=128, seed=4)
    info = info_for(c)
    ref = reference_release(c, info, tmp_path / "ref", threshold=0.4, min_level_size=20)
    tile = 192 if which == "multi-shard" else None
    opts = PublishOptions(threshold=0.4, min_level_size=20, tile=tile)
    new = zarr.open_group(publish(c.path, tmp_path / "rel", "r", info, opts), mode="r")
    a, b = arrays(new), arrays(ref)
    # the class layers (format 4) are not in the reference: checked below against theirs
    classes = {n for n in a if n.rsplit("/", 1)[-1] in (*CLASS_LAYERS, "classes")}
    assert sorted(set(a) - classes) == sorted(b)
    for name in b:
        x, y = np.asarray(a[name][...]), np.asarray(b[name][...])
        assert x.dtype == y.dtype and x.shape == y.shape, name
        assert x.tobytes() == y.tobytes(), name
    runs = ("published", "seconds", "publish")
    ma = {k: v for k, v in new.attrs["sdmatlas"].items() if k not in runs}
    mb = {k: v for k, v in ref.attrs["sdmatlas"].items() if k not in runs}
    # what format versions 3 and 4 added to the manifest (the reference writes version 2)
    assert ma.pop("format_version") == 4 and mb.pop("format_version") == 2
    assert ma.pop("species_set") == SetRule(threshold=0.4).model_dump()
    _check_class_layers(new, ref, ma.pop("class_layers"), replace(info, threshold=0.4))
    assert ma["species"].pop("iucn") is None  # no category given
    assert ma == mb
    assert new.attrs["multiscales"] == ref.attrs["multiscales"]


@pytest.mark.slow
def test_the_workers_change_no_byte_and_the_tile_no_value(
    tmp_path: Path, multi_shard: Cube
) -> None:
    """Two worker processes write the same files as one process; another tile size shards
    ``pixels`` and ``blocks/8`` otherwise (one shard a task) but changes no value."""
    info = info_for(multi_shard)
    one = Path(publish(multi_shard.path, tmp_path / "a", "r", info, PublishOptions(tile=192)))
    two_workers = PublishOptions(tile=192, executor=ExecutorOptions(workers=2))
    two = Path(publish(multi_shard.path, tmp_path / "b", "r", info, two_workers))
    assert_same_release(one, two)
    record = zarr.open_group(two, mode="r").attrs["sdmatlas"]["publish"]
    assert record["tile"] == 192 and record["runs"][0]["executor"] == "local"
    tasks = record["runs"][0]["tasks"]
    # 4 tiles of 192 px; one corner tile has no territory: no level-0 task runs there
    assert (tasks["base"]["total"], tasks["base"]["computed"]) == (3, 3)
    assert (tasks["rarity"]["total"], tasks["rarity"]["computed"]) == (4, 4)

    big = Path(publish(multi_shard.path, tmp_path / "c", "r", info, PublishOptions(tile=576)))
    a, c = arrays(zarr.open_group(one, mode="r")), arrays(zarr.open_group(big, mode="r"))
    assert sorted(a) == sorted(c)
    for name in a:
        assert np.asarray(a[name][...]).tobytes() == np.asarray(c[name][...]).tobytes(), name
    assert manifest(one) == manifest(big)
    assert zarr.open_array(big / "pixels", mode="r").shards == (576, 576, 300)


# -- resume after SIGKILL ---------------------------------------------------------------------


def _publish_cli(cube: Path, root: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "sdmatlas",
        "publish",
        str(cube),
        "--id",
        "big",
        "--root",
        str(root),
        "--no-register",
        "--tile",
        "64",
        *extra,
    ]


@pytest.mark.slow
def test_sigkill_then_resume_gives_the_same_bytes_recomputing_only_unfinished_tasks(
    tmp_path: Path,
) -> None:
    cube = write_synthetic_cube(tmp_path / "cube.zarr", n_species=300, size=448, chunk=64, seed=9)
    root = tmp_path / "rel"
    csv = tmp_path / "species.csv"
    info = info_for(cube)
    csv.write_text(
        "species_id,protected,invasive,endemic\n"
        + "".join(
            f"{i},{int(p)},{int(v)},{int(e)}\n"
            for i, p, v, e in zip(
                info.ids, info.protected, info.invasive, info.endemic, strict=True
            )
        )
    )
    from_csv = species_info_from_csv(csv, cube.species_ids)
    full = Path(publish(cube.path, tmp_path / "full", "big", from_csv, PublishOptions(tile=64)))
    proc = subprocess.Popen(
        _publish_cli(cube.path, root, "--workers", "2", "--species", str(csv)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    ws = workspace_for(root, "big")
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        if len(ws.done("base")) >= 6:
            break
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)  # the CLI and its Dask workers, all at once
    proc.wait()
    done = {stage: set(ws.done(stage)) for stage in ("base", "rarity")}
    assert 6 <= len(done["base"]) < 49, "the kill must land mid-run"
    assert (
        not (root / "big").exists()
        and [p.name for p in root.iterdir() if not p.name.startswith(".")] == []
    )
    # the level-0 shards of the finished base tasks (chunk = tile = 64: c/<shard>/<iy>/<ix>)
    level0 = ws.release_dir / "levels" / "0" / "probability" / "c"
    written = {
        p.relative_to(level0): p.stat().st_mtime_ns
        for key in done["base"]
        for p in level0.glob(f"*/{key.replace('.', '/')}")
    }
    assert written
    # A kill between a shard's write and its rename leaves its temporary file; the kill
    # above lands there only now and then, so one is left here for certain.
    stray = level0 / "0" / "9" / "9.0123456789ab.partial"
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"half a shard")

    refused = subprocess.run(
        _publish_cli(cube.path, root, "--species", str(csv)), capture_output=True, text=True
    )
    assert refused.returncode == 2 and "--resume" in refused.stderr
    other = subprocess.run(
        _publish_cli(cube.path, root, "--resume"), capture_output=True, text=True
    )
    assert other.returncode == 2 and "species:" in other.stderr  # no CSV: other flags

    subprocess.run(
        _publish_cli(cube.path, root, "--workers", "2", "--resume", "--species", str(csv)),
        check=True,
        capture_output=True,
    )
    assert_same_release(root / "big", full)  # file names too: no temporary file is left
    assert leftovers(root) == []
    final0 = root / "big" / "levels" / "0" / "probability" / "c"
    assert {p: (final0 / p).stat().st_mtime_ns for p in written} == written, (
        "a finished task was run again"
    )
    runs = zarr.open_group(root / "big", mode="r").attrs["sdmatlas"]["publish"]["runs"]
    assert len(runs) == 2 and runs[0]["finished"] is None, "the killed run is on record"
    assert runs[1]["finished"] and "error" not in runs[1]
    for stage in ("base", "rarity"):
        t = runs[1]["tasks"][stage]
        assert t["already_done"] == len(done[stage])
        assert t["computed"] == t["total"] - len(done[stage])


# -- one publisher per release, and what killed ones leave -------------------------------------


def test_two_publishes_of_one_id_one_wins(tmp_path: Path, multi_shard: Cube) -> None:
    info = info_for(multi_shard)
    started, go = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def slow(stage: str, done: int, total: int) -> None:
        started.set()
        go.wait(30)

    def first() -> None:
        try:
            publish(multi_shard.path, tmp_path, "r", info, progress=slow)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    t = threading.Thread(target=first)
    t.start()
    assert started.wait(60)
    with pytest.raises(ReleaseExistsError, match=r"being published by another process \(pid"):
        publish(multi_shard.path, tmp_path, "r", info)
    with pytest.raises(ReleaseExistsError, match="being published"):
        publish(multi_shard.path, tmp_path, "r", info, PublishOptions(resume=True))
    go.set()
    t.join(120)
    assert not errors and (tmp_path / "r" / "zarr.json").exists()
    with pytest.raises(ReleaseExistsError, match="already exists"):
        publish(multi_shard.path, tmp_path, "r", info)


def test_clean_lists_then_removes_leftovers_but_not_a_running_publish(
    tmp_path: Path, multi_shard: Cube
) -> None:
    info = info_for(multi_shard)

    def crash(stage: str, done: int, total: int) -> None:
        raise KeyboardInterrupt

    for rid in ("a", "b"):
        with pytest.raises(KeyboardInterrupt):
            publish(multi_shard.path, tmp_path, rid, info, progress=crash)
    held = PublishLock(tmp_path, "b")
    held.acquire()  # as a running publish of "b" would
    try:
        out = subprocess.run(
            [sys.executable, "-m", "sdmatlas", "clean", str(tmp_path)],
            capture_output=True,
            text=True,
            check=True,
        )
    finally:
        held.release(remove=True)
    text = out.stderr
    listed_a = text.index(".a.publishing")
    assert "release 'a'" in text and "will be removed" in text
    assert "release 'b'" in text and "in use by a running publish: kept" in text
    assert listed_a < text.index("removed 1 of 2")
    assert [x.release_id for x in leftovers(tmp_path)] == ["b"]
    # a resume of another cube, or with other options, says what differs
    other = write_synthetic_cube(tmp_path / "other.zarr", n_species=300, size=200, chunk=48, seed=6)
    with pytest.raises(InvalidInputError, match="cube_content"):
        publish(other.path, tmp_path, "b", info, PublishOptions(resume=True))
    with pytest.raises(InvalidInputError, match="tile: 384 there, 192 now"):
        publish(multi_shard.path, tmp_path, "b", info, PublishOptions(resume=True, tile=192))


# -- memory -------------------------------------------------------------------------------------


def test_a_task_working_set_does_not_grow_with_the_extent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The allocation peak of each kind of task, traced from the task's start to its end,
    is the same on a 4x larger extent: 16 then 64 tiles of 64 x 64 pixels (the real task
    functions, wrapped to read the tracer around them)."""
    from sdmatlas.publish import release, tasks

    worst: dict[str, int] = {}

    def traced(fn: Any) -> Any:
        def run(job: Any, item: Any) -> Any:
            tracemalloc.reset_peak()
            before = tracemalloc.get_traced_memory()[0]
            out = fn(job, item)
            worst[out.stage] = max(
                worst.get(out.stage, 0), tracemalloc.get_traced_memory()[1] - before
            )
            return out

        return run

    for name in ("base_task", "rarity_task", "level_task", "blocks_task"):
        monkeypatch.setattr(release, name, traced(getattr(tasks, name)))
    peaks = {}
    for size in (256, 512):
        cube = write_synthetic_cube(
            tmp_path / f"{size}.zarr", n_species=40, size=size, chunk=64, seed=1
        )
        worst.clear()
        tracemalloc.start()
        try:
            publish(cube.path, tmp_path / f"rel{size}", "r", info_for(cube),
                    PublishOptions(tile=64, min_level_size=64))  # fmt: skip
        finally:
            tracemalloc.stop()
        peaks[size] = dict(worst)
    small, large = peaks[256], peaks[512]
    assert {"base", "rarity", "level1", "level2", "blocks64"} <= set(large)
    # (a blocks64 task covers 512 pixels: clipped on the small extent, so not compared)
    for stage in ("base", "rarity", "level1"):
        assert large[stage] <= 1.1 * small[stage], (stage, small[stage], large[stage])
    assert max(large.values()) < 20e6


def test_resume_needs_a_local_directory(multi_shard: Cube) -> None:
    with pytest.raises(InvalidInputError, match="local releases directory"):
        publish(
            multi_shard.path,
            "memory://x/releases",
            "r",
            info_for(multi_shard),
            PublishOptions(resume=True),
        )


def test_options_are_checked_before_any_work(tmp_path: Path, multi_shard: Cube) -> None:
    with pytest.raises(InvalidInputError, match="multiple of 192"):
        publish(multi_shard.path, tmp_path, "r", info_for(multi_shard), PublishOptions(tile=100))
    assert not tmp_path.exists() or list(tmp_path.iterdir()) == []


def test_the_reader_keeps_a_bounded_number_of_shard_indexes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server touches millions of shards: the reader's index cache stays bounded and
    its answers stay right when indexes are evicted and read again."""
    from sdmatlas import chunks

    monkeypatch.setattr(chunks, "INDEX_CACHE_BYTES", 1)  # the floor: 64 indexes
    shape = (100 * 8, 8)
    arr = zarr.open_group(tmp_path, mode="w", zarr_format=3).create_array(
        "a", shape=shape, chunks=(4, 8), shards=(8, 8), dtype="uint8", fill_value=0,
        compressors=ZstdCodec(level=3),
    )  # fmt: skip
    data = (np.arange(np.prod(shape)) % 251 + 1).astype(np.uint8).reshape(shape)
    arr[...] = data
    reader = local_reader(tmp_path / "a")
    assert reader is not None and reader.sharded
    for _ in range(2):
        for i in range(200):
            assert np.array_equal(reader.chunk((i, 0)), data[i * 4 : i * 4 + 4])
        assert len(reader._indexes) == 64
