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

The worst status present in the set (the class layer ``set_worst_status``,
:mod:`sdmatlas.publish.categorical`) comes from the same pass.

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

from sdmatlas.classes import NO_CLASS
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
    # Species-major, a group of species at a time, on the uint8 codes (as the other
    # indicators: a column-block version with float copies of all species took 10.7 s a
    # 256 x 256 x 10,000 tile, this one about a third of that). NODATA (255) counts as a
    # member here: it occurs only outside the territory, which the caller masks.
    rule = info.set_rule
    tc = rule.threshold_code
    n = q.shape[0]
    # per-species thresholds (a Mondrian rule): the level starts at the lowest of them, and
    # each species' own code masks it (one more comparison a group)
    own: npt.NDArray[np.uint8] | None = None
    if rule.species_thresholds:
        own = rule.threshold_codes(info.ids)
        tc = int(own.min()) if n else tc
    if rule.floor is not None:
        fc = int(np.ceil(rule.floor / SCALE - 1e-9))
        tc = max(tc, fc)
        own = None if own is None else np.maximum(own, fc).astype(np.uint8)
    flat = q.reshape(n, -1)
    iucn = np.asarray(info.iucn if len(info.iucn) else np.full(n, "", object))
    rows = {c: iucn == c for c in ASSESSED}
    rows["threatened"] = np.isin(iucn, THREATENED)
    for f in ("protected", "invasive", "endemic"):
        rows[f] = np.asarray(getattr(info, f), dtype=bool)
    keep = ~rows["invasive"] if rule.native_only else np.ones(n, bool)
    groups = [(s0, min(n, s0 + _GROUP)) for s0 in range(0, n, _GROUP)]

    def codes(a: int, b: int) -> Q:
        g = flat[a:b]
        return g if keep[a:b].all() else g[keep[a:b]]

    def above_own(a: int, b: int, g: Q) -> npt.NDArray[np.bool_] | None:
        """Whether each code reaches its species' own threshold (None: one threshold)."""
        return None if own is None else g >= own[a:b][keep[a:b]][:, None]

    def count_ge(level: npt.NDArray[np.uint8]) -> npt.NDArray[np.int64]:
        out = np.zeros(flat.shape[1], np.int64)
        for a, b in groups:
            g = codes(a, b)
            ge, mine = g >= level, above_own(a, b, g)
            out += (ge if mine is None else ge & mine).view(np.uint8).sum(axis=0, dtype=np.uint32)
        return out

    npx = flat.shape[1]
    level = np.full(npx, tc, np.uint8)  # members: code > level, and ties at level in room
    room = np.full(npx, n, np.int64)
    if rule.top_k is not None and rule.top_k < int(keep.sum()):
        # the k-th largest member code per pixel, by bisection on the 255 code values
        # (8 passes of comparisons: a partial sort of 10,000 species per pixel took 5x more)
        k = rule.top_k
        capped = count_ge(level) > k
        lo, hi = np.full(npx, tc, np.int64), np.full(npx, 254, np.int64)
        while (lo < hi).any():
            mid = (lo + hi + 1) // 2
            ok = count_ge(mid.astype(np.uint8)) >= k
            lo, hi = np.where(ok, mid, lo), np.where(ok, hi, mid - 1)
        level = np.where(capped, lo, tc).astype(np.uint8)
        above_level = count_ge((level.astype(np.int64) + 1).astype(np.uint8))
        room = np.where(capped, k - above_level, n)
    acc = {key: np.zeros(npx, np.float64) for key in ("size", "psum", "plnp", *rows)}
    capped_any = bool((room < n).any())
    # p ln p of members only: 0 below the threshold code (no mask needed when uncapped)
    plnp_table = np.where(np.arange(256) >= tc, _PLNP32, np.float32(0)).astype(np.float32)
    seen_ties = np.zeros(npx, np.int64)
    for a, b in groups:
        g = codes(a, b)
        if not len(g):
            continue
        mine = above_own(a, b, g)
        if capped_any:  # ties at a capped pixel's k-th code: the first ones in order
            tie = g == level if mine is None else (g == level) & mine
            order = seen_ties + np.cumsum(tie, axis=0, dtype=np.int32)
            seen_ties = order[-1].astype(np.int64)
            m = (g > level) | (tie & (order <= room))
            m = m if mine is None else m & mine
            mu = m.view(np.uint8)
            plnp = (plnp_table[g] * mu).sum(axis=0, dtype=np.float32)
        elif mine is not None:
            m = (g >= level) & mine
            mu = m.view(np.uint8)
            plnp = (plnp_table[g] * mu).sum(axis=0, dtype=np.float32)
        else:
            m = g >= level
            mu = m.view(np.uint8)
            plnp = plnp_table[g].sum(axis=0, dtype=np.float32)
        # uint8 products and sums with a small accumulator type: a bool sum or a float
        # copy would cost several times more on 10,000 species
        acc["size"] += mu.sum(axis=0, dtype=np.uint32)
        acc["psum"] += (g * mu).sum(axis=0, dtype=np.uint32) * SCALE
        acc["plnp"] += plnp
        for key, v in rows.items():
            sel = v[a:b][keep[a:b]]
            if not sel.any():
                continue
            if key == "threatened":
                acc[key] += (g[sel] * mu[sel]).sum(axis=0, dtype=np.uint32)
            else:
                acc[key] += mu[sel].sum(axis=0, dtype=np.uint32)
    size, psum = acc["size"], acc["psum"]
    with np.errstate(invalid="ignore", divide="ignore"):
        share = {c: np.where(size > 0, acc[c] / size, 0.0) for c in ASSESSED}
        mass = np.where(psum > 0, acc["threatened"] * SCALE / psum, 0.0)
        shannon = np.where(psum > 0, np.log(psum) - acc["plnp"] / psum, 0.0)
    worst = np.full(npx, float(len(ASSESSED)))  # a set with no assessed species
    for rank, c in enumerate(ASSESSED):
        worst = np.where(acc[c] > 0, float(rank), worst)
    out = {
        "set_worst_status": np.where(size > 0, worst, float(NO_CLASS)),
        "set_size": size,
        **{f"set_share_{c.lower()}": share[c] for c in ASSESSED},
        "set_threatened_mass": mass,
        "set_shannon": np.maximum(shannon, 0.0),
        **{f"set_{f}_count": acc[f] for f in ("protected", "invasive", "endemic")},
    }
    return {key: v.reshape(q.shape[1:]) for key, v in out.items()}


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
