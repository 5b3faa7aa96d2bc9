"""Per-layer statistics gathered while publishing, for the catalog.

Species layers: the histogram of their uint8 codes over territory pixels (min, max and
mean follow from it exactly), the pixel bounding box of where the layer has data to
show (p > 0: what clients are told the layer covers) and that of where the species is
present (p >= the release's threshold). Both accumulate chunk by chunk in the publish
pass, so they cost no extra read of the cube. Indicator layers: min, max, mean and a
20-bin histogram over level 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from sdmatlas.grid import ChunkWindow
from sdmatlas.quantize import NODATA

#: Species per vectorised histogram step (bounds the int32 index array to 256 x chunk²).
_SLAB = 256
INDICATOR_BINS = 20


@dataclass
class SpeciesStats:
    """Running code histograms and presence boxes of ``n`` species."""

    n: int
    threshold_code: int
    histogram: npt.NDArray[np.int64] = field(init=False)
    #: row0, col0, row1, col1 (exclusive) of pixels with code >= threshold; -1 when absent
    presence: npt.NDArray[np.int64] = field(init=False)
    #: the same box for pixels with a code above 0 (p > 0): where the layer draws something
    extent: npt.NDArray[np.int64] = field(init=False)

    def __post_init__(self) -> None:
        self.histogram = np.zeros((self.n, 256), np.int64)
        self.presence = np.full((self.n, 4), -1, np.int64)
        self.extent = np.full((self.n, 4), -1, np.int64)

    def add(self, codes: npt.NDArray[np.uint8], win: ChunkWindow) -> None:
        s = codes.shape[0]
        for s0 in range(0, s, _SLAB):
            sl = codes[s0 : s0 + _SLAB].reshape(min(_SLAB, s - s0), -1)
            k = sl.shape[0]
            idx = sl.astype(np.int32) + (np.arange(k, dtype=np.int32) * 256)[:, None]
            self.histogram[s0 : s0 + k] += np.bincount(idx.ravel(), minlength=k * 256).reshape(
                k, 256
            )
        data = codes != NODATA
        _grow(self.presence, (codes >= self.threshold_code) & data, win)
        _grow(self.extent, (codes > 0) & data, win)


def _grow(box: npt.NDArray[np.int64], hit: npt.NDArray[np.bool_], win: ChunkWindow) -> None:
    """Widen each species' pixel box ``box[s]`` (-1 when empty) to the pixels ``hit[s]``
    of chunk ``win``."""
    rows: npt.NDArray[np.bool_] = np.any(hit, axis=2)
    cols: npt.NDArray[np.bool_] = np.any(hit, axis=1)
    has: npt.NDArray[np.bool_] = np.any(rows, axis=1)
    if not has.any():
        return
    r0 = win.row0 + np.argmax(rows, axis=1)
    r1 = win.row0 + rows.shape[1] - np.argmax(rows[:, ::-1], axis=1)
    c0 = win.col0 + np.argmax(cols, axis=1)
    c1 = win.col0 + cols.shape[1] - np.argmax(cols[:, ::-1], axis=1)
    new = has & (box[:, 0] < 0)
    old = has & ~new
    box[new] = np.column_stack([r0, c0, r1, c1])[new]
    box[old, 0] = np.minimum(box[old, 0], r0[old])
    box[old, 1] = np.minimum(box[old, 1], c0[old])
    box[old, 2] = np.maximum(box[old, 2], r1[old])
    box[old, 3] = np.maximum(box[old, 3], c1[old])


def code_summary(histogram: npt.NDArray[np.integer], bins: int = 10) -> dict[str, Any]:
    """min, max, mean probability and a ``bins``-bin histogram over [0, 1] from a code
    histogram (256 entries; 255 = nodata is left out)."""
    counts = np.asarray(histogram[:NODATA], dtype=np.int64)
    n = int(counts.sum())
    edges = np.linspace(0.0, 1.0, bins + 1)
    if n == 0:
        return _no_values(edges.tolist(), [0] * bins)
    codes = np.arange(NODATA)
    p = codes / 254.0
    nz = np.flatnonzero(counts)
    which = np.minimum((p * bins).astype(int), bins - 1)
    binned = np.bincount(which, weights=counts, minlength=bins).astype(np.int64)
    return {
        "count": n,
        "min": round(float(p[nz[0]]), 6),
        "max": round(float(p[nz[-1]]), 6),
        "mean": round(float((counts * p).sum() / n), 6),
        "histogram": {"edges": [round(float(e), 6) for e in edges], "counts": binned.tolist()},
    }


def _no_values(edges: list[float], counts: list[int]) -> dict[str, Any]:
    """The summary of a layer with no valid pixel."""
    return {
        "count": 0,
        "min": None,
        "max": None,
        "mean": None,
        "histogram": {"edges": edges, "counts": counts},
    }


def merge_boxes(box: npt.NDArray[np.int64], other: npt.NDArray[np.int64]) -> None:
    """Widen the pixel boxes ``box[s]`` (row0, col0, row1, col1; -1 when empty) in place
    to cover ``other[s]``."""
    has = other[:, 0] >= 0
    new = has & (box[:, 0] < 0)
    old = has & ~new
    box[new] = other[new]
    box[old, :2] = np.minimum(box[old, :2], other[old, :2])
    box[old, 2:] = np.maximum(box[old, 2:], other[old, 2:])


@dataclass(frozen=True)
class FloatParts:
    """count, sum, min and max of the finite values of a float layer, one row per cube
    chunk, as the publish tasks report them (``[iy, ix, count, sum, min, max]``)."""

    rows: list[list[float]]

    def totals(self) -> tuple[int, float, float, float]:
        """count, sum, min, max over all chunks; the sum is taken chunk by chunk in
        row-major chunk order, so it does not depend on how the tasks were cut."""
        lo, hi, total, n = np.inf, -np.inf, 0.0, 0
        for _, _, count, part, cmin, cmax in sorted(self.rows, key=lambda r: (r[0], r[1])):
            if count:
                lo, hi = min(lo, cmin), max(hi, cmax)
                total += part
                n += int(count)
        return n, total, lo, hi

    def edges(self, bins: int = INDICATOR_BINS) -> list[float] | None:
        """Histogram bin edges from the minimum to the maximum (None without values)."""
        n, _, lo, hi = self.totals()
        if n == 0:
            return None
        return list(np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1).tolist())

    def summary(self, counts: list[int] | None) -> dict[str, Any]:
        """The catalog's summary: count, min, max, mean and the histogram ``counts`` on
        :meth:`edges`."""
        n, total, lo, hi = self.totals()
        edges = self.edges()
        if n == 0 or edges is None or counts is None:
            return _no_values([], [])
        return {
            "count": n,
            "min": lo,
            "max": hi,
            "mean": total / n,
            "histogram": {"edges": edges, "counts": list(counts)},
        }
