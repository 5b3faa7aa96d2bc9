"""Train the demo habitat classifier: an MLP over a pixel's predicted species probabilities
to its virtual level-3 habitat (:mod:`sdmatlas.demo.habitats`), exported to ONNX with its
card. Needs the [torch] extra and a predicted demo cube (``make demo``).

What the classifier learns from is what it reads in publish: the demo model's predicted
probabilities (the cube), not the true ones. Pixels are split in 32 x 32 blocks, a quarter
of the blocks held out: the card's metrics are on those.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import yaml

from sdmatlas.demo import habitats
from sdmatlas.demo.build import grid_fields
from sdmatlas.predict.cube import open_cube
from sdmatlas.quantize import NODATA, SCALE

NAME = "demo-habitats"
BLOCK = 32


Data = tuple[
    npt.NDArray[np.uint8], npt.NDArray[np.uint8], npt.NDArray[np.bool_], list[int], list[str]
]


def training_data(cube_path: Path) -> Data:
    """Codes ``[N, S]`` of the cube's territory pixels, their true habitat (LEVEL3 index),
    the held-out mask, and the cube's species ids and names."""
    cube = open_cube(cube_path)
    codes = np.asarray(cube.array()[:])  # [S, H, W]
    land = codes[0] != NODATA
    _, _, fields = grid_fields(cube.grid)
    truth = habitats.true_habitat(fields)
    rows, cols = np.nonzero(land)
    rng = np.random.default_rng(0)
    n_blocks = (-(-cube.grid.height // BLOCK), -(-cube.grid.width // BLOCK))
    held = rng.random(n_blocks) < 0.25
    test = held[rows // BLOCK, cols // BLOCK]
    x = np.ascontiguousarray(codes[:, rows, cols].T)
    return x, truth[rows, cols], test, list(cube.species_ids), list(cube.species_names)


def train(cube_path: Path, out_dir: Path, epochs: int = 30, seed: int = 0) -> dict[str, Any]:
    import torch

    t0 = time.perf_counter()
    torch.manual_seed(seed)
    x, y, test, ids, names = training_data(cube_path)
    k = len(habitats.LEVEL3)
    probs = torch.from_numpy(np.where(x == NODATA, 0, x).astype(np.float32) * np.float32(SCALE))
    target = torch.from_numpy(y.astype(np.int64))
    tr = torch.from_numpy(np.flatnonzero(~test))
    model = torch.nn.Sequential(
        torch.nn.Linear(x.shape[1], 64), torch.nn.ReLU(), torch.nn.Linear(64, k)
    )
    opt = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-5)
    loss_fn = torch.nn.CrossEntropyLoss()
    for _ in range(epochs):
        perm = tr[torch.randperm(len(tr))]
        for a in range(0, len(perm), 2048):
            b = perm[a : a + 2048]
            opt.zero_grad()
            loss = loss_fn(model(probs[b]), target[b])
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        pred = model(probs).argmax(1).numpy()
    metrics = accuracy_by_level(pred[test], y[test])
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx_name = f"{NAME}.onnx"
    torch.onnx.export(
        model,
        (torch.zeros((1, x.shape[1])),),
        str(out_dir / onnx_name),
        input_names=["probabilities"],
        output_names=["scores"],
        dynamic_axes={"probabilities": {0: "batch"}, "scores": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    card = {
        "schema_version": 1,
        "kind": "habitat-classifier",
        "name": NAME,
        "version": "1.0.0",
        "description": "Demo habitat classifier: an MLP over the demo model's predicted "
        "probabilities of the 200 virtual species, to the demo world's virtual EUNIS-like "
        "level-3 habitats. For demonstration only: species and habitats are simulated.",
        "licence": "CC0-1.0",
        "framework": "onnx",
        "file": onnx_name,
        "input": {
            "kind": "probabilities",
            "species": [{"id": int(i), "name": n} for i, n in zip(ids, names, strict=True)],
        },
        "classes": [
            c.model_dump(include={"code", "name", "color", "parent"}, exclude_none=True)
            for c in habitats.hierarchy()
        ],
        "outputs": [c for c, _, _ in habitats.LEVEL3],
        "metrics": {
            "held_out_pixels": int(test.sum()),
            **metrics,
            "characteristic_species": characteristic_species(x, y, names),
        },
        "training": {
            "script": "scripts/train_demo_habitats.py",
            "framework": f"torch {torch.__version__}",
            "epochs": epochs,
            "seed": seed,
            "train_pixels": int((~test).sum()),
            "seconds": round(time.perf_counter() - t0, 1),
            "date": dt.date.today().isoformat(),
        },
    }
    (out_dir / f"{NAME}.card.yaml").write_text(yaml.safe_dump(card, sort_keys=False))
    return metrics


def accuracy_by_level(
    pred: npt.NDArray[np.integer], truth: npt.NDArray[np.integer]
) -> dict[str, float | str]:
    """Accuracy at levels 3, 2 and 1 (a level's class: its code's prefix), and the
    majority-class baseline's at each level."""
    codes = np.array([c for c, _, _ in habitats.LEVEL3])
    out: dict[str, float | str] = {}
    for level in (3, 2, 1):
        p = np.array([c[:level] for c in codes])[pred]
        t = np.array([c[:level] for c in codes])[truth]
        values, counts = np.unique(t, return_counts=True)
        out[f"accuracy_l{level}"] = round(float((p == t).mean()), 4)
        out[f"majority_l{level}"] = round(float(counts.max() / counts.sum()), 4)
        out[f"majority_class_l{level}"] = str(values[counts.argmax()])
    return out


def characteristic_species(
    x: npt.NDArray[np.uint8], y: npt.NDArray[np.integer], names: list[str], n: int = 3
) -> dict[str, list[str]]:
    """Per level-3 habitat, the species most concentrated in it: mean probability inside
    over mean probability everywhere (a fidelity index), among species with a mean of at
    least 0.2 inside."""
    p = np.where(x == NODATA, 0, x).astype(np.float32) * np.float32(SCALE)
    overall = p.mean(axis=0) + 1e-6
    out = {}
    for i, (code, _, _) in enumerate(habitats.LEVEL3):
        inside = y == i
        if not inside.any():
            continue
        mean_in = p[inside].mean(axis=0)
        score = np.where(mean_in >= 0.2, mean_in / overall, 0.0)
        out[code] = [names[j] for j in np.argsort(-score)[:n] if score[j] > 0]
    return out
