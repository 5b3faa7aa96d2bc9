"""Train the demo Deep-SDM and write src/sdmatlas/demo/model/ (ONNX, TorchScript, card).

    python scripts/train_demo_model.py [--data data/demo] [--out src/sdmatlas/demo/model]
                                        [--epochs 60]

Needs the [torch] extra. The demo inputs are built first if missing.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sdmatlas.demo.build import DemoPaths, build_demo
from sdmatlas.demo.train import train_demo_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("data/demo"))
    ap.add_argument("--out", type=Path, default=Path("src/sdmatlas/demo/model"))
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    paths = DemoPaths(args.data)
    if not paths.exists():
        build_demo(args.data)
    train_demo_model(paths, args.out, epochs=args.epochs, seed=args.seed)


if __name__ == "__main__":
    main()
