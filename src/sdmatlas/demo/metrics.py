"""Evaluation metrics for presence/absence predictions (numpy only)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def roc_auc(y: npt.ArrayLike, score: npt.ArrayLike) -> float:
    """Area under the ROC curve (Mann-Whitney U with mid-ranks for ties); NaN if one class."""
    yy = np.asarray(y).astype(bool)
    s = np.asarray(score, dtype=np.float64)
    n_pos = int(yy.sum())
    n_neg = len(yy) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    # mid-ranks for ties
    _, first, counts = np.unique(sorted_s, return_index=True, return_counts=True)
    mid = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(mid, counts)
    u = ranks[yy].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def per_species_auc(
    presence: npt.NDArray[np.integer], scores: npt.NDArray[np.floating]
) -> npt.NDArray[np.float64]:
    """AUC of each column (species) of ``[sites, S]`` arrays."""
    return np.array([roc_auc(presence[:, j], scores[:, j]) for j in range(presence.shape[1])])
