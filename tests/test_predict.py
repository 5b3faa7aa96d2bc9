"""The prediction pipeline: exactness, chunking, Dask, resume, and refusal of bad input."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml

from conftest import World, cube_chunk_bytes, wait_for_markers
from sdmatlas.errors import (
    CovariateError,
    IncompleteReleaseError,
    ModelMismatchError,
    NotFoundError,
    ReleaseExistsError,
)
from sdmatlas.models import load_adapter, load_card
from sdmatlas.predict.covariates import CovariateStack
from sdmatlas.predict.cube import open_cube
from sdmatlas.predict.inputs import encode
from sdmatlas.predict.pipeline import PredictOptions, predict
from sdmatlas.quantize import NODATA, quantize
from sdmatlas.territory import Territory

SYNC = PredictOptions(workers=0, batch_size=1000)


def brute_force(card_path: Path, world: World) -> np.ndarray:
    """Per-pixel prediction with no chunking: encode the whole grid padded by the
    patch halo, cut one patch per territory pixel with plain slicing, run the model."""
    card = load_card(card_path)
    g, h, p = world.grid, card.halo, card.patch_size
    stack = CovariateStack(world.covariates)
    windows = {
        i.name: stack.read(i.name, g, -h, g.height + h, -h, g.width + h) for i in card.inputs
    }
    enc = encode(card, windows)
    rows, cols = np.nonzero(world.territory.mask)
    x = np.stack([enc[:, r : r + p, c : c + p] for r, c in zip(rows, cols, strict=True)])
    probs = load_adapter(card).predict(x)
    out = np.full((card.n_species, *g.shape), NODATA, dtype=np.uint8)
    out[:, rows, cols] = quantize(probs).T
    return out


@pytest.fixture(scope="module")
def reference(demo_card: Path, coast: World) -> np.ndarray:
    return brute_force(demo_card, coast)


def with_chunk(world: World, chunk: int) -> Territory:
    g = world.grid.model_copy(update={"chunk": chunk})
    return Territory(grid=g, mask=world.territory.mask, name="coast")


@pytest.mark.slow
@pytest.mark.parametrize("chunk", [32, 17, 64, 128])
def test_cube_equals_brute_force_prediction(
    tmp_path: Path, demo_card: Path, coast: World, reference: np.ndarray, chunk: int
) -> None:
    summary = predict(
        demo_card, coast.covariates, with_chunk(coast, chunk), tmp_path / "c.zarr", SYNC
    )
    cube = open_cube(summary.cube)
    assert cube.is_complete
    got = cube.read()
    assert got.shape == reference.shape
    assert np.array_equal(got, reference)
    assert summary.pixels == int(coast.territory.mask.sum())
    assert summary.computed == summary.total_chunks


def test_sea_is_nodata_and_land_is_predicted(tmp_path: Path, demo_card: Path, coast: World) -> None:
    predict(demo_card, coast.covariates, coast.territory, tmp_path / "c.zarr", SYNC)
    codes = open_cube(tmp_path / "c.zarr").read()
    m = coast.territory.mask
    assert (codes[:, ~m] == NODATA).all()
    assert (codes[:, m] <= 254).all()


def test_run_metadata_is_recorded(tmp_path: Path, demo_card: Path, coast: World) -> None:
    predict(demo_card, coast.covariates, coast.territory, tmp_path / "c.zarr", SYNC)
    meta = open_cube(tmp_path / "c.zarr").meta
    assert meta["status"] == "complete"
    assert meta["model"]["name"] == "demo-sdm" and meta["model"]["version"] == "1.0.0"
    assert len(meta["inputs"]["model"]) == 64
    assert set(meta["inputs"]["covariates"]) == {
        "elevation",
        "temperature",
        "precipitation",
        "landcover",
    }
    assert meta["grid"]["chunk"] == 32 and meta["grid"]["crs"] == "EPSG:3035"
    assert meta["encoding"]["nodata"] == 255
    (run,) = meta["runs"]
    with_land = sum(
        coast.territory.mask[w.row0 : w.row1, w.col0 : w.col1].any() for w in coast.grid.chunks()
    )
    assert with_land < 9, "the fixture has an all-sea chunk, which is skipped"
    assert run["chunks_computed"] == run["chunks_total"] == with_land
    assert set(run["timings"]) == {"read_s", "model_s", "write_s"}


def test_cube_opens_in_xarray_with_its_georeferencing(
    tmp_path: Path, demo_card: Path, coast: World
) -> None:
    xr = pytest.importorskip("xarray")
    predict(demo_card, coast.covariates, coast.territory, tmp_path / "c.zarr", SYNC)
    ds = xr.open_zarr(tmp_path / "c.zarr", consolidated=False, mask_and_scale=False)
    assert ds["probability"].dims == ("species", "y", "x")
    assert float(ds["x"][0]) == coast.grid.x0 + coast.grid.res / 2
    assert (
        "EPSG" in ds["spatial_ref"].attrs["crs_wkt"] or "LAEA" in ds["spatial_ref"].attrs["crs_wkt"]
    )


@pytest.mark.slow
def test_dask_cluster_of_two_workers_gives_the_same_cube(
    tmp_path: Path, demo_card: Path, coast: World, reference: np.ndarray
) -> None:
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        opts = PredictOptions(scheduler=cluster.scheduler_address, batch_size=1000)
        predict(demo_card, coast.covariates, coast.territory, tmp_path / "d.zarr", opts)
    assert np.array_equal(open_cube(tmp_path / "d.zarr").read(), reference)


@pytest.mark.slow
def test_workers_running_several_tasks_at_once(
    tmp_path: Path, demo_card: Path, coast: World, reference: np.ndarray
) -> None:
    """An external cluster may run several tasks per worker process: covariate reads
    and model sessions must be safe across threads."""
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=1, threads_per_worker=4, processes=True, dashboard_address=None
    ) as cluster:
        opts = PredictOptions(scheduler=cluster.scheduler_address, batch_size=500)
        predict(demo_card, coast.covariates, with_chunk(coast, 16), tmp_path / "t.zarr", opts)
    assert np.array_equal(open_cube(tmp_path / "t.zarr").read(), reference)


@pytest.mark.slow
@pytest.mark.parametrize(
    "options",
    [
        pytest.param(PredictOptions(workers=2, batch_size=1000), id="local-cluster-default"),
        pytest.param(PredictOptions(workers=0, halo=7), id="larger-halo"),
        pytest.param(PredictOptions(workers=0, batch_size=1), id="batch-of-one"),
    ],
)
def test_options_that_do_not_change_the_cube(
    tmp_path: Path, demo_card: Path, coast: World, reference: np.ndarray, options: PredictOptions
) -> None:
    predict(demo_card, coast.covariates, coast.territory, tmp_path / "c.zarr", options)
    assert np.array_equal(open_cube(tmp_path / "c.zarr").read(), reference)


def _cli(world: World, card: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "sdmatlas",
        "predict",
        "--card",
        str(card),
        "--territory",
        str(world.territory_path),
        "--covariates",
        str(world.root / "covariates"),
        "--out",
        str(out),
        "--chunk",
        str(world.grid.chunk),
        *extra,
    ]


@pytest.mark.slow
def test_killed_run_resumes_to_the_identical_cube(
    tmp_path: Path, demo_card: Path, many_chunks: World
) -> None:
    world = many_chunks
    full = tmp_path / "full.zarr"
    subprocess.run(_cli(world, demo_card, full, "--workers", "2"), check=True, capture_output=True)
    total = len(open_cube(full).done_chunks())
    assert total > 50

    out = tmp_path / "killed.zarr"
    proc = subprocess.Popen(
        _cli(world, demo_card, out, "--workers", "2"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    wait_for_markers(out, proc, timeout=120)
    os.killpg(proc.pid, signal.SIGKILL)  # the CLI and its Dask workers, all at once
    proc.wait()
    done_before = len(open_cube(out).done_chunks())
    assert 0 < done_before < total, f"the kill must land mid-run ({done_before}/{total})"
    assert open_cube(out).status == "running"
    with pytest.raises(IncompleteReleaseError, match="resume"):
        open_cube(out).read()

    refused = subprocess.run(_cli(world, demo_card, out), capture_output=True, text=True)
    assert refused.returncode == 2 and "--resume" in refused.stderr

    subprocess.run(
        _cli(world, demo_card, out, "--workers", "2", "--resume"), check=True, capture_output=True
    )
    cube = open_cube(out)
    assert cube.is_complete
    last = cube.meta["runs"][-1]
    assert last["chunks_already_done"] == done_before
    assert last["chunks_computed"] == total - done_before
    assert cube_chunk_bytes(out) == cube_chunk_bytes(full)  # no stray *.partial left either


def test_resume_of_a_complete_cube_does_nothing(
    tmp_path: Path, demo_card: Path, coast: World
) -> None:
    predict(demo_card, coast.covariates, coast.territory, tmp_path / "c.zarr", SYNC)
    again = predict(
        demo_card,
        coast.covariates,
        coast.territory,
        tmp_path / "c.zarr",
        PredictOptions(workers=0, resume=True),
    )
    assert again.computed == 0 and again.already_done == again.total_chunks


# -- bad input ------------------------------------------------------------------------------


def rewrite(src: Path, dst: Path, **profile_changes: object) -> Path:
    with rasterio.open(src) as s:
        data, profile = s.read(), s.profile
    profile.update(driver="GTiff", **profile_changes)
    with rasterio.open(dst, "w", **profile) as d:
        d.write(data)
    return dst


def predict_with(demo_card: Path, coast: World, tmp_path: Path, name: str, path: Path) -> None:
    """Predict the coast window with covariate ``name`` replaced by ``path``."""
    predict(demo_card, {**coast.covariates, name: path}, coast.territory, tmp_path / "c.zarr", SYNC)


def test_missing_covariate(tmp_path: Path, demo_card: Path, coast: World) -> None:
    covs = {k: v for k, v in coast.covariates.items() if k != "precipitation"}
    with pytest.raises(ModelMismatchError, match=r"needs covariates \['precipitation'\]"):
        predict(demo_card, covs, coast.territory, tmp_path / "c.zarr", SYNC)
    assert not (tmp_path / "c.zarr").exists()


def test_covariate_in_another_crs(tmp_path: Path, demo_card: Path, coast: World) -> None:
    bad = rewrite(coast.covariates["elevation"], tmp_path / "elevation.tif", crs="EPSG:3857")
    with pytest.raises(ModelMismatchError, match="'elevation' is in EPSG:3857"):
        predict_with(demo_card, coast, tmp_path, "elevation", bad)


def test_covariate_at_another_resolution(tmp_path: Path, demo_card: Path, coast: World) -> None:
    with rasterio.open(coast.covariates["temperature"]) as s:
        t = s.transform
    from affine import Affine

    bad = rewrite(
        coast.covariates["temperature"],
        tmp_path / "t.tif",
        transform=Affine(250.0, 0, t.c, 0, -250.0, t.f),
    )
    with pytest.raises(ModelMismatchError, match=r"resolution 250.0"):
        predict_with(demo_card, coast, tmp_path, "temperature", bad)


def test_misaligned_covariate(tmp_path: Path, demo_card: Path, coast: World) -> None:
    with rasterio.open(coast.covariates["temperature"]) as s:
        t = s.transform
    bad = rewrite(
        coast.covariates["temperature"], tmp_path / "t.tif", transform=t @ t.translation(0.5, 0)
    )
    with pytest.raises(ModelMismatchError, match="not aligned"):
        predict_with(demo_card, coast, tmp_path, "temperature", bad)


def test_grid_at_another_resolution_than_the_model(
    tmp_path: Path, demo_card: Path, coast: World
) -> None:
    g = coast.grid.model_copy(update={"res": 1000.0, "width": 45, "height": 35})
    terr = Territory(grid=g, mask=np.ones(g.shape, bool))
    with pytest.raises(ModelMismatchError, match=r"trained at 500.0 m resolution"):
        predict(demo_card, coast.covariates, terr, tmp_path / "c.zarr", SYNC)


def test_covariates_that_do_not_cover_the_territory(
    tmp_path: Path, demo_card: Path, coast: World
) -> None:
    g = coast.grid.model_copy(update={"x0": coast.grid.x0 - 100 * 500})
    terr = Territory(grid=g, mask=np.ones(g.shape, bool))
    with pytest.raises(CovariateError, match="does not cover the territory"):
        predict(demo_card, coast.covariates, terr, tmp_path / "c.zarr", SYNC)


def test_halo_smaller_than_the_patch_needs(tmp_path: Path, demo_card: Path, coast: World) -> None:
    with pytest.raises(ModelMismatchError, match="patch size 9 needs a halo of 4 pixels, got 2"):
        predict(
            demo_card,
            coast.covariates,
            coast.territory,
            tmp_path / "c.zarr",
            PredictOptions(workers=0, halo=2),
        )


def test_species_count_mismatch_is_refused_before_work(
    tmp_path: Path, demo_card: Path, coast: World
) -> None:
    data = yaml.safe_load(demo_card.read_text())
    data["species"] = data["species"][:150]
    for f in [data["file"], *data["alternates"].values()]:
        shutil.copy(demo_card.parent / f, tmp_path / f)
    (tmp_path / "card.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ModelMismatchError, match="returns 200 outputs but the card lists 150"):
        predict(
            tmp_path / "card.yaml", coast.covariates, coast.territory, tmp_path / "c.zarr", SYNC
        )
    assert not (tmp_path / "c.zarr").exists()


def test_nan_in_covariates_on_the_territory(tmp_path: Path, demo_card: Path, coast: World) -> None:
    src = coast.covariates["precipitation"]
    with rasterio.open(src) as s:
        data, profile = s.read(1), s.profile
    rows, cols = np.nonzero(coast.territory.mask)
    # a territory pixel in the last chunk row; offset by the covariate margin of 16 pixels
    r, c = rows[-1] + 16, cols[-1] + 16
    data[r, c] = np.nan
    profile.update(driver="GTiff")
    bad = tmp_path / "precipitation.tif"
    with rasterio.open(bad, "w", **profile) as d:
        d.write(data, 1)
    with pytest.raises(CovariateError, match="'precipitation' has NaN or nodata on 1 territory"):
        predict_with(demo_card, coast, tmp_path, "precipitation", bad)
    cube = open_cube(tmp_path / "c.zarr")
    assert cube.status == "running"  # never looks complete
    assert "CovariateError" in cube.meta["runs"][-1]["error"]
    with pytest.raises(IncompleteReleaseError):
        cube.read()


def test_output_holding_another_release_is_left_untouched(
    tmp_path: Path, demo_card: Path, coast: World, many_chunks: World
) -> None:
    out = tmp_path / "c.zarr"
    predict(demo_card, coast.covariates, coast.territory, out, SYNC)
    before = cube_chunk_bytes(out)
    meta_before = (out / "zarr.json").read_bytes()
    with pytest.raises(ReleaseExistsError, match=r"holds another release.*territory"):
        predict(
            demo_card,
            many_chunks.covariates,
            many_chunks.territory,
            out,
            PredictOptions(workers=0, resume=True),
        )
    with pytest.raises(ReleaseExistsError, match="is complete; pass --resume"):
        predict(demo_card, coast.covariates, coast.territory, out, SYNC)
    assert cube_chunk_bytes(out) == before
    assert (out / "zarr.json").read_bytes() == meta_before


def test_output_that_is_not_a_cube(tmp_path: Path, demo_card: Path, coast: World) -> None:
    out = tmp_path / "precious"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(ReleaseExistsError, match="is not an sdmatlas cube"):
        predict(demo_card, coast.covariates, coast.territory, out, SYNC)
    assert (out / "notes.txt").read_text() == "keep me"


def test_missing_files_are_not_found(tmp_path: Path, demo_card: Path, coast: World) -> None:
    with pytest.raises(NotFoundError, match="does not exist"):
        predict(tmp_path / "nope.yaml", coast.covariates, coast.territory, tmp_path / "c", SYNC)
    with pytest.raises(NotFoundError, match=r"file .*nope.tif does not exist"):
        predict(
            demo_card,
            {**coast.covariates, "elevation": tmp_path / "nope.tif"},
            coast.territory,
            tmp_path / "c",
            SYNC,
        )


def test_cli_reports_errors_in_one_line(tmp_path: Path, demo_card: Path, coast: World) -> None:
    res = subprocess.run(
        _cli(coast, demo_card, tmp_path / "c.zarr", "--halo", "1"), capture_output=True, text=True
    )
    assert res.returncode == 2
    assert "error: patch size 9 needs a halo of 4 pixels, got 1" in " ".join(res.stderr.split())
    assert "Traceback" not in res.stderr


def test_cli_info(tmp_path: Path, demo_card: Path, coast: World) -> None:
    out = tmp_path / "c.zarr"
    subprocess.run(_cli(coast, demo_card, out, "--workers", "0"), check=True, capture_output=True)
    res = subprocess.run(
        [sys.executable, "-m", "sdmatlas", "info", str(out)],
        check=True,
        capture_output=True,
        text=True,
    )
    info = json.loads(res.stdout)
    assert info["status"] == "complete" and info["n_species"] == 200
    assert info["chunks_done"] == info["runs"][0]["chunks_total"]


def test_prediction_reads_the_territory_by_windows_never_whole(
    tmp_path: Path, demo_card: Path, coast: World, reference: np.ndarray
) -> None:
    """The territory comes from its mask raster (the real reads), recorded: planning
    reads one row of chunks at a time, each task its own chunk, nothing reads it whole."""
    from dataclasses import dataclass, field

    from sdmatlas.grid import Grid
    from sdmatlas.territory import MaskSource, RasterMask, territory_from_mask_raster

    @dataclass(frozen=True)
    class Recorded(MaskSource):
        inner: MaskSource
        shapes: list[tuple[int, int]] = field(default_factory=list)

        def read(self, grid: Grid, rows: slice, cols: slice) -> np.ndarray:
            out = self.inner.read(grid, rows, cols)
            self.shapes.append(out.shape)
            return out

    loaded = territory_from_mask_raster(coast.territory_path, chunk=16)
    assert isinstance(loaded.source, RasterMask)
    spy = Recorded(loaded.source)
    terr = Territory(loaded.grid, name="coast", source=spy)
    predict(demo_card, coast.covariates, terr, tmp_path / "c.zarr", PredictOptions(workers=0))
    assert np.array_equal(open_cube(tmp_path / "c.zarr").read(), reference)
    g = loaded.grid
    assert spy.shapes and max(h * w for h, w in spy.shapes) <= g.chunk * g.width
    assert all(h <= g.chunk for h, _ in spy.shapes)
    tasks = [s for s in spy.shapes if s[1] <= g.chunk]
    assert len(tasks) == len(open_cube(tmp_path / "c.zarr").done_chunks())
