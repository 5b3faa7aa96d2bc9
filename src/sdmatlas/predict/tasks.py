"""One chunk task: read covariates (+ halo), encode, run the model in batches, write.

A task is idempotent: it always writes its whole chunk region, then its done
marker. Running it twice gives the same bytes; a task killed before its marker
is simply run again on --resume.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import numpy.typing as npt

from sdmatlas import quantize
from sdmatlas.grid import ChunkWindow, Grid
from sdmatlas.models.adapters import Activation, Device, ModelAdapter, adapter_class
from sdmatlas.models.card import ModelCard
from sdmatlas.predict.covariates import CovariateStack
from sdmatlas.predict.cube import Cube
from sdmatlas.predict.inputs import check_values, encode, patches
from sdmatlas.territory import Territory


@dataclass(frozen=True)
class PredictContext:
    """What every chunk task of one run shares (sent once to each worker)."""

    card: ModelCard
    framework: str
    covariates: CovariateStack
    grid: Grid
    territory: Territory
    cube_path: Path
    batch_size: int
    device: Device
    threads: int
    halo: int


@dataclass(frozen=True)
class ChunkTask:
    """A chunk with territory pixels; the task reads the chunk's mask itself, so neither
    the plan nor the messages to workers hold the territory's mask."""

    window: ChunkWindow
    n_pixels: int


@dataclass(frozen=True)
class ChunkResult:
    key: str
    pixels: int
    read_s: float
    model_s: float
    write_s: float
    device: str = "cpu"
    """The device the worker's model ran on (``cpu`` or ``cuda``): GPU jobs record theirs."""


@lru_cache(maxsize=4)
def cached_adapter(
    path: Path, framework: str, activation: Activation, device: Device, threads: int
) -> ModelAdapter:
    """One adapter per worker process and model: sessions are costly to create."""
    return adapter_class(framework)(path, activation, device=device, threads=threads)


def chunk_codes(
    ctx: PredictContext, adapter: ModelAdapter, task: ChunkTask
) -> tuple[npt.NDArray[np.uint8], float, float]:
    """uint8 codes ``[S, h, w]`` of one chunk, and the seconds spent reading and in the model."""
    t0 = time.perf_counter()
    w, h = task.window, ctx.halo
    mask = ctx.territory.chunk_mask(w)
    windows = {
        spec.name: ctx.covariates.read(
            spec.name, ctx.grid, w.row0 - h, w.row1 + h, w.col0 - h, w.col1 + h
        )
        for spec in ctx.card.inputs
    }
    inner = {k: v[h : v.shape[0] - h, h : v.shape[1] - h] for k, v in windows.items()}
    check_values(
        ctx.card,
        inner,
        mask,
        where=f" in chunk {w.key} (grid rows {w.row0}..{w.row1}, cols {w.col0}..{w.col1})",
    )
    encoded = encode(ctx.card, windows)
    # Patches start at the halo's corner: crop any extra halo beyond what the patch needs.
    extra = h - ctx.card.halo
    if extra:
        encoded = encoded[:, extra : encoded.shape[1] - extra, extra : encoded.shape[2] - extra]
    rows, cols = np.nonzero(mask)
    t1 = time.perf_counter()
    # Quantised batch by batch: a task never holds float32 for all its pixels and species
    # (65k pixels x 10,000 species would be 2.6 GB; as uint8 codes it is 655 MB).
    codes = np.full((ctx.card.n_species, *w.shape), quantize.NODATA, dtype=np.uint8)
    for i in range(0, len(rows), ctx.batch_size):
        r, c = rows[i : i + ctx.batch_size], cols[i : i + ctx.batch_size]
        probs = adapter.predict(patches(encoded, r, c, ctx.card.patch_size))
        codes[:, r, c] = quantize.quantize(probs).T
    t2 = time.perf_counter()
    return codes, t1 - t0, t2 - t1


def run_chunk(ctx: PredictContext, task: ChunkTask) -> ChunkResult:
    """Predict one chunk into the cube and record it as done."""
    adapter = cached_adapter(
        ctx.card.model_path(ctx.framework),
        ctx.framework,
        ctx.card.activation,
        ctx.device,
        ctx.threads,
    )
    codes, read_s, model_s = chunk_codes(ctx, adapter, task)
    t0 = time.perf_counter()
    cube = Cube(ctx.cube_path)
    cube.write_region(task.window, codes)
    write_s = time.perf_counter() - t0
    cube.mark_done(task.window, {"pixels": task.n_pixels, "model_s": round(model_s, 4)})
    return ChunkResult(task.window.key, task.n_pixels, read_s, model_s, write_s, adapter.device)
