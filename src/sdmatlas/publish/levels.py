"""Multiscale levels: nodata-aware 2 x 2 means, cascaded like GDAL overviews.

Level ``k + 1`` pixel = mean of the valid level-``k`` pixels below it, each
weighted by how many territory pixels of level 0 it stands for. The weights
make a level-``k`` value the mean over its ``2^k x 2^k`` level-0 pixels up to
rounding: each level rounds once to the uint8 code, so level ``k`` is within
``k / 2`` codes (k/508 in probability) of the exact mean over level 0.
A block with no valid pixel is nodata. Odd edges are padded with nodata.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from sdmatlas.quantize import NODATA


def level_count(height: int, width: int, min_size: int = 256) -> int:
    """Number of levels (level 0 included) until the larger side is at most ``min_size``."""
    return 1 + max(0, math.ceil(math.log2(max(height, width) / min_size)))


def downsample_weights(weights: npt.NDArray[np.integer]) -> npt.NDArray[np.int64]:
    """Level-0 pixel counts of the next level: sums over 2 x 2 blocks (edges padded with 0)."""
    h, w = weights.shape
    padded = np.zeros((h + h % 2, w + w % 2), dtype=np.int64)
    padded[:h, :w] = weights
    out: npt.NDArray[np.int64] = padded.reshape(
        padded.shape[0] // 2, 2, padded.shape[1] // 2, 2
    ).sum(axis=(1, 3))
    return out


def downsample_codes(
    codes: npt.NDArray[np.uint8], weights: npt.NDArray[np.integer]
) -> npt.NDArray[np.uint8]:
    """Next level of ``codes[..., y, x]`` given the level-0 pixel count of each pixel.

    ``weights`` is ``[y, x]`` and is 0 exactly where ``codes`` is nodata (the
    territory is the same for every species).
    """
    *lead, h, w = codes.shape
    if h % 2 or w % 2:  # pad odd edges with nodata (weight 0); copies only in that case
        padded = np.full((*lead, h + h % 2, w + w % 2), NODATA, dtype=np.uint8)
        padded[..., :h, :w] = codes
        pw = np.zeros((h + h % 2, w + w % 2), dtype=np.int64)
        pw[:h, :w] = weights
        codes, weights = padded, pw
    # Integer weighted sums over the four 2 x 2 offsets (strided views, int32: codes <= 254,
    # weights <= 4^k): exact, and no full-size float copy. Nodata codes have weight 0.
    num = np.zeros((*lead, codes.shape[-2] // 2, codes.shape[-1] // 2), dtype=np.int32)
    den = np.zeros(num.shape[-2:], dtype=np.int64)
    for dy in (0, 1):
        for dx in (0, 1):
            wq = np.asarray(weights[dy::2, dx::2], dtype=np.int32)
            num += codes[..., dy::2, dx::2] * wq
            den += wq
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = num / den
    out: npt.NDArray[np.uint8] = np.where(den > 0, np.rint(mean), NODATA).astype(np.uint8)
    return out


def downsample_float(
    values: npt.NDArray[np.float32], weights: npt.NDArray[np.integer]
) -> npt.NDArray[np.float32]:
    """Next level of a float layer (NaN off the territory): the weighted mean of each
    2 x 2 block, NaN where no weight."""
    h, w = values.shape
    hp, wp = h + h % 2, w + w % 2
    v = np.zeros((hp, wp))
    wt = np.zeros((hp, wp))
    v[:h, :w] = np.nan_to_num(values)
    wt[:h, :w] = weights
    num = (v * wt).reshape(hp // 2, 2, wp // 2, 2).sum(axis=(1, 3))
    den = wt.reshape(hp // 2, 2, wp // 2, 2).sum(axis=(1, 3))
    with np.errstate(invalid="ignore", divide="ignore"):
        out: npt.NDArray[np.float32] = np.where(den > 0, num / den, np.nan).astype(np.float32)
    return out
