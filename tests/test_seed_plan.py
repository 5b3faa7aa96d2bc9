"""The seeding planner: empty, uniform and dense tiles from the block aggregates, with
no pixel read; seeding writes the empty and uniform ones without rendering them, and
every seeded tile equals the tile rendered on request, byte for byte.

Data: a synthetic release (30 species in Gaussian patches, 0 elsewhere, inside an
irregular territory), so that every class occurs: empty tiles off the territory, uniform
tiles (a species absent from a whole tile, an indicator at 0) and dense tiles.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from conftest import served_catalog
from sdmatlas.catalog.db import Catalog
from sdmatlas.serve.seed import plan, seed_batch
from sdmatlas.serve.seed_plan import DENSE, EMPTY, UNIFORM, build_plan
from sdmatlas.serve.services import Services
from sdmatlas.serve.tiles.core import TileRequest, make_tile
from sdmatlas.settings import Settings
from sdmatlas.testing.synthetic import write_synthetic_cube

KEY = "syn-plan"
BIN = Path(sys.executable).parent
TMS = ["WebMercatorQuad", "EuropeanETRS89_LAEAQuad"]


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    root = tmp_path_factory.mktemp("plan")
    cube = write_synthetic_cube(root / "cube.zarr", n_species=30, size=256, chunk=64, seed=3)
    return served_catalog(cube.path, root, [(KEY, "2020")], tile_cache=[])


@pytest.fixture(scope="module")
def svc(settings: Settings) -> Iterator[Services]:
    c = Catalog.from_settings(settings)
    yield Services.build(settings, c)
    c.dispose()


def _layers() -> list[str]:
    return [*(f"{KEY}:species:{i}" for i in range(1, 31)),
            f"{KEY}:indicator:richness", f"{KEY}:indicator:protected_count",
            f"{KEY}:classes:set_worst_status"]  # fmt: skip


def _render(svc: Services, job: tuple[str, str, int, int, int], fmt: str) -> bytes:
    layer, tms, z, x, y = job
    v = svc.layers.resolve(layer).version
    tile = make_tile(svc, TileRequest.of(layer, tms, z, x, y, fmt, {"v": v}))
    assert tile is not None
    return tile.body


def test_verdicts_agree_with_the_rendered_tiles(svc: Services) -> None:
    jobs = list(plan(svc, _layers(), TMS, (4, 9), None))
    p = build_plan(svc, jobs, "png", None)
    kinds = Counter(v.kind for v in p.verdicts.values())
    assert kinds[EMPTY] and kinds[UNIFORM] and kinds[DENSE], kinds  # every class occurs
    assert p.total.tiles == len(jobs) == sum(kinds.values())
    checked = Counter()
    for job, v in p.verdicts.items():
        if v.kind == DENSE and checked[DENSE] >= 150:
            continue  # dense tiles: a sample (their verdict promises nothing)
        values = np.load(io.BytesIO(_render(svc, job, "npy")))
        kind = svc.layers.resolve(job[0]).kind
        nodata = values == 255 if kind in ("species", "classes") else np.isnan(values)
        if v.kind == EMPTY:
            assert nodata.all(), job
        elif v.kind == UNIFORM:
            assert not nodata.any() and (values == v.value).all(), (job, v)
        checked[v.kind] += 1
    assert checked[UNIFORM] > 50 and checked[EMPTY] > 10
    # the class layer's empty tiles are known too (here every tile with territory holds
    # empty sets beside others: none is uniform; test_uniform_class_tiles has those)
    cls = Counter(v.kind for j, v in p.verdicts.items() if ":classes:" in j[0])
    assert cls[EMPTY] and cls[DENSE], cls


def test_windows_of_a_batch_are_those_of_each_tile(svc: Services) -> None:
    """The planner computes a batch's windows with one PROJ call: the same windows as one
    tile at a time, in order, in both matrix sets and at every zoom (the level each
    reads too), tiles over the grid's edge included."""
    import morecantile

    from sdmatlas.serve.seed_plan import tile_windows

    ref = svc.layers.resolve(f"{KEY}:species:1")
    rel = svc.open(ref).release
    assert ref.bbox is not None
    for name in TMS:
        zooms = list(range(2, 16))
        tiles = [(t.z, t.x, t.y) for t in morecantile.tms.get(name).tiles(*ref.bbox, zooms)]
        assert len(tiles) > 200 and len({z for z, _, _ in tiles}) == len(zooms)
        batch = tile_windows(name, tiles, rel.grid, rel.n_levels)
        alone = [tile_windows(name, [t], rel.grid, rel.n_levels)[0] for t in tiles]
        assert batch == alone
        assert len({w.level for w in batch}) > 1
        assert any(not w.inside(rel.grid) for w in batch) and any(w.inside(rel.grid) for w in batch)


