"""Benchmark: predict on SLURM against the same predict on a LocalCluster (issue 15).

    .venv/bin/python bench/cluster.py [--size 4096] [--repeat 3]

A single-node SLURM is started for the run (sdmatlas.testing.localslurm: Debian's
slurmctld, slurmd and munge). Two cases, each run ``--repeat`` times with the two
executors alternating, end to end as ``sdmatlas predict`` runs them (the executor's
start-up is counted: on SLURM, job submission and worker start):

* **demo**: the demo model over the demo territory;
* **larger**: a synthetic ``--size``^2 territory at 50 m with a trivial model of the demo
  model's shape (16 species; bench/scale.py's inputs).

Both executors get 2 single-threaded worker processes: a LocalCluster of 2, or 2
one-core SLURM jobs. Reported: the median seconds of each and their ratio (goal:
SLURM / LocalCluster <= 1.15 on the larger case). Results go to
bench/results/cluster-<date>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
import scale
from sdmatlas.cluster import SlurmProfile
from sdmatlas.predict.pipeline import PredictOptions, predict
from sdmatlas.territory import load_territory
from sdmatlas.testing.localslurm import LocalSlurm

ROOT = Path(__file__).resolve().parents[1]


def inputs(size: int) -> dict[str, dict[str, Any]]:
    from sdmatlas.demo import DEMO_CARD
    from sdmatlas.demo.build import DemoPaths, build_demo

    paths = DemoPaths(ROOT / "data" / "demo")
    if not paths.exists():
        build_demo(paths.root)
    big = scale.make_inputs(size)
    return {
        "demo": {"card": DEMO_CARD, "territory": paths.territory,
                 "covariates": paths.covariate_paths()},
        "larger": {"card": Path(big["card"]), "territory": Path(big["territory"]),
                   "covariates": {k: Path(v) for k, v in big["covariates"].items()}},
    }  # fmt: skip


def run(case: dict[str, Any], options: PredictOptions, out: Path) -> float:
    shutil.rmtree(out, ignore_errors=True)
    terr = load_territory(case["territory"], chunk=scale.CHUNK)
    t0 = time.perf_counter()
    predict(case["card"], case["covariates"], terr, out, options)
    seconds = time.perf_counter() - t0
    shutil.rmtree(out, ignore_errors=True)
    return seconds


def build_parser() -> argparse.ArgumentParser:
    ap = common.parser(__doc__)
    ap.add_argument("--size", type=int, default=4096, help="edge of the larger territory (px)")
    ap.add_argument("--repeat", type=int, default=3)
    return ap


def output_path(args: argparse.Namespace) -> Path:
    return common.results_file(args.results, "cluster")


def main() -> None:
    args = build_parser().parse_args()
    target = output_path(args)
    cases = inputs(args.size)
    work = Path(tempfile.mkdtemp(prefix="sdmatlas-bench-cluster-"))
    results: dict[str, Any] = {"machine": platform.platform(), "cpus": os.cpu_count(),
                               "date": time.strftime("%Y-%m-%d"), "cases": {}}  # fmt: skip
    with LocalSlurm(cpus=4) as slurm:
        os.environ.update(slurm.env())
        profile = SlurmProfile(partition=slurm.partition, cores=1, memory="4GiB", jobs=2,
                               walltime="01:00:00", interface="lo",
                               log_directory=str(work / "logs"))  # fmt: skip
        executors = {"local": PredictOptions(workers=2),
                     "slurm": PredictOptions(cluster=profile)}  # fmt: skip
        for name, case in cases.items():
            times: dict[str, list[float]] = {k: [] for k in executors}
            for i in range(args.repeat):
                for label, options in executors.items():
                    s = run(case, options, work / f"{name}-{label}.zarr")
                    times[label].append(s)
                    print(f"{name} {label} run {i + 1}: {s:.1f} s", flush=True)
                    slurm.wait_for_jobs(120)  # worker jobs ended before the next run
            med = {k: statistics.median(v) for k, v in times.items()}
            results["cases"][name] = {"seconds": times, "median_s": med,
                                      "slurm_over_local": med["slurm"] / med["local"]}  # fmt: skip
            print(f"{name}: local {med['local']:.1f} s, slurm {med['slurm']:.1f} s, ratio "
                  f"{med['slurm'] / med['local']:.3f}", flush=True)  # fmt: skip
    shutil.rmtree(work, ignore_errors=True)
    target.write_text(json.dumps(results, indent=2))
    print(f"results: {target}")


if __name__ == "__main__":
    main()
