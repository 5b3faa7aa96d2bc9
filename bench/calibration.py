"""Benchmark: conformal species sets on the demo (issue 18's coverage goal).

    .venv/bin/python bench/calibration.py [--sites 8000] [--alphas 0.1,0.05] [--seeds 3]

Uses the demo of bench/ondemand.py (data/bench/ondemand/: its inputs and its published
release; run that first, or pass --release and --demo). Calibrates lambda on the demo's
own surveys that the model was not trained on (``split == test``, 1,589 sites x 200
species), then measures the coverage of the sets on fresh surveys drawn from the true
probabilities (``sdmatlas demo surveys``, new sites, other seeds), with the mean set
size. The goal: coverage within +-2 percentage points of 1 - alpha for alpha = 0.1 and
0.05. Results: bench/results/calibration-<date>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

WORK = common.ROOT / "data" / "bench" / "ondemand"


def build_parser() -> argparse.ArgumentParser:
    ap = common.parser(__doc__)
    ap.add_argument("--release", type=Path, default=WORK / "run" / "releases" / "demo-batch")
    ap.add_argument("--demo", type=Path, default=WORK / "demo")
    ap.add_argument("--sites", type=int, default=8000, help="fresh survey sites per draw")
    ap.add_argument("--alphas", default="0.1,0.05")
    ap.add_argument("--seeds", type=int, default=3, help="fresh survey draws")
    ap.add_argument(
        "--mondrian",
        action="store_true",
        help="also one lambda per IUCN category (Mondrian), per-group coverage",
    )
    return ap


def output_path(args: argparse.Namespace) -> Path:
    return common.results_file(args.results, "calibration")


def main() -> None:
    args = build_parser().parse_args()
    out_file = output_path(args)
    from sdmatlas.calibration import calibrate
    from sdmatlas.demo.build import DemoPaths, load_species, sample_surveys, write_surveys
    from sdmatlas.publish.species_csv import species_info_from_csv
    from sdmatlas.storage import open_release
    from sdmatlas.territory import load_territory

    if not (args.release / "zarr.json").exists() and not args.release.exists():
        raise SystemExit(f"no release at {args.release}: run bench/ondemand.py first")
    rel = open_release(str(args.release))
    demo = DemoPaths(args.demo)
    species = load_species(demo)
    terr = load_territory(demo.territory)
    fresh = []
    for k in range(args.seeds):
        path = WORK / f"fresh-surveys-{k}.csv"
        rows, cols, presence, _ = sample_surveys(species, terr, args.sites, 1000 + k, 0.0)
        write_surveys(path, terr.grid, species, rows, cols, presence, presence[:, 0] < 0)
        fresh.append(path)
    info = species_info_from_csv(demo.species, rel.species_ids.tolist())
    results: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d"),
        "release": str(args.release),
        "calibration_surveys": f"{demo.surveys} (split == test)",
        "fresh_sites_per_draw": args.sites,
        "alphas": {},
    }
    for alpha in (float(a) for a in args.alphas.split(",")):
        runs = []
        t0 = time.perf_counter()
        for path in fresh:
            r = calibrate(rel, demo.surveys, alpha, split="test", holdout=0.0, test=path,
                          info=info)  # fmt: skip
            runs.append(r)
        seconds = (time.perf_counter() - t0) / len(fresh)
        cov = [r["test"]["coverage"] for r in runs]
        results["alphas"][str(alpha)] = {
            "target": round(1 - alpha, 4),
            "lambda": runs[0]["rule"]["threshold"],
            "threshold_code": runs[0]["threshold_code"],
            "calibration_presences": runs[0]["calibration"]["presences"],
            "fresh_coverage": cov,
            "fresh_coverage_mean": round(statistics.mean(cov), 4),
            "within_2pp": all(abs(c - (1 - alpha)) <= 0.02 for c in cov),
            "mean_set_size": [r["test"]["mean_set_size"] for r in runs],
            "n_species": len(rel.species_ids),
            "seconds_per_calibration": round(seconds, 2),
        }
        row = results["alphas"][str(alpha)]
        row["fresh_coverage_by_status"] = _by_status(runs)
        if args.mondrian:
            m_runs = [
                calibrate(
                    rel,
                    demo.surveys,
                    alpha,
                    split="test",
                    holdout=0.0,
                    test=path,
                    info=info,
                    mondrian="iucn",
                )
                for path in fresh
            ]
            mcov = [r["test"]["coverage"] for r in m_runs]
            row["mondrian"] = {
                "lambdas": m_runs[0]["rule"]["groups"],
                "fresh_coverage": mcov,
                "mean_set_size": [r["test"]["mean_set_size"] for r in m_runs],
                "fresh_coverage_by_status": _by_status(m_runs),
            }
        print(json.dumps({alpha: row}), flush=True)
    out_file.write_text(json.dumps(results, indent=2))
    print(f"results: {out_file}")


def _by_status(runs: list[dict[str, Any]]) -> dict[str, float]:
    """Mean over the fresh draws of the coverage of each status group."""
    names = runs[0]["test"]["by_status"]
    return {
        n: round(statistics.mean(r["test"]["by_status"][n]["coverage"] for r in runs), 4)
        for n in names
    }


if __name__ == "__main__":
    main()