def test_uniform_class_tiles(svc: Services) -> None:
    """A class layer's tile is uniform exactly when one class fills every block of its
    window (all territory); any other mix is dense; no territory is empty."""
    from sdmatlas.serve.seed_plan import TileAggregates, Window, classify_classes

    rel = svc.open(svc.layers.resolve(f"{KEY}:classes:set_worst_status")).release
    name, k = "set_worst_status", 6  # LC NT VU EN CR NA
    win = Window(0, 16, 0, 16, 2)
    full = np.full(4, 64, np.int64)

    def agg(classes: np.ndarray, count: np.ndarray = full) -> TileAggregates:
        return TileAggregates(8, count, full, classes=classes)

    one = np.zeros((4, k), np.int64)
    one[:, 4] = 64  # CR in every block
    mixed = one.copy()
    mixed[0, 4], mixed[0, 3] = 63, 1
    holes = one.copy()
    holes[1, 4] = 60  # 4 pixels of no class (empty sets)
    got = [classify_classes(rel, win, a, [name])[0] for a in
           (agg(one), agg(mixed), agg(holes), agg(one * 0, full * 0))]  # fmt: skip
    assert [v.kind for v in got] == [UNIFORM, DENSE, DENSE, EMPTY]
    assert got[0].value == 4 and got[0].level == 2


def assert_cached_as_requested(
    seeder: Services, plain: Services, jobs: list[tuple[str, str, int, int, int]]
) -> None:
    """Every job's PNG tile is a hit of the seeder's cache, byte for byte the tile
    rendered on request without a cache."""
    for job in jobs:
        layer, tms, z, x, y = job
        v = seeder.layers.resolve(layer).version
        got = make_tile(seeder, TileRequest.of(layer, tms, z, x, y, "png", {"v": v}))
        assert got is not None and got.source.startswith("hit"), job
        assert got.body == _render(plain, job, "png"), job


def test_seeded_tiles_equal_requested_tiles(settings: Settings, tmp_path: Path) -> None:
    """Seeded from the plan into a disk cache: empty, uniform and dense tiles, PNG and
    WebP, byte for byte what a request renders; the uniform and empty ones unrendered."""
    cached = settings.model_copy(update={"tile_cache": ["disk"], "data_dir": tmp_path})
    c = Catalog.from_settings(cached)
    try:
        seeder, plain = Services.build(cached, c), Services.build(settings, c)
        for fmt in ("png", "webp"):
            layers = [*_layers()[::3], f"{KEY}:classes:set_worst_status"]
            jobs = list(plan(seeder, layers, ["WebMercatorQuad"], (5, 9), None))
            p = build_plan(seeder, jobs, fmt, None)
            rendered, hit, empty, written = seed_batch(
                seeder, jobs, fmt, {"colormap": None}, [p.verdicts[j] for j in jobs]
            )
            kinds = Counter(v.kind for v in p.verdicts.values())
            assert (rendered, hit, written) == (kinds[DENSE], 0, kinds[EMPTY] + kinds[UNIFORM])
            for job in jobs:  # now every tile is a cache hit, equal to a fresh render
                layer, tms, z, x, y = job
                v = seeder.layers.resolve(layer).version
                got = make_tile(seeder, TileRequest.of(layer, tms, z, x, y, fmt, {"v": v}))
                assert got is not None and got.source.startswith("hit"), job
                assert got.body == _render(plain, job, fmt), (job, p.verdicts[job])
                assert got.empty == (p.verdicts[job].kind == EMPTY) or p.verdicts[job].kind == DENSE
            assert empty >= kinds[EMPTY]
    finally:
        c.dispose()


