"""Turning covariate windows into model inputs: checks, normalisation, patches.

Pure functions, shared by prediction and by the demo's training script so that
a model sees the same encoding at training and at prediction time.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from sdmatlas.errors import CovariateError
from sdmatlas.models.card import CategoricalInput, ModelCard
from sdmatlas.predict.covariates import CATEGORICAL_MISSING


def check_values(
    card: ModelCard,
    windows: Mapping[str, npt.NDArray[np.float64] | npt.NDArray[np.int64]],
    inside: npt.NDArray[np.bool_],
    where: str = "",
) -> None:
    """Raise if a covariate is missing, NaN or of an unknown class on a territory pixel."""
    for spec in card.inputs:
        w = windows[spec.name]
        if isinstance(spec, CategoricalInput):
            bad = inside & ~np.isin(w, spec.classes)
            what = f"a class outside {spec.classes} or nodata"
        else:
            bad = inside & ~np.isfinite(w)
            what = "NaN or nodata"
        if bad.any():
            r, c = np.argwhere(bad)[0]
            raise CovariateError(
                f"covariate {spec.name!r} has {what} on {int(bad.sum())} territory pixel(s)"
                f"{where}, first at window row {r}, col {c}: fill or mask them first"
            )


def encode(
    card: ModelCard, windows: Mapping[str, npt.NDArray[np.float64] | npt.NDArray[np.int64]]
) -> npt.NDArray[np.float32]:
    """Stack normalised channels ``[C, H, W]`` in the card's order.

    Continuous: ``(x - mean) / std``; missing values (outside the territory,
    only ever read as a patch's halo) become 0, the training mean.
    Categorical: one channel per class, 1 where the pixel has that class;
    a missing value is all zeros.
    """
    first = next(iter(windows.values()))
    out = np.zeros((card.n_channels, *first.shape), dtype=np.float32)
    ch = 0
    for spec in card.inputs:
        w = windows[spec.name]
        if isinstance(spec, CategoricalInput):
            for cls in spec.classes:
                out[ch] = w == cls
                ch += 1
        else:
            z = (w - spec.mean) / spec.std
            out[ch] = np.where(np.isfinite(z), z, 0.0)
            ch += 1
    return out


def patches(
    encoded: npt.NDArray[np.float32],
    rows: npt.NDArray[np.intp],
    cols: npt.NDArray[np.intp],
    patch_size: int,
) -> npt.NDArray[np.float32]:
    """Patches ``[N, C, P, P]`` centred on ``(rows, cols)`` of an encoded window.

    ``rows``/``cols`` index the window without its halo; the window must carry
    ``patch_size // 2`` pixels of halo on each side.
    """
    views = np.lib.stride_tricks.sliding_window_view(encoded, (patch_size, patch_size), axis=(1, 2))
    # views[c, r, k] is the patch whose top-left is (r, k), i.e. centred on halo-free (r, k).
    # Moving the channel axis first keeps it a view; the fancy index then makes the one copy,
    # already contiguous in [N, C, P, P] order.
    out: npt.NDArray[np.float32] = views.transpose(1, 2, 0, 3, 4)[rows, cols]
    return out


__all__ = ["CATEGORICAL_MISSING", "check_values", "encode", "patches"]
