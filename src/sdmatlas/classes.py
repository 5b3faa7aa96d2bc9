"""Categorical layers: class schemes, the mode pyramid, colour tables, class counts.

A categorical (class) layer holds one small integer class per pixel (uint8), not a
measurement: a conservation status, a habitat type. Its :class:`ClassScheme` lists the
classes (value, code, name, colour, and the parent code in a hierarchy); the value
:data:`NO_CLASS` (255) is "no class": off the territory, or no class at that pixel (for
the worst status, an empty species set).

Classes cannot be averaged, so a class layer's pyramid is a **mode** pyramid
(:func:`mode_downsample`): a coarser pixel holds the class that covers the most
level-0 territory pixels among its valid children (children with a class, each
weighing the level-0 territory pixels it stands for); ties go to the lowest class
value; no valid child gives :data:`NO_CLASS`. Every value of a coarser level is thus
one of its children's values: nothing is invented, unlike a mean or a bilinear
resampling, which would blend two habitat codes into a third.

Pure functions; the publish tasks, the tile renderer, point queries, area reports and
the COG export all use them.
"""

from __future__ import annotations

import re

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, field_validator, model_validator

NO_CLASS = 255
"""The value of "no class" in a class layer (transparent in tiles, GDAL's nodata)."""
_HEX = re.compile(r"^#[0-9a-f]{6}$")


class ClassEntry(BaseModel):
    """One class of a scheme."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    value: int
    """The pixel value (0-254)."""
    code: str
    """A short code: ``CR``, ``T1``, ``T13``."""
    name: str
    color: str
    """``#rrggbb``."""
    parent: str | None = None
    """The code of the parent class in a hierarchy (EUNIS: ``T1`` for ``T13``)."""

    @field_validator("value")
    @classmethod
    def _value(cls, v: int) -> int:
        if not 0 <= v < NO_CLASS:
            raise ValueError(f"a class value is 0-{NO_CLASS - 1} ({NO_CLASS} is no class)")
        return v

    @field_validator("color")
    @classmethod
    def _color(cls, v: str) -> str:
        v = v.lower()
        if not _HEX.match(v):
            raise ValueError(f"colour {v!r} is not #rrggbb")
        return v


class ClassScheme(BaseModel):
    """The classes of a class layer, in legend order."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    classes: tuple[ClassEntry, ...]
    empty: str = "no class"
    """What :data:`NO_CLASS` means on the territory (legends, point answers)."""

    @model_validator(mode="after")
    def _unique(self) -> ClassScheme:
        values = [c.value for c in self.classes]
        codes = [c.code for c in self.classes]
        if len(set(values)) != len(values) or len(set(codes)) != len(codes):
            raise ValueError("class values and codes must be unique")
        if not self.classes:
            raise ValueError("a scheme has at least one class")
        return self

    def by_value(self, value: int) -> ClassEntry | None:
        for c in self.classes:
            if c.value == value:
                return c
        return None

    def column(self) -> npt.NDArray[np.int64]:
        """Value -> position in :attr:`classes` (-1 for values of no class), 256 entries."""
        out = np.full(256, -1, np.int64)
        for i, c in enumerate(self.classes):
            out[c.value] = i
        return out


def mode_downsample(
    classes: npt.NDArray[np.uint8], weights: npt.NDArray[np.integer]
) -> npt.NDArray[np.uint8]:
    """The next level of ``classes[y, x]`` (see the module's docstring): per 2 x 2 block,
    the class with the largest total ``weights`` (level-0 territory pixels) among the
    children that have a class; ties to the lowest class value; :data:`NO_CLASS` where no
    child has one. Odd edges are padded with no class."""
    h, w = classes.shape
    hp, wp = h + h % 2, w + w % 2
    c = np.full((hp, wp), NO_CLASS, np.uint8)
    c[:h, :w] = classes
    wt = np.zeros((hp, wp), np.int64)
    wt[:h, :w] = weights
    kids = [c[dy::2, dx::2] for dy in (0, 1) for dx in (0, 1)]
    kw = [np.where(k != NO_CLASS, wt[dy::2, dx::2], 0) for k, (dy, dx) in
          zip(kids, ((0, 0), (0, 1), (1, 0), (1, 1)), strict=True)]  # fmt: skip
    # Four children: the score of child i is the weight of every child with its class.
    # Vectorised over the block (a bincount per block would be a Python loop per pixel).
    best = np.full(kids[0].shape, NO_CLASS, np.uint8)
    best_score = np.zeros(kids[0].shape, np.int64)
    for i in range(4):
        score = sum((kids[j] == kids[i]) * kw[j] for j in range(4))
        has = (kids[i] != NO_CLASS) & (kw[i] > 0)
        better = has & ((score > best_score) | ((score == best_score) & (kids[i] < best)))
        best = np.where(better, kids[i], best)
        best_score = np.where(better, score, best_score)
    return best


def class_counts(values: npt.NDArray[np.uint8], scheme: ClassScheme) -> npt.NDArray[np.int64]:
    """Pixels of each class of ``scheme`` (in its order) among ``values``."""
    hist = np.bincount(np.asarray(values, np.uint8).ravel(), minlength=256)
    return np.asarray([hist[c.value] for c in scheme.classes], np.int64)


def block_class_counts(
    values: npt.NDArray[np.uint8], scheme: ClassScheme, edge: int
) -> npt.NDArray[np.uint32]:
    """``[by, bx, class]``: the pixels of each class in each block of ``edge`` pixels (a
    partial last row or column of blocks counts what it has)."""
    h, w = values.shape
    bh, bw = -(-h // edge), -(-w // edge)
    v = np.full((bh * edge, bw * edge), NO_CLASS, np.uint8)
    v[:h, :w] = values
    blocks = v.reshape(bh, edge, bw, edge)
    out = np.empty((bh, bw, len(scheme.classes)), np.uint32)
    for i, c in enumerate(scheme.classes):
        out[..., i] = (blocks == c.value).sum(axis=(1, 3), dtype=np.uint32)
    return out


def palette(scheme: ClassScheme) -> npt.NDArray[np.uint8]:
    """RGBA for each of the 256 values: each class's colour, opaque; the rest clear."""
    pal = np.zeros((256, 4), np.uint8)
    for c in scheme.classes:
        pal[c.value, :3] = [int(c.color[i : i + 2], 16) for i in (1, 3, 5)]
        pal[c.value, 3] = 255
    return pal
