"""Benchmark: prediction pipeline throughput against the bare model.

    .venv/bin/python bench/predict.py [--repeat 3]

On the demo territory (Northern Adriatic, 500 m, ~384k territory pixels,
200 species, 9 x 9 patches):

* bare model: the ONNX adapter over every territory patch, all patches already
  extracted in memory, in batches of 4096, with as many inference threads as
  cores: the ceiling for this model on this machine;
* pipeline: ``predict()`` end to end (read covariates, encode, patch, infer,
  quantise, write Zarr, mark done) on Dask, 1 worker x 2 threads and 2 workers x
  1 thread, on an already started LocalCluster (start-up reported separately).

Reports pixel-species per second, medians over ``--repeat`` runs, and the
ratio pipeline / bare. Results go to bench/results/predict-<date>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from sdmatlas.demo import DEMO_CARD
from sdmatlas.demo.build import DemoPaths, build_demo
from sdmatlas.models import load_adapter, load_card
from sdmatlas.predict.covariates import CovariateStack
from sdmatlas.predict.inputs import encode, patches
from sdmatlas.predict.pipeline import PredictOptions, predict
from sdmatlas.territory import load_territory

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

ROOT = Path(__file__).resolve().parents[1]
CARD = DEMO_CARD
BATCH = 4096


def bare_model(paths: DemoPaths, threads: int, repeat: int) -> dict[str, float]:
    card = load_card(CARD)
    terr = load_territory(paths.territory)
    g, h = terr.grid, card.halo
    stack = CovariateStack(paths.covariate_paths())
    enc = encode(
        card,
        {i.name: stack.read(i.name, g, -h, g.height + h, -h, g.width + h) for i in card.inputs},
    )
    rows, cols = np.nonzero(terr.mask)
    batches = [
        patches(enc, rows[i : i + BATCH], cols[i : i + BATCH], card.patch_size)
        for i in range(0, len(rows), BATCH)
    ]
    adapter = load_adapter(card, threads=threads)
    adapter.predict(batches[0])  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for b in batches:
            adapter.predict(b)
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {
        "seconds": med,
        "pixels": len(rows),
        "pixel_species_per_s": len(rows) * card.n_species / med,
    }


def pipeline(
    paths: DemoPaths, workers: int, threads: int, repeat: int, chunk: int
) -> dict[str, float]:
    from distributed import LocalCluster

    terr = load_territory(paths.territory, chunk=chunk)
    t0 = time.perf_counter()
    with LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        startup = time.perf_counter() - t0
        times, timings = [], []
        for _ in range(repeat):
            out = Path(tempfile.mkdtemp(prefix="sdm-bench-")) / "cube.zarr"
            opts = PredictOptions(
                scheduler=cluster.scheduler_address, batch_size=BATCH, threads_per_worker=threads
            )
            s = predict(CARD, paths.covariate_paths(), terr, out, opts)
            times.append(s.seconds)
            timings.append(s.timings)
            shutil.rmtree(out.parent)
    med = statistics.median(times)
    return {
        "workers": workers,
        "threads_per_worker": threads,
        "chunk": chunk,
        "cluster_startup_s": round(startup, 2),
        "seconds": med,
        "pixel_species_per_s": s.pixels * s.n_species / med,
        "task_time_split": timings[len(timings) // 2],
    }


def build_parser() -> argparse.ArgumentParser:
    ap = common.parser(__doc__)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "demo")
    return ap


def output_path(args: argparse.Namespace) -> Path:
    return common.results_file(args.results, "predict")


def main() -> None:
    args = build_parser().parse_args()
    out = output_path(args)
    paths = DemoPaths(args.data)
    if not paths.exists():
        build_demo(args.data)
    cores = os.cpu_count() or 1
    bare = bare_model(paths, threads=cores, repeat=args.repeat)
    runs = [
        pipeline(paths, 1, cores, args.repeat, chunk=256),
        pipeline(paths, cores, 1, args.repeat, chunk=256),
        pipeline(paths, cores, 1, args.repeat, chunk=128),
    ]
    result = {
        "date": dt.date.today().isoformat(),
        "machine": f"{platform.machine()}, {cores} cores, {platform.python_version()}",
        "bare_model": bare,
        "pipeline": runs,
        "ratios": {
            f"{r['workers']}w x {r['threads_per_worker']}t, chunk {r['chunk']}": round(
                r["pixel_species_per_s"] / bare["pixel_species_per_s"], 3
            )
            for r in runs
        },
    }
    out.write_text(json.dumps(result, indent=2))
    print(f"results in {out}")
    print(
        f"bare model ({cores} threads): {bare['pixel_species_per_s'] / 1e6:.2f} M pixel-species/s "
        f"({bare['pixels']:,} pixels in {bare['seconds']:.2f} s, median of {args.repeat})"
    )
    for r in runs:
        print(
            f"pipeline {r['workers']} worker(s) x {r['threads_per_worker']} thread(s), "
            f"chunk {r['chunk']}: "
            f"{r['pixel_species_per_s'] / 1e6:.2f} M pixel-species/s in {r['seconds']:.2f} s "
            f"(ratio {r['pixel_species_per_s'] / bare['pixel_species_per_s']:.2f}; "
            f"cluster start-up {r['cluster_startup_s']} s, not counted; "
            f"task time split {r['task_time_split']})"
        )


if __name__ == "__main__":
    main()
