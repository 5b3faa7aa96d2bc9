"""A synthetic cube at benchmark scale: thousands of species with realistic sparsity.

Each species occupies a few Gaussian patches of its own (radii 2 to 60
pixels on a 512-pixel grid, log-uniform, so a few species are widespread and most are rare);
outside them its probability is 0, as for most species at most places of a
continental atlas. The territory is an irregular blob (pixels outside are
nodata). Written straight into a cube with the same API as prediction, so
publishing and queries run on it unchanged. Deterministic for a seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from sdmatlas.grid import Grid
from sdmatlas.predict.cube import Cube, create_cube, now
from sdmatlas.quantize import NODATA, quantize

GROUP = 512  # species generated together (bounds memory: GROUP x chunk^2 float32)


def synthetic_territory(grid: Grid, seed: int) -> npt.NDArray[np.bool_]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0 : grid.height, 0 : grid.width].astype(np.float32)
    cy, cx = grid.height / 2, grid.width / 2
    angle = np.arctan2(yy - cy, xx - cx)
    wobble = sum(
        rng.uniform(0.03, 0.08) * np.sin(k * angle + rng.uniform(0, 6.3)) for k in range(2, 7)
    )
    radius = 0.46 * min(grid.height, grid.width) * (1 + wobble)
    return np.asarray(np.hypot(yy - cy, xx - cx) < radius)


def write_synthetic_cube(
    path: Path,
    n_species: int = 10_000,
    size: int = 512,
    chunk: int = 128,
    seed: int = 0,
    res: float = 1000.0,
) -> Cube:
    grid = Grid(
        crs="EPSG:3035",
        res=res,
        x0=4_000_000.0,
        y0=3_000_000.0,
        width=size,
        height=size,
        chunk=chunk,
    )
    mask = synthetic_territory(grid, seed)
    rng = np.random.default_rng(seed)
    n_patches = rng.integers(1, 4, size=n_species)
    centres = [rng.uniform(0, size, size=(k, 2)).astype(np.float32) for k in n_patches]
    scale = size / 512  # radii 2 to 60 pixels on a 512-pixel grid, in proportion otherwise
    radii = [
        np.exp(rng.uniform(np.log(2 * scale), np.log(60 * scale), size=k)).astype(np.float32)
        for k in n_patches
    ]
    peaks = rng.uniform(0.3, 0.98, size=n_species).astype(np.float32)
    ids = list(range(1, n_species + 1))
    cube = create_cube(
        path,
        grid,
        ids,
        [f"Synthetica bench{i:05d}" for i in ids],
        {"synthetic": {"seed": seed, "n_species": n_species}},
    )
    for w in grid.chunks():
        yy, xx = np.mgrid[w.row0 : w.row1, w.col0 : w.col1].astype(np.float32) + 0.5
        m = mask[w.row0 : w.row1, w.col0 : w.col1]
        codes = np.empty((n_species, *w.shape), np.uint8)
        for s0 in range(0, n_species, GROUP):
            block = np.zeros((min(GROUP, n_species - s0), *w.shape), np.float32)
            for j in range(block.shape[0]):
                s = s0 + j
                for (cy, cx), r in zip(centres[s], radii[s], strict=True):
                    # skip patches that cannot reach this chunk
                    if (
                        cy + 4 * r < w.row0
                        or cy - 4 * r > w.row1
                        or cx + 4 * r < w.col0
                        or cx - 4 * r > w.col1
                    ):
                        continue
                    d2 = (yy - cy) ** 2 + (xx - cx) ** 2
                    np.maximum(block[j], np.exp(-d2 / (2 * r * r)), out=block[j])
            block *= peaks[s0 : s0 + block.shape[0], None, None]
            block[block < 0.02] = 0.0
            codes[s0 : s0 + block.shape[0]] = quantize(block)
        codes[:, ~m] = NODATA
        if m.any():
            cube.write_region(w, codes)
            cube.mark_done(w, {"pixels": int(m.sum())})
    cube.add_run({"finished": now(), "synthetic": True}, complete=True)
    return cube