def test_seeding_on_dask_equals_requested_tiles_and_resumes(
    settings: Settings, tmp_path: Path
) -> None:
    """``seed`` on a Dask LocalCluster (one worker process), the worker planning its
    batches: every tile lands in the disk cache byte for byte as rendered on request, the
    planned ones unrendered; a second run finds them all cached."""
    from sdmatlas.executor import ExecutorOptions
    from sdmatlas.serve.seed import seed

    cached = settings.model_copy(update={"tile_cache": ["disk"], "data_dir": tmp_path})
    c = Catalog.from_settings(cached)
    try:
        seeder, plain = Services.build(cached, c), Services.build(settings, c)
        jobs = list(plan(seeder, _layers()[::3], ["WebMercatorQuad"], (5, 9), None))
        verdicts = build_plan(seeder, jobs, "png", None).verdicts
        seen: list[int] = []
        on_dask = ExecutorOptions(workers=1)
        # the workers plan their batches themselves: the same verdicts as the plan's
        first = seed(cached, jobs, "png", {"colormap": None}, 1, seen.append, None, on_dask,
                     plan=True)  # fmt: skip
        assert sum(seen) == len(jobs) == first.rendered + first.uniform + first.cached
        planned = sum(v.kind != DENSE for v in verdicts.values())
        assert first.cached == 0 and first.rendered and first.uniform == planned > 0
        again = seed(cached, jobs, "png", {"colormap": None}, 1, None, verdicts, on_dask)
        assert again.cached == len(jobs) and again.rendered == again.uniform == 0
        assert_cached_as_requested(seeder, plain, jobs)
    finally:
        c.dispose()


@pytest.mark.parametrize("where", ["here", "workers"])
def test_a_seed_plans_batch_by_batch_as_the_planner_does(
    settings: Settings, tmp_path: Path, where: str
) -> None:
    """With ``plan``, the batches are classified as the seed goes, by this process as it
    hands them to 2 worker processes or by the workers themselves: as many tiles written
    from the plan and rendered as the whole plan says, and every tile byte for byte as
    rendered on request."""
    from sdmatlas.serve.seed import seed

    cached = settings.model_copy(update={"tile_cache": ["disk"], "data_dir": tmp_path})
    c = Catalog.from_settings(cached)
    try:
        seeder, plain = Services.build(cached, c), Services.build(settings, c)
        jobs = list(plan(seeder, _layers()[1::4], ["WebMercatorQuad"], (5, 9), None))
        kinds = Counter(v.kind for v in build_plan(seeder, jobs, "png", None).verdicts.values())
        svc = seeder if where == "here" else None
        report = seed(cached, jobs, "png", {"colormap": None}, 2, plan=True, svc=svc)
        assert (report.rendered, report.uniform) == (kinds[DENSE], kinds[EMPTY] + kinds[UNIFORM])
        assert kinds[UNIFORM] and kinds[EMPTY] and kinds[DENSE]
        assert_cached_as_requested(seeder, plain, jobs)
    finally:
        c.dispose()


def test_zooms_beyond_the_layers_range_are_refused(svc: Services) -> None:
    from sdmatlas.errors import InvalidInputError
    from sdmatlas.serve.seed import MAX_OVERZOOM
    from sdmatlas.serve.tiles.core import zoom_range

    layer = f"{KEY}:species:1"
    _, hi = zoom_range(svc, svc.layers.resolve(layer), "WebMercatorQuad")
    assert list(plan(svc, [layer], ["WebMercatorQuad"], (hi, hi + MAX_OVERZOOM), None))
    with pytest.raises(InvalidInputError, match=f"native {hi}"):
        list(plan(svc, [layer], ["WebMercatorQuad"], (hi, hi + MAX_OVERZOOM + 1), None))
    with pytest.raises(InvalidInputError, match="beyond layer"):
        list(plan(svc, [layer], ["EuropeanETRS89_LAEAQuad"], (0, 30), None))


def test_a_sample_covering_every_dense_tile_gives_the_exact_bytes(svc: Services) -> None:
    """With a sample as large as the dense tiles, each zoom's mean is over all of them:
    the plan's bytes are then the rendered tiles' exact total (empty and uniform tiles
    are exact already); a small sample draws from every zoom that has dense tiles."""
    from sdmatlas.serve.seed_plan import calibrate, sample_dense

    layers = [f"{KEY}:species:{i}" for i in (1, 5, 9)] + [f"{KEY}:indicator:richness"]
    jobs = list(plan(svc, layers, TMS, (5, 8), None))
    p = build_plan(svc, jobs, "png", None)
    dense = sum(r.dense for r in p.rows.values())
    measured = sample_dense(svc, p, "png", None, n=dense)
    assert measured is not None and measured.tiles == dense
    calibrate(p, measured)
    exact = sum(len(_render(svc, job, "png")) for job in jobs)
    assert p.total.bytes == pytest.approx(exact, rel=1e-9)
    assert p.total.seconds > 0
    zooms = {z for (_, _, z, _, _), v in p.verdicts.items() if v.kind == DENSE}
    small = sample_dense(svc, p, "png", None, n=len(zooms))
    assert small is not None and set(small.tile_bytes) == zooms


