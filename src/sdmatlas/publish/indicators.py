"""Biodiversity indicators: small typed callables over a species axis, in a registry.

Every indicator takes probabilities ``p[S, ...]`` (float32, NaN outside the
territory) and a :class:`SpeciesInfo` describing the same ``S`` species, and
returns a float32 array of the trailing shape, NaN outside the territory. The
same callables serve whole releases and species groups (a genus, a family, a
status, a list): select the group's rows of ``p`` and ``SpeciesInfo`` first.

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

F32 = npt.NDArray[np.float32]


@dataclass(frozen=True)
class SpeciesInfo:
    """Per-species data the indicators need, aligned with the species axis."""

    ids: npt.NDArray[np.int64]
    protected: npt.NDArray[np.bool_]
    invasive: npt.NDArray[np.bool_]
    endemic: npt.NDArray[np.bool_]
    range_km2: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    threshold: float = 0.5

    def select(self, rows: npt.NDArray[np.intp]) -> SpeciesInfo:
        return SpeciesInfo(
            ids=self.ids[rows],
            protected=self.protected[rows],
            invasive=self.invasive[rows],
            endemic=self.endemic[rows],
            range_km2=self.range_km2[rows] if len(self.range_km2) else self.range_km2,
            threshold=self.threshold,
        )


@dataclass(frozen=True)
class Indicator:
    name: str
    title: str
    units: str
    fn: Callable[[F32, SpeciesInfo], F32]

    def __call__(self, p: F32, info: SpeciesInfo, valid: npt.NDArray[np.bool_]) -> F32:
        """The indicator where ``valid`` (territory pixels), NaN elsewhere."""
        out = np.asarray(self.fn(p, info), dtype=np.float32)
        return np.where(valid, out, np.float32(np.nan)).astype(np.float32)


def _richness(p: F32, info: SpeciesInfo) -> F32:
    return np.asarray(np.nansum(p, axis=0, dtype=np.float64), dtype=np.float32)


def _thresholded(p: F32, info: SpeciesInfo) -> F32:
    return np.asarray((p >= info.threshold).sum(axis=0), dtype=np.float32)


def _rarity(p: F32, info: SpeciesInfo) -> F32:
    r = np.asarray(info.range_km2, dtype=np.float64)
    w = np.where(r > 0, 1.0 / np.where(r > 0, r, 1.0), 0.0)
    return np.tensordot(w, np.nan_to_num(p).astype(np.float64), axes=(0, 0)).astype(np.float32)


def _shannon(p: F32, info: SpeciesInfo) -> F32:
    pp = np.nan_to_num(p).astype(np.float64)
    total = pp.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        q = pp / total
        terms = np.where(q > 0, q * np.log(np.where(q > 0, q, 1.0)), 0.0)
    return np.where(total > 0, -terms.sum(axis=0), 0.0).astype(np.float32)


def _flag_count(flag: str) -> Callable[[F32, SpeciesInfo], F32]:
    def count(p: F32, info: SpeciesInfo) -> F32:
        rows = np.asarray(getattr(info, flag), dtype=bool)
        return np.asarray((p[rows] >= info.threshold).sum(axis=0), dtype=np.float32)

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
