"""Benchmark: the habitat layers of the demo (issue 18's habitat accuracy goal).

    .venv/bin/python bench/habitats.py [--cube data/cubes/demo-1.0.0.zarr] [--runs 1]

Publishes the demo cube (``make demo`` makes it) with the demo habitat classifier
(``--habitats``), and without it, alternately, in this process; then compares the
published ``habitat_l3``, ``habitat_l2`` and ``habitat_l1`` with the demo world's true
habitat map (:func:`sdmatlas.demo.habitats.true_habitat`) at levels 3, 2 and 1, beside a
majority-class baseline (the most frequent class of the training pixels, everywhere):
on the pixels the classifier was not trained on (the 32 x 32 blocks held out by
scripts/train_demo_habitats.py) and on every land pixel. Also the publish time the
habitat layers add. Results: bench/results/habitats-<date>.json.
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

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common


def build_parser() -> argparse.ArgumentParser:
    ap = common.parser(__doc__)
    ap.add_argument("--cube", type=Path, default=common.ROOT / "data/cubes/demo-1.0.0.zarr")
    ap.add_argument("--species", type=Path, default=common.ROOT / "data/demo/species.csv")
    ap.add_argument("--runs", type=int, default=1, help="publishes of each kind")
    return ap


def output_path(args: argparse.Namespace) -> Path:
    return common.results_file(args.results, "habitats")


def main() -> None:
    args = build_parser().parse_args()
    out_file = output_path(args)
    from sdmatlas.demo import DEMO_HABITATS
    from sdmatlas.demo.build import grid_fields
    from sdmatlas.demo.habitats import LEVEL3, true_habitat
    from sdmatlas.demo.train_habitats import BLOCK
    from sdmatlas.predict.cube import open_cube
    from sdmatlas.publish.release import PublishOptions, publish
    from sdmatlas.publish.species_csv import species_info_from_csv
    from sdmatlas.release import layout
    from sdmatlas.storage import open_release

    cube = open_cube(args.cube)
    info = species_info_from_csv(args.species, cube.species_ids)
    seconds: dict[str, list[float]] = {"without": [], "with": []}
    tmp = Path(tempfile.mkdtemp(prefix="bench-habitats-"))
    try:
        for k in range(args.runs):
            for kind in ("without", "with"):
                opts = PublishOptions(habitats=DEMO_HABITATS if kind == "with" else None)
                t0 = time.perf_counter()
                loc = publish(args.cube, tmp / f"{kind}-{k}", "r", info, opts)
                seconds[kind].append(time.perf_counter() - t0)
                print(f"publish {kind} habitats: {seconds[kind][-1]:.1f} s", flush=True)
        rel = open_release(loc)
        layers = {d: rel.read(layout.level_array(0, f"habitat_l{d}")) for d in (3, 2, 1)}
        schemes = {d: rel.manifest.class_layers[f"habitat_l{d}"].scheme for d in (3, 2, 1)}
        land = rel.read(layout.TERRITORY) == 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    _, _, fields = grid_fields(cube.grid)
    truth3 = true_habitat(fields)
    rows, cols = np.nonzero(land)
    rng = np.random.default_rng(0)  # the training script's block split
    g = cube.grid
    held = rng.random((-(-g.height // BLOCK), -(-g.width // BLOCK))) < 0.25
    test = np.zeros_like(land)
    test[rows, cols] = held[rows // BLOCK, cols // BLOCK]
    codes3 = np.array([c for c, _, _ in LEVEL3])
    results: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d"),
        "cube": str(args.cube),
        "classifier": str(DEMO_HABITATS),
        "pixels": {"land": int(land.sum()), "held_out": int(test.sum())},
        "publish_seconds": {k: [round(v, 2) for v in s] for k, s in seconds.items()},
        "publish_ratio": round(
            statistics.median(seconds["with"]) / statistics.median(seconds["without"]), 3
        ),
        "levels": {},
    }
    for d in (3, 2, 1):
        got = np.array([c.code for c in schemes[d].classes] + [""])[
            np.where(layers[d] == 255, -1, layers[d].astype(np.int64))
        ]
        want = np.array([c[:d] for c in codes3])[truth3]
        train = land & ~test
        values, counts = np.unique(want[train], return_counts=True)
        majority = values[counts.argmax()]
        row = {"majority_class": str(majority)}
        for name, where in (("held_out", test), ("all_land", land)):
            row[f"accuracy_{name}"] = round(float((got[where] == want[where]).mean()), 4)
            row[f"majority_{name}"] = round(float((want[where] == majority).mean()), 4)
        results["levels"][f"l{d}"] = row
        print(f"level {d}: {row}", flush=True)
    out_file.write_text(json.dumps(results, indent=1))
    print(f"results: {out_file}")


if __name__ == "__main__":
    main()