def test_a_tile_index_map_is_counted_once_per_tile_position(svc: Services) -> None:
    """A seed builds a tile's index map once for all its layers: the time estimate counts
    it once per tile position holding a dense tile, besides each tile's own time and
    every tile's write (a made-up sample, so the total is known exactly)."""
    from sdmatlas.serve.seed_plan import WRITE_SECONDS, Sample, calibrate

    layers = [f"{KEY}:species:{i}" for i in (1, 5, 9)] + [f"{KEY}:indicator:richness"]
    jobs = list(plan(svc, layers, TMS, (5, 8), None))
    p = build_plan(svc, jobs, "png", None)
    zooms = range(5, 9)
    calibrate(p, Sample(4, dict.fromkeys(zooms, 1000.0), dict.fromkeys(zooms, 0.01),
                        dict.fromkeys(zooms, 1.0)))  # fmt: skip
    dense = [key for key, v in p.verdicts.items() if v.kind == DENSE]
    positions = {key[1:] for key in dense}
    assert len(positions) < len(dense)  # layers share tiles: the case that matters
    expected = len(jobs) * WRITE_SECONDS + len(dense) * 0.01 + len(positions) * 1.0
    assert p.total.seconds == pytest.approx(expected, rel=1e-9)
    p.overhead, p.processes, p.plan_seconds = 2.0, 4, 3.0  # the workers plan too
    assert p.wall_seconds == pytest.approx(2.0 + (expected + 3.0) / 4)
    assert p.as_json()["wall_seconds"] == round(2.0 + (expected + 3.0) / 4, 2)


def test_seed_workers_fork_only_from_a_process_without_threads() -> None:
    """Workers fork (starting with every module imported) from a process running one
    thread; from one running others, they are spawned."""
    import threading

    from sdmatlas.serve.seed import start_method

    code = "from sdmatlas.serve.seed import start_method; print(start_method())"
    alone = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert alone.stdout.strip() == "fork", alone.stderr
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        assert start_method() == "spawn"
    finally:
        stop.set()
        other.join()


def test_primed_layers_are_resolved_without_the_catalog(settings: Settings) -> None:
    """A seed sends its workers the layers it resolved: a worker then asks the catalog
    nothing (here: a resolver whose catalog is gone still resolves them)."""
    from sdmatlas.errors import DatabaseUnavailableError
    from sdmatlas.serve.tiles.layers import LayerResolver

    c = Catalog.from_settings(settings)
    ref = LayerResolver(c, 60.0).resolve(f"{KEY}:species:1")
    c.dispose()
    gone = Catalog(f"sqlite:///{Path(settings.data_dir) / 'nowhere' / 'x.sqlite'}")
    worker = LayerResolver(gone, 60.0)
    worker.prime([ref])
    assert worker.resolve(ref.id) == ref
    with pytest.raises(DatabaseUnavailableError):  # not primed: the catalog is asked
        worker.resolve(f"{KEY}:species:2")


def test_the_plan_command(settings: Settings, tmp_path: Path) -> None:
    env = {"SDMATLAS_DATABASE_URL": str(settings.database_url),
           "SDMATLAS_DATA_DIR": str(settings.data_dir), "PATH": str(BIN)}  # fmt: skip
    out = tmp_path / "plan.json"
    layers = [f"{KEY}:species:1", f"{KEY}:indicator:protected_count"]
    cmd = [
        str(BIN / "sdmatlas"),
        "seed",
        *layers,
        "--zoom",
        "5-8",
        "--plan",
        "--sample",
        "8",
        "--plan-json",
        str(out),
    ]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())
    t = doc["total"]
    assert t["tiles"] == t["empty"] + t["uniform"] + t["dense"] > 0
    assert {row["layer"] for row in doc["layers"]} == set(layers)
    assert 1 <= doc["sample"]["tiles"] <= 8 + 4  # 8, and at least one of each zoom 5-8
    assert "total" in r.stdout + r.stderr and "uniform" in r.stdout + r.stderr
    bad = subprocess.run([str(BIN / "sdmatlas"), "seed", f"{KEY}:species:999", "--plan"],
                         env=env, capture_output=True, text=True)  # fmt: skip
    assert bad.returncode == 2 and "999" in bad.stderr + bad.stdout


# -- popularity-driven seeding -------------------------------------------------------------------


