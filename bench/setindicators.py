"""Benchmark: what the set-based indicators add to publish time (issue 18's goal: <= 25 %).

    .venv/bin/python bench/setindicators.py --base REV [--runs 2] [--species 10000]

Publishes the synthetic 10,000-species cube (512 x 512 px, bench/queries.py's, built
once under data/bench/) with the code of ``--base`` (a revision without the set-based
indicators, checked out in a temporary git worktree) and with this tree, alternately,
each in a fresh process with the tasks in-process, and reports the medians and their
ratio. This tree's run publishes with IUCN categories on every species (a mix as the
demo's) and a capped rule (top 50, the worst case: a partial sort per pixel).
Results: bench/results/setindicators-<date>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

SCRIPT = r"""
import dataclasses, sys, tempfile, time
from pathlib import Path
import numpy as np
from sdmatlas.predict.cube import open_cube
from sdmatlas.publish.indicators import SpeciesInfo
from sdmatlas.publish.release import PublishOptions, publish
cube, out, top_k = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
ids = np.asarray(open_cube(cube).species_ids, np.int64)
n = len(ids)
rng = np.random.default_rng(0)
kw = dict(ids=ids, protected=rng.random(n) < 0.1, invasive=rng.random(n) < 0.05,
          endemic=rng.random(n) < 0.08)
options = {}
if "species_set" in {f.name for f in dataclasses.fields(PublishOptions)}:  # this tree
    kw["iucn"] = rng.choice(np.array(["LC", "NT", "VU", "EN", "CR"], dtype=object), n,
                            p=[0.58, 0.18, 0.13, 0.08, 0.03])
    from sdmatlas.sets import SetRule
    options["species_set"] = SetRule(threshold=0.2, top_k=top_k or None)
t = time.perf_counter()
publish(cube, out, "r", SpeciesInfo(**kw), PublishOptions(**options))
print(time.perf_counter() - t)
"""


def build_parser() -> argparse.ArgumentParser:
    ap = common.parser(__doc__)
    ap.add_argument("--base", default="HEAD", help="revision without set indicators")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--species", type=int, default=10_000)
    ap.add_argument("--top-k", type=int, default=50, help="0: no cap")
    return ap


def output_path(args: argparse.Namespace) -> Path:
    return common.results_file(args.results, "setindicators")


def cube_of(n_species: int) -> Path:
    from sdmatlas.predict.cube import is_cube
    from sdmatlas.testing.synthetic import write_synthetic_cube

    cube = common.ROOT / "data" / "bench" / f"synthetic-{n_species}x512" / "cube.zarr"
    if not is_cube(cube):
        write_synthetic_cube(cube, n_species=n_species, size=512)
    return cube


def run(src: Path, cube: Path, top_k: int) -> float:
    out = Path(tempfile.mkdtemp(prefix="setind-"))
    try:
        env = {**os.environ, "PYTHONPATH": str(src)}
        r = subprocess.run([sys.executable, "-c", SCRIPT, str(cube), str(out), str(top_k)],
                           env=env, capture_output=True, text=True)  # fmt: skip
        if r.returncode:
            raise SystemExit(f"publish with {src} failed:\n{r.stderr[-3000:]}")
        return float(r.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    args = build_parser().parse_args()
    out_file = output_path(args)
    cube = cube_of(args.species)
    base_tree = Path(tempfile.mkdtemp(prefix="setind-base-"))
    subprocess.run(["git", "-C", str(common.ROOT), "worktree", "add", "--detach",
                    str(base_tree), args.base], check=True, capture_output=True)  # fmt: skip
    times: dict[str, list[float]] = {"base": [], "sets": []}
    try:
        for _ in range(args.runs):
            times["base"].append(run(base_tree / "src", cube, args.top_k))
            times["sets"].append(run(common.ROOT / "src", cube, args.top_k))
            print(json.dumps(times), flush=True)
    finally:
        subprocess.run(["git", "-C", str(common.ROOT), "worktree", "remove", "--force",
                        str(base_tree)], check=False)  # fmt: skip
    base, sets = statistics.median(times["base"]), statistics.median(times["sets"])
    results: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d"),
        "cube": f"{args.species} species x 512 x 512 px (synthetic)",
        "base_revision": args.base,
        "top_k": args.top_k,
        "seconds": times,
        "median_base_s": round(base, 2),
        "median_with_sets_s": round(sets, 2),
        "added": round(sets / base - 1, 3),
    }
    out_file.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
