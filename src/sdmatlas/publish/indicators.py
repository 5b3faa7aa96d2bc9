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

Set-based indicators, over the pixel's species set ``S`` (:mod:`sdmatlas.sets`: ``p_s >=
lambda``, the release's set rule, or its threshold when it has none; at most ``top_k``,
none below ``floor``, no invasive species when ``native_only``), with ``w_s = p_s /
sum_S p`` the renormalised probabilities; an empty set gives 0 everywhere:

- ``set_size``: ``|S|``.
- ``set_share_<lc|nt|vu|en|cr>``: the share of ``S`` in that IUCN category.
- ``set_threatened_mass``: ``sum_{s in S, VU/EN/CR} w_s``.
- ``set_shannon``: ``-sum_S w_s ln w_s``.
- ``set_protected_count``, ``set_invasive_count``, ``set_endemic_count``: flagged
  species in ``S``.

They are computed together in one pass over the codes (a task asks for them one by
one: the pass is kept per thread for the same codes and species).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np
import numpy.typing as npt

from sdmatlas.errors import NotFoundError
from sdmatlas.quantize import NODATA, SCALE
from sdmatlas.sets import SetRule
from sdmatlas.status import ASSESSED, THREATENED

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
    species_set: SetRule | None = None
    """The release's species-set rule; None: ``p >= threshold``."""

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
            species_set=self.species_set,
        )

    @property
    def set_rule(self) -> SetRule:
        return self.species_set or SetRule(threshold=self.threshold)


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


_SET_BLOCK = 1 << 24  # codes per block of rows: bounds the set pass's temporaries
_P32 = _P.astype(np.float32)
_PLNP32 = _PLNP.astype(np.float32)
_memo = threading.local()


def set_stats(q: Q, info: SpeciesInfo) -> dict[str, npt.NDArray[np.float64]]:
    """Every set-based indicator of ``q[S, ...]`` at once (remembered per thread for the
    same ``q`` and ``info`` objects: a publish task asks for them one after the other)."""
    hit = getattr(_memo, "last", None)
    if hit is not None and hit[0] is q and hit[1] is info:
        out: dict[str, npt.NDArray[np.float64]] = hit[2]
        return out
    out = _set_stats(q, info)
    _memo.last = (q, info, out)
    return out


def _set_stats(q: Q, info: SpeciesInfo) -> dict[str, npt.NDArray[np.float64]]:
    rule = info.set_rule
    tc = rule.threshold_code
    if rule.floor is not None:
        tc = max(tc, int(np.ceil(rule.floor / SCALE - 1e-9)))
    n = q.shape[0]
    iucn = np.asarray(info.iucn if len(info.iucn) else np.full(n, "", object))
    cats = {c: iucn == c for c in ASSESSED}
    threatened = np.isin(iucn, THREATENED)
    flags = {f: np.asarray(getattr(info, f), dtype=bool) for f in ("protected", "invasive",
                                                                    "endemic")}  # fmt: skip
    excluded = flags["invasive"] if rule.native_only else np.zeros(n, bool)
    flat = q.reshape(n, -1)
    npx = flat.shape[1]
    acc = {k: np.zeros(npx, np.float64) for k in ("size", "psum", "thr", "plnp",
                                                   *cats, *flags)}  # fmt: skip
    step = max(1, _SET_BLOCK // max(1, n))
    for a in range(0, npx, step):
        c = flat[:, a : a + step]
        m = (c >= tc) & (c != NODATA)
        m[excluded] = False
        if rule.top_k is not None and rule.top_k < n:
            m = _top_k(c, m, rule.top_k)
        sl = slice(a, a + step)
        acc["size"][sl] = m.sum(axis=0)
        pm = np.where(m, _P32[c], np.float32(0))
        acc["psum"][sl] = pm.sum(axis=0, dtype=np.float64)
        acc["thr"][sl] = pm[threatened].sum(axis=0, dtype=np.float64)
        acc["plnp"][sl] = np.where(m, _PLNP32[c], np.float32(0)).sum(axis=0, dtype=np.float64)
        for k, rows in (*cats.items(), *flags.items()):
            acc[k][sl] = m[rows].sum(axis=0)
    size, psum = acc["size"], acc["psum"]
    with np.errstate(invalid="ignore", divide="ignore"):
        share = {c: np.where(size > 0, acc[c] / size, 0.0) for c in cats}
        mass = np.where(psum > 0, acc["thr"] / psum, 0.0)
        shannon = np.where(psum > 0, np.log(psum) - acc["plnp"] / psum, 0.0)
    shape = q.shape[1:]
    out = {
        "set_size": size,
        **{f"set_share_{c.lower()}": share[c] for c in cats},
        "set_threatened_mass": mass,
        "set_shannon": np.maximum(shannon, 0.0),
        **{f"set_{f}_count": acc[f] for f in flags},
    }
    return {k: v.reshape(shape) for k, v in out.items()}


def _top_k(c: Q, m: npt.NDArray[np.bool_], k: int) -> npt.NDArray[np.bool_]:
    """Members restricted to the k likeliest per pixel (column), ties at the k-th code
    broken by species order (the lower index first), as :func:`sdmatlas.sets.species_sets`."""
    key = np.where(m, c.astype(np.int16), np.int16(-1))
    kth = np.partition(key, key.shape[0] - k, axis=0)[key.shape[0] - k]  # k-th largest
    above = m & (key > kth)
    tied = m & (key == kth)
    room = k - above.sum(axis=0)
    out: npt.NDArray[np.bool_] = above | (tied & (np.cumsum(tied, axis=0) <= room))
    return out


def _set_indicator(name: str) -> Callable[[Q, SpeciesInfo], npt.NDArray[np.generic]]:
    def value(q: Q, info: SpeciesInfo) -> npt.NDArray[np.generic]:
        return set_stats(q, info)[name]

    return value


SET_INDICATORS = (
    Indicator("set_size", "Species in the set", "species", _set_indicator("set_size")),
    *(
        Indicator(
            f"set_share_{c.lower()}",
            f"Share of the set in IUCN category {c}",
            "1",
            _set_indicator(f"set_share_{c.lower()}"),
        )
        for c in ASSESSED
    ),
    Indicator(
        "set_threatened_mass",
        "Probability mass of threatened species (VU, EN, CR) in the set",
        "1",
        _set_indicator("set_threatened_mass"),
    ),
    Indicator("set_shannon", "Shannon diversity of the set", "nats", _set_indicator("set_shannon")),
    *(
        Indicator(
            f"set_{f}_count",
            f"{f.capitalize()} species in the set",
            "species",
            _set_indicator(f"set_{f}_count"),
        )
        for f in ("protected", "invasive", "endemic")
    ),
)


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
            *SET_INDICATORS,
        )
    }
)


def get_indicator(name: str) -> Indicator:
    if name not in INDICATORS:
        raise NotFoundError(f"unknown indicator {name!r}; known: {sorted(INDICATORS)}")
    return INDICATORS[name]
