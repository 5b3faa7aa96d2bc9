"""Train the demo habitat classifier and write src/sdmatlas/demo/habitats_model/ (ONNX, card).

    python scripts/train_demo_habitats.py [--cube data/cubes/demo-1.0.0.zarr]
                                          [--out src/sdmatlas/demo/habitats_model] [--epochs 30]

Needs the [torch] extra and the predicted demo cube (`make demo`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sdmatlas.demo.train_habitats import train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--cube", type=Path, default=Path("data/cubes/demo-1.0.0.zarr"))
    ap.add_argument("--out", type=Path, default=Path("src/sdmatlas/demo/habitats_model"))
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    metrics = train(args.cube, args.out, epochs=args.epochs, seed=args.seed)
    print(json.dumps(metrics, indent=1))


if __name__ == "__main__":
    main()
