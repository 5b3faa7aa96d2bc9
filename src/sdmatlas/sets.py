"""Species sets: which species a pixel's prediction says are there, and a threshold
calibrated so that a present species is in the set with a chosen probability.

The set at a pixel is ``S(x) = {k : p_k(x) >= lambda}``, refined as in the published
orchid-indicator pipeline (Estopinan et al. 2024, "model2indicators"): at most the
``top_k`` most probable species, none below a ``floor``, none flagged as not native
there; the probabilities of the species kept, renormalised to sum to 1, weigh the
indicators built on the set.

``lambda`` comes from split conformal prediction on presence/absence surveys: with
the scores ``s = 1 - p_k(x_i)`` of every (site, species) pair where the species was
found, ``q`` is their ``ceil((n + 1)(1 - alpha)) / n`` empirical quantile and
``lambda = 1 - q``; then a species present at a new site (exchangeable with the
calibration pairs) is in ``S_lambda`` with probability at least ``1 - alpha``. Pure
functions; the survey reading is in :mod:`sdmatlas.calibration`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sdmatlas.errors import InvalidInputError, NotFoundError
from sdmatlas.quantize import NODATA, SCALE


class SetRule(BaseModel):
    """A release's species-set rule (stored in its manifest once published with one)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    threshold: float = Field(ge=0.0, le=1.0, description="lambda: keep p >= this.")
    alpha: float | None = Field(
        default=None, gt=0.0, lt=1.0, description="The miscoverage it was calibrated for."
    )
    top_k: int | None = Field(default=None, ge=1, description="Keep at most the K likeliest.")
    floor: float | None = Field(default=None, ge=0.0, le=1.0, description="Drop p below this.")
    native_only: bool = Field(
        default=False, description="Drop species flagged as not native in the territory."
    )
    species_thresholds: dict[int, float] | None = Field(
        default=None,
        description="A threshold per species id (Mondrian calibration: each group's lambda "
        "for its species); species not listed keep `threshold`.",
    )
    groups: dict[str, float] | None = Field(
        default=None, description="Mondrian calibration: the lambda of each group (a record)."
    )
    group_by: str | None = Field(default=None, description="What the groups are (iucn).")

    @property
    def threshold_code(self) -> int:
        """The smallest uint8 code whose probability is >= the threshold."""
        return code_at_least(self.threshold)

    def threshold_codes(self, species_ids: npt.NDArray[np.integer]) -> npt.NDArray[np.uint8]:
        """Each species' threshold code (its own threshold, or the rule's)."""
        own = self.species_thresholds or {}
        return np.asarray(
            [code_at_least(own.get(int(i), self.threshold)) for i in species_ids], np.uint8
        )


def code_at_least(p: float) -> int:
    """The smallest uint8 code whose probability is >= ``p``."""
    return min(254, max(0, math.ceil(p / SCALE - 1e-9)))


def read_set_rule(path: Path) -> SetRule:
    """A rule from a JSON file: a report of ``sdmatlas calibrate`` (its ``rule``) or a
    rule itself."""
    try:
        doc = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise NotFoundError(f"species-set rule file {path} does not exist") from None
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"{path} is not JSON: {exc}") from None
    if isinstance(doc, dict) and isinstance(doc.get("rule"), dict):
        doc = doc["rule"]
    try:
        return SetRule.model_validate(doc)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(rule)'}: {e['msg']}" for e in exc.errors()
        )
        raise InvalidInputError(f"{path} is not a species-set rule: {problems}") from None


def check_alpha(alpha: float) -> float:
    if not (isinstance(alpha, float | int) and 0.0 < float(alpha) < 1.0):
        raise InvalidInputError(f"alpha {alpha!r} must lie strictly between 0 and 1 (e.g. 0.1)")
    return float(alpha)


def conformal_threshold(present_p: npt.NDArray[np.floating], alpha: float) -> float:
    """The split-conformal lambda from the probabilities of the species found at the
    calibration sites: ``1 - q`` where ``q`` is the ``ceil((n + 1)(1 - alpha))``-th
    smallest score ``1 - p`` (0 when that rank exceeds n: every species is kept)."""
    alpha = check_alpha(alpha)
    scores = np.sort(1.0 - np.asarray(present_p, dtype=np.float64).ravel())
    n = scores.size
    if n == 0:
        raise InvalidInputError("no presence in the calibration surveys: nothing to calibrate")
    rank = math.ceil((n + 1) * (1.0 - alpha))
    if rank > n:
        return 0.0
    return float(1.0 - scores[rank - 1])


@dataclass(frozen=True)
class PixelSets:
    """Sets at N pixels over S species: membership ``[N, S]`` and the renormalised
    probabilities ``[N, S]`` (0 outside the set; rows of empty sets all 0)."""

    member: npt.NDArray[np.bool_]
    weight: npt.NDArray[np.float64]

    @property
    def size(self) -> npt.NDArray[np.int64]:
        out: npt.NDArray[np.int64] = self.member.sum(axis=1).astype(np.int64)
        return out


def species_sets(
    codes: npt.NDArray[np.uint8],
    rule: SetRule,
    not_native: npt.NDArray[np.bool_] | None = None,
    species_ids: npt.NDArray[np.integer] | None = None,
) -> PixelSets:
    """The set of each pixel from its uint8 codes ``[N, S]`` (NODATA: no prediction);
    ``species_ids`` (the columns' ids) for a rule with per-species thresholds.

    Ties: every species at the threshold is in; the top-K cap keeps the K likeliest,
    ties at the K-th broken by species order (the lower index first), so a set never
    holds more than K species."""
    c = np.asarray(codes)
    p = c.astype(np.float64) * SCALE
    tc: int | npt.NDArray[np.uint8] = rule.threshold_code
    if rule.species_thresholds:
        if species_ids is None:
            raise InvalidInputError("a rule with per-species thresholds needs the species ids")
        tc = rule.threshold_codes(species_ids)
    member = (c != NODATA) & (c >= tc)
    if rule.floor is not None:
        member &= p >= rule.floor - 1e-12
    if rule.native_only and not_native is not None:
        member &= ~np.asarray(not_native, dtype=bool)[None, :]
    if rule.top_k is not None and rule.top_k < c.shape[1]:
        # rank by probability (descending), then species index (ascending)
        key = np.where(member, p, -1.0)
        order = np.lexsort((np.broadcast_to(np.arange(c.shape[1]), c.shape), -key), axis=1)
        keep = np.zeros_like(member)
        np.put_along_axis(keep, order[:, : rule.top_k], True, axis=1)
        member &= keep
    w = np.where(member, p, 0.0)
    total = w.sum(axis=1, keepdims=True)
    weight = np.divide(w, total, out=np.zeros_like(w), where=total > 0)
    return PixelSets(member, weight)
