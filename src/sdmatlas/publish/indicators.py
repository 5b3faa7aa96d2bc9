"""Biodiversity indicators: small typed callables over a species axis, in a registry.

Every indicator takes the uint8 codes ``q[S, ...]`` of ``S`` species (``p = q /
254``, see :mod:`sdmatlas.quantize`), a :class:`SpeciesInfo` describing the same
species, and a mask of valid (territory) pixels, and returns a float32 array of
the trailing shape, NaN outside the territory. The same callables serve whole
releases and species groups (a genus, a family, a status, a list): select the
group's rows of ``q`` and ``SpeciesInfo`` first.

Working on codes rather than probabilities is for speed and memory (measured on
10,000 species): a code has 255 values, so ``p ln p`` is a table look-up, and
sums run over groups of species so that no float copy of the whole input is made.

Formulas (``t`` is the release's presence threshold):

- ``richness``: expected species richness, ``sum_s p_s``.
- ``richness_thresholded``: ``#{s : p_s >= t}``.
- ``rarity_weighted_richness``: ``sum_s p_s / R_s``, where ``R_s`` is the
  species' predicted range size in km^2 (``sum`` of ``p_s`` over the whole
  territory times the pixel area). Rare species weigh more.
- ``shannon``: ``-sum_s q_s ln q_s`` with ``q_s = p_s / sum_s p_s`` (0 where
  ``sum_s p_s = 0``).
- ``protected_count``, ``invasive_count``, ``endemic_count``: the number of
  species with that status flag and ``p_s >= t``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np
import numpy.typing as npt

from sdmatlas.errors import NotFoundError
from sdmatlas.quantize import NODATA, SCALE

F32 = npt.NDArray[np.float32]
Q = npt.NDArray[np.uint8]
_GROUP = 512  # species summed together: bounds temporaries to GROUP x pixels
_P = np.arange(256, dtype=np.float64) * SCALE
_P[NODATA] = 0.0
_PLNP = np.where(_P > 0, _P * np.log(np.where(_P > 0, _P, 1.0)), 0.0)


@dataclass(frozen=True)
class SpeciesInfo:
    """Per-species data the indicators need, aligned with the species axis."""

    ids: npt.NDArray[np.int64]
    protected: npt.NDArray[np.bool_]
    invasive: npt.NDArray[np.bool_]
    endemic: npt.NDArray[np.bool_]
    range_km2: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    threshold: float = 0.5
    genus: npt.NDArray[np.object_] = field(default_factory=lambda: np.zeros(0, dtype=object))
    family: npt.NDArray[np.object_] = field(default_factory=lambda: np.zeros(0, dtype=object))
    iucn: npt.NDArray[np.object_] = field(default_factory=lambda: np.zeros(0, dtype=object))
    """IUCN category per species ("" unknown); empty when none is known."""

    def select(self, rows: npt.NDArray[np.intp]) -> SpeciesInfo:
        return SpeciesInfo(
            ids=self.ids[rows],
            protected=self.protected[rows],
            invasive=self.invasive[rows],
            endemic=self.endemic[rows],
            range_km2=self.range_km2[rows] if len(self.range_km2) else self.range_km2,
            threshold=self.threshold,
            genus=self.genus[rows] if len(self.genus) else self.genus,
            family=self.family[rows] if len(self.family) else self.family,
            iucn=self.iucn[rows] if len(self.iucn) else self.iucn,
        )


def threshold_code(t: float) -> int:
    """The smallest code whose probability is at least ``t``."""
    return int(np.ceil(t * 254 - 1e-9))


def _grouped_sum(
    q: Q, fn: Callable[[Q, slice], npt.NDArray[np.generic]]
) -> npt.NDArray[np.float64]:
    out = np.zeros(q.shape[1:], dtype=np.float64)
    for s0 in range(0, q.shape[0], _GROUP):
        g = slice(s0, s0 + _GROUP)
        out += np.asarray(fn(q[g], g), dtype=np.float64)
    return out


@dataclass(frozen=True)
class Indicator:
    name: str
    title: str
    units: str
    fn: Callable[[Q, SpeciesInfo], npt.NDArray[np.generic]]

    def __call__(self, q: Q, info: SpeciesInfo, valid: npt.NDArray[np.bool_]) -> F32:
        """The indicator where ``valid`` (territory pixels), NaN elsewhere."""
        out = np.asarray(self.fn(q, info), dtype=np.float32)
        return np.where(valid, out, np.float32(np.nan)).astype(np.float32)


def _richness(q: Q, info: SpeciesInfo) -> npt.NDArray[np.generic]:
    return _grouped_sum(q, lambda g, _: g.sum(axis=0, dtype=np.uint32)) * SCALE


def _thresholded(q: Q, info: SpeciesInfo) -> npt.NDArray[np.generic]:
    t = threshold_code(info.threshold)
    return _grouped_sum(q, lambda g, _: (g >= t).sum(axis=0, dtype=np.uint32))


def _rarity(q: Q, info: SpeciesInfo) -> npt.NDArray[np.generic]:
    r = np.asarray(info.range_km2, dtype=np.float64)
    w = np.where(r > 0, SCALE / np.where(r > 0, r, 1.0), 0.0).astype(np.float32)

    def part(g: Q, sl: slice) -> npt.NDArray[np.float64]:
        # Species last and contiguous: numpy sums that axis pairwise, in an order that
        # depends on nothing but the species count. (BLAS's tensordot did not give the same
        # last bits for tiles of other shapes, or with other thread counts: publish tasks
        # must write the same bytes however the release is cut into tasks.)
        pm = np.ascontiguousarray(np.moveaxis(g, 0, -1), dtype=np.float32)
        pm *= w[sl]
        out: npt.NDArray[np.float64] = pm.sum(axis=-1, dtype=np.float64)
        return out

    return _grouped_sum(q, part)


def _shannon(q: Q, info: SpeciesInfo) -> npt.NDArray[np.generic]:
    # H = -sum (p/T) ln(p/T) = ln T - (sum p ln p) / T, with T = sum p
    total = np.asarray(_richness(q, info), dtype=np.float64)
    plnp = _grouped_sum(q, lambda g, _: _PLNP[g].sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        h = np.log(total) - plnp / total
    return np.where(total > 0, np.maximum(h, 0.0), 0.0)


def _flag_count(flag: str) -> Callable[[Q, SpeciesInfo], npt.NDArray[np.generic]]:
    def count(q: Q, info: SpeciesInfo) -> npt.NDArray[np.generic]:
        rows = np.asarray(getattr(info, flag), dtype=bool)
        t = threshold_code(info.threshold)
        return _grouped_sum(q, lambda g, sl: (g[rows[sl]] >= t).sum(axis=0, dtype=np.uint32))

    return count


INDICATORS: Mapping[str, Indicator] = MappingProxyType(
    {
        i.name: i
        for i in (
            Indicator("richness", "Expected species richness", "species", _richness),
            Indicator(
                "richness_thresholded",
                "Species richness (p >= threshold)",
                "species",
                _thresholded,
            ),
            Indicator("rarity_weighted_richness", "Rarity-weighted richness", "1/km2", _rarity),
            Indicator("shannon", "Shannon diversity of normalised probabilities", "nats", _shannon),
            Indicator(
                "protected_count", "Protected species present", "species", _flag_count("protected")
            ),
            Indicator(
                "invasive_count", "Invasive species present", "species", _flag_count("invasive")
            ),
            Indicator(
                "endemic_count", "Endemic species present", "species", _flag_count("endemic")
            ),
        )
    }
)


def get_indicator(name: str) -> Indicator:
    if name not in INDICATORS:
        raise NotFoundError(f"unknown indicator {name!r}; known: {sorted(INDICATORS)}")
    return INDICATORS[name]
