"""How well a predicted cube recovers the virtual species' true probabilities."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sdmatlas.demo.build import true_probabilities
from sdmatlas.demo.virtual_species import VirtualSpecies
from sdmatlas.predict.cube import Cube
from sdmatlas.quantize import dequantize
from sdmatlas.territory import Territory


@dataclass(frozen=True)
class Recovery:
    n_species: int
    mean_abs_error: float
    mean_correlation: float
    median_correlation: float


def recovery(cube: Cube, species: list[VirtualSpecies], territory: Territory) -> Recovery:
    """Per-species Pearson correlation and mean absolute error over territory pixels."""
    by_id = {sp.id: sp for sp in species}
    ids = cube.species_ids
    truth = true_probabilities([by_id[i] for i in ids], territory)
    arr = cube.array()
    m = territory.mask
    errs, cors = [], []
    for j in range(len(ids)):
        pred = dequantize(np.asarray(arr[j]))[m]
        t = truth[j]
        errs.append(float(np.mean(np.abs(pred - t))))
        if pred.std() > 0 and t.std() > 0:
            cors.append(float(np.corrcoef(pred, t)[0, 1]))
    return Recovery(
        n_species=len(ids),
        mean_abs_error=float(np.mean(errs)),
        mean_correlation=float(np.mean(cors)),
        median_correlation=float(np.median(cors)),
    )
