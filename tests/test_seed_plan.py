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
            f"{KEY}:indicator:richness", f"{KEY}:indicator:protected_count"]  # fmt: skip


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
        nodata = values == 255 if kind == "species" else np.isnan(values)
        if v.kind == EMPTY:
            assert nodata.all(), job
        elif v.kind == UNIFORM:
            assert not nodata.any() and (values == v.value).all(), (job, v)
        checked[v.kind] += 1
    assert checked[UNIFORM] > 50 and checked[EMPTY] > 10


def test_seeded_tiles_equal_requested_tiles(settings: Settings, tmp_path: Path) -> None:
    """Seeded from the plan into a disk cache: empty, uniform and dense tiles, PNG and
    WebP, byte for byte what a request renders; the uniform and empty ones unrendered."""
    cached = settings.model_copy(update={"tile_cache": ["disk"], "data_dir": tmp_path})
    c = Catalog.from_settings(cached)
    try:
        seeder, plain = Services.build(cached, c), Services.build(settings, c)
        for fmt in ("png", "webp"):
            jobs = list(plan(seeder, _layers()[::3], ["WebMercatorQuad"], (5, 9), None))
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
        "--plan-json",
        str(out),
    ]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())
    t = doc["total"]
    assert t["tiles"] == t["empty"] + t["uniform"] + t["dense"] > 0
    assert {row["layer"] for row in doc["layers"]} == set(layers)
    assert "total" in r.stdout + r.stderr and "uniform" in r.stdout + r.stderr
    bad = subprocess.run([str(BIN / "sdmatlas"), "seed", f"{KEY}:species:999", "--plan"],
                         env=env, capture_output=True, text=True)  # fmt: skip
    assert bad.returncode == 2 and "999" in bad.stderr + bad.stdout