def _log_line(path: str, status: int = 200, ts: str = "2026-11-20T10:00:00") -> str:
    """An access-log line as the API writes it (its JSON formatter, its fields)."""
    import logging
    import time

    from sdmatlas.serve.observe.logs import JSONFormatter

    rec = logging.makeLogRecord({"name": "sdmatlas.access", "levelname": "INFO", "msg": "request",
                                 "path": path, "status": status, "method": "GET", "route": "tile",
                                 "created": time.mktime(time.strptime(ts, "%Y-%m-%dT%H:%M:%S")),
                                 "msecs": 0.0})  # fmt: skip
    f = JSONFormatter()
    f.converter = time.localtime  # mktime above is local time
    return f.format(rec)


def _access_log(path: Path, a: str = f"{KEY}:species:2", b: str = f"{KEY}:species:7") -> Path:
    t = "/tiles/{}/WebMercatorQuad/{}/{}/{}.png"
    lines = [_log_line(t.format(a, 7, 68, 42))] * 5
    lines += [_log_line(t.format(b, 7, 68, 42))] * 3
    lines += [_log_line(t.format(b, 8, 137, 85))] * 4
    lines += [_log_line(t.format(f"{KEY}:species:9", 7, 68, 42), ts="2026-10-01T10:00:00")] * 9
    lines += [_log_line(t.format(f"{KEY}:species:4", 7, 68, 42), status=404)] * 9
    lines += [_log_line("/point"), "not json", _log_line(t.format("old-1:species:1", 7, 1, 1))]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_access_logs_rank_layers_and_tiles(tmp_path: Path) -> None:
    import gzip

    from sdmatlas.errors import InvalidInputError
    from sdmatlas.serve.popularity import parse_time, read_access_logs

    log = _access_log(tmp_path / "access.log")
    pop = read_access_logs([log])
    assert pop.layers[f"{KEY}:species:9"] == 9 and f"{KEY}:species:4" not in pop.layers  # 404s
    assert pop.unreadable == 1
    recent = read_access_logs([log], since=parse_time("2026-11-01"))
    assert recent.top_layers(2) == [f"{KEY}:species:7", f"{KEY}:species:2"]
    assert recent.top_tiles(1) == [(f"{KEY}:species:2", "WebMercatorQuad", 7, 68, 42)]
    gz = tmp_path / "access.log.gz"
    gz.write_bytes(gzip.compress(log.read_bytes()))
    assert read_access_logs([gz]).layers == pop.layers
    for bad, words in [(tmp_path / "missing.log", "cannot read the log file"),
                       (tmp_path, "is a directory")]:  # fmt: skip
        with pytest.raises(InvalidInputError, match=words):
            read_access_logs([bad])
    (tmp_path / "empty.log").write_text(_log_line("/point") + "\n")
    with pytest.raises(InvalidInputError, match="no answered tile request"):
        read_access_logs([tmp_path / "empty.log"])
    with pytest.raises(InvalidInputError, match="ISO 8601"):
        parse_time("last week")


def test_popular_seeding_from_the_command_line(
    settings: Settings, svc: Services, tmp_path: Path
) -> None:
    env = {"SDMATLAS_DATABASE_URL": str(settings.database_url),
           "SDMATLAS_DATA_DIR": str(settings.data_dir), "PATH": str(BIN)}  # fmt: skip
    # two species with data (the others have no tile to seed)
    a, b = [lid for lid in _layers()[:30] if svc.layers.resolve(lid).bbox is not None][:2]
    log = _access_log(tmp_path / "access.log", a, b)
    sd = str(BIN / "sdmatlas")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sd, "seed", *args], env=env, capture_output=True, text=True)

    out = tmp_path / "plan.json"
    r = run("--popular", "2", "--log", str(log), "--since", "2026-11-01", "--zoom", "6-7",
            "--plan", "--plan-json", str(out))  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert {row["layer"] for row in json.loads(out.read_text())["layers"]} == {a, b}
    r = run("--popular", "3", "--by", "tiles", "--log", str(log), "--plan", "--plan-json", str(out))
    assert r.returncode == 0, r.stderr
    assert json.loads(out.read_text())["total"]["tiles"] == 3  # old-1 (not catalogued) left out
    for args, words in [(["--log", str(tmp_path / "nope.log")], "cannot read the log file"),
                        (["--log", str(log), "--by", "zoom"], "--by"),
                        (["--log", str(log), "--since", "yesterday"], "ISO 8601")]:  # fmt: skip
        bad = run("--popular", "2", *args, "--plan")
        assert bad.returncode == 2 and words in bad.stderr + bad.stdout, (args, bad.stderr)
