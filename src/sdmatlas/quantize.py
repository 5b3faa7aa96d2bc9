"""The uint8 encoding of probabilities used by every cube and layer.

A probability ``p`` in [0, 1] is stored as ``q = rint(p * 254)`` (round half to
even), so ``p = q / 254`` with an error of at most 1/508 (about 0.002).
The value 255 is reserved for nodata (outside the territory).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

SCALE: float = 1.0 / 254.0
"""Probability represented by one step of the uint8 code."""
MAX_CODE: int = 254
NODATA: int = 255

ENCODING: dict[str, Any] = {
    "dtype": "uint8",
    "scale_factor": SCALE,
    "add_offset": 0.0,
    "nodata": NODATA,
    "rule": "q = rint(p * 254), p = q / 254, 255 = nodata",
}


def quantize(p: npt.NDArray[np.floating]) -> npt.NDArray[np.uint8]:
    """Encode probabilities as uint8 codes; NaN becomes nodata."""
    p = np.asarray(p, dtype=np.float32)
    q = np.rint(np.clip(p, 0.0, 1.0) * np.float32(MAX_CODE))
    out = np.where(np.isnan(p), NODATA, q).astype(np.uint8)
    return out


def dequantize(q: npt.NDArray[np.integer]) -> npt.NDArray[np.float32]:
    """Decode uint8 codes to probabilities; nodata becomes NaN."""
    q = np.asarray(q)
    p = q.astype(np.float32) * np.float32(SCALE)
    p[q == NODATA] = np.nan
    return p
