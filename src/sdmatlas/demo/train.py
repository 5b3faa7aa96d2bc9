"""Train the small multimodal demo Deep-SDM on the virtual-species surveys (needs PyTorch).

The model has two branches over one input patch ``[N, C, P, P]``: an MLP on the
centre pixel's covariate values and a small CNN on the whole patch; their
features are concatenated into a linear multi-label head (one logit per
species, sigmoid activation). It is evaluated on held-out survey sites (AUC per
species, written into the card) and exported as ONNX and TorchScript.

Run with ``python scripts/train_demo_model.py`` (or ``sdmatlas demo train``).
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from sdmatlas.demo import region, world
from sdmatlas.demo.build import DemoPaths, load_species, read_surveys
from sdmatlas.demo.metrics import per_species_auc
from sdmatlas.demo.virtual_species import probability
from sdmatlas.models.card import (
    CardGrid,
    CategoricalInput,
    ContinuousInput,
    ModelCard,
    SpeciesOutput,
    dump_card,
)
from sdmatlas.predict.covariates import CovariateStack
from sdmatlas.predict.inputs import encode, patches
from sdmatlas.territory import territory_from_mask_raster

PATCH_SIZE = 9
MODEL_NAME = "demo-sdm"


class DemoSDM(nn.Module):
    def __init__(self, channels: int, n_species: int, hidden: int = 64) -> None:
        super().__init__()
        self.pixel = nn.Sequential(
            nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU()
        )
        self.cnn = nn.Sequential(
            nn.Conv2d(channels, 32, 3),
            nn.ReLU(),
            nn.Conv2d(32, 32, 3),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(hidden + 32, n_species)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[-1] // 2
        centre = x[:, :, c, c]
        return self.head(torch.cat([self.pixel(centre), self.cnn(x)], dim=1))  # type: ignore[no-any-return]


def input_specs(
    stack: CovariateStack, paths: DemoPaths
) -> list[ContinuousInput | CategoricalInput]:
    """Card inputs with normalisation statistics measured on the territory."""
    territory = territory_from_mask_raster(paths.territory)
    g, m = territory.grid, territory.mask
    specs: list[ContinuousInput | CategoricalInput] = []
    for name, meta in world.COVARIATES.items():
        if meta["kind"] == "categorical":
            specs.append(
                CategoricalInput(
                    name=name,
                    classes=list(world.LANDCOVER_CLASSES),
                    labels=list(world.LANDCOVER_CLASSES.values()),
                )
            )
        else:
            v = stack.read(name, g, 0, g.height, 0, g.width)[m]
            specs.append(
                ContinuousInput(
                    name=name,
                    units=meta["units"],
                    mean=round(float(np.mean(v)), 4),
                    std=round(float(np.std(v)), 4),
                )
            )
    return specs


def survey_patches(
    card: ModelCard,
    stack: CovariateStack,
    paths: DemoPaths,
    rows: npt.NDArray[np.intp],
    cols: npt.NDArray[np.intp],
) -> npt.NDArray[np.float32]:
    territory = territory_from_mask_raster(paths.territory)
    g, h = territory.grid, card.halo
    windows = {
        i.name: stack.read(i.name, g, -h, g.height + h, -h, g.width + h) for i in card.inputs
    }
    return patches(encode(card, windows), rows, cols, card.patch_size)


def train_demo_model(
    paths: DemoPaths, out_dir: Path, epochs: int = 60, seed: int = 0, verbose: bool = True
) -> ModelCard:
    torch.manual_seed(seed)
    torch.set_num_threads(2)
    out_dir.mkdir(parents=True, exist_ok=True)
    species = load_species(paths)
    grid = region.demo_grid(res=float(territory_from_mask_raster(paths.territory).grid.res))
    stack = CovariateStack(paths.covariate_paths())
    specs = input_specs(stack, paths)
    onnx_name, ts_name = f"{MODEL_NAME}.onnx", f"{MODEL_NAME}.torchscript.pt"
    card = ModelCard(
        name=MODEL_NAME,
        version="1.0.0",
        description=(
            "Demo multimodal Deep-SDM (pixel MLP + patch CNN, multi-label sigmoid) trained on "
            "simulated presence/absence surveys of virtual species in the Northern Adriatic demo "
            "territory. For demonstration only: the species and covariates are simulated."
        ),
        licence="CC0-1.0",
        framework="onnx",
        file=onnx_name,
        alternates={"torchscript": ts_name},
        grid=CardGrid(crs=grid.crs, resolution=grid.res),
        inputs=specs,
        patch_size=PATCH_SIZE,
        activation="sigmoid",
        species=[SpeciesOutput(id=sp.id, name=sp.scientific_name) for sp in species],
    )
    rows, cols, presence, is_test, ids = read_surveys(paths.surveys, grid)
    assert ids == card.species_ids
    x = torch.from_numpy(survey_patches(card, stack, paths, rows, cols))
    y = torch.from_numpy(presence.astype(np.float32))
    train = torch.from_numpy(~is_test)
    xtr, ytr = x[train], y[train]
    model = DemoSDM(card.n_channels, card.n_species)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    loss_fn = nn.BCEWithLogitsLoss()
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(xtr), generator=gen)
        total = 0.0
        for i in range(0, len(xtr), 128):
            idx = perm[i : i + 128]
            xb = xtr[idx]
            if torch.rand(1, generator=gen).item() < 0.5:  # flips: the landscape has no handedness
                xb = torch.flip(xb, dims=[3])
            opt.zero_grad()
            loss = loss_fn(model(xb), ytr[idx])
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        sched.step()
        if verbose and (epoch % 10 == 0 or epoch == epochs - 1):
            print(f"epoch {epoch:3d}  train BCE {total / len(xtr):.4f}")
    model.eval()
    with torch.no_grad():
        scores = torch.sigmoid(model(x[~train])).numpy()
    auc = per_species_auc(presence[is_test], scores)
    # The ceiling: the same AUC scored with the species' true probabilities.
    tx, ty = grid.xy(rows[is_test], cols[is_test])
    fields = world.covariate_fields(tx, ty)
    truth = np.stack([probability(sp, tx, ty, fields) for sp in species], axis=1)
    oracle = per_species_auc(presence[is_test], truth)
    metrics: dict[str, Any] = {
        "evaluation": "held-out presence/absence survey sites",
        "n_test_sites": int(is_test.sum()),
        "auc_mean": round(float(np.nanmean(auc)), 4),
        "auc_median": round(float(np.nanmedian(auc)), 4),
        "oracle_auc_mean": round(float(np.nanmean(oracle)), 4),
        "oracle_note": "AUC of the true simulated probabilities on the same sites (the ceiling)",
        "auc_per_species": {
            str(sid): (None if np.isnan(a) else round(float(a), 4))
            for sid, a in zip(card.species_ids, auc, strict=True)
        },
    }
    training = {
        "script": "scripts/train_demo_model.py",
        "framework": f"torch {torch.__version__}",
        "epochs": epochs,
        "seed": seed,
        "n_train_sites": int(train.sum()),
        "seconds": round(time.perf_counter() - t0, 1),
        "date": dt.date.today().isoformat(),
    }
    card = card.model_copy(update={"metrics": metrics, "training": training})
    dummy = torch.zeros((1, card.n_channels, PATCH_SIZE, PATCH_SIZE))
    torch.onnx.export(
        model,
        (dummy,),
        str(out_dir / onnx_name),
        input_names=["x"],
        output_names=["logits"],
        dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    torch.jit.trace(model, dummy).save(str(out_dir / ts_name))
    dump_card(card, out_dir / f"{MODEL_NAME}.card.yaml")
    if verbose:
        print(
            f"held-out AUC: mean {metrics['auc_mean']}, median {metrics['auc_median']} "
            f"(true probabilities: {metrics['oracle_auc_mean']})"
        )
    return card
