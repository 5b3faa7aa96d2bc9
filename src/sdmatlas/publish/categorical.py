"""Class layers a release publishes, in a registry like the indicators'.

A class layer takes the codes ``q[S, y, x]`` and :class:`SpeciesInfo` as an indicator
does and returns one class value per pixel (uint8, :data:`~sdmatlas.classes.NO_CLASS`
off the territory). Publish writes it at every level with the mode pyramid
(:func:`sdmatlas.classes.mode_downsample`), counts its classes per block for area
reports, and the services draw it with its scheme's colours and names.

``set_worst_status``: the most threatened IUCN category among the species of the pixel's
species set (:mod:`sdmatlas.sets`, the release's rule), as in the orchid-indicator
precedent (Estopinan et al. 2024): LC < NT < VU < EN < CR; "none assessed" when the set
holds only species without an assessed category (DD, NE, EW, EX or unknown); no class
(255) for an empty set.

Habitat layers (:func:`habitat_layers`, ``publish --habitats CARD``): a habitat
classifier (:mod:`sdmatlas.models.habitat`) over each pixel's species probabilities gives
the finest level; each coarser level of its hierarchy is a derived class layer.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np
import numpy.typing as npt

from sdmatlas.classes import NO_CLASS, ClassEntry, ClassScheme
from sdmatlas.errors import NotFoundError
from sdmatlas.models.habitat import classifier_for
from sdmatlas.publish.indicators import Q, SpeciesInfo, set_stats
from sdmatlas.quantize import NODATA, SCALE
from sdmatlas.status import ASSESSED, NAMES

#: The IUCN Red List's own category colours (the Red List website's palette)
IUCN_COLORS = {"LC": "#60c659", "NT": "#cce226", "VU": "#f9e814", "EN": "#fc7f3f",
               "CR": "#d81e05"}  # fmt: skip
WORST_STATUS = ClassScheme(
    classes=(
        *(
            ClassEntry(value=i, code=c, name=NAMES[c], color=IUCN_COLORS[c])
            for i, c in enumerate(ASSESSED)
        ),
        ClassEntry(value=len(ASSESSED), code="NA", name="No assessed species", color="#b4b4b4"),
    ),
    empty="empty species set",
)


@dataclass(frozen=True)
class ClassLayer:
    name: str
    title: str
    scheme: ClassScheme
    fn: Callable[[Q, SpeciesInfo], npt.NDArray[np.generic]]

    def __call__(
        self, q: Q, info: SpeciesInfo, valid: npt.NDArray[np.bool_]
    ) -> npt.NDArray[np.uint8]:
        """The classes where ``valid`` (territory pixels), :data:`NO_CLASS` elsewhere."""
        out = np.asarray(self.fn(q, info))
        return np.where(valid, out, NO_CLASS).astype(np.uint8)


CLASS_LAYERS: Mapping[str, ClassLayer] = MappingProxyType(
    {
        c.name: c
        for c in (
            ClassLayer(
                "set_worst_status",
                "Worst IUCN status in the species set",
                WORST_STATUS,
                lambda q, info: set_stats(q, info)["set_worst_status"],
            ),
        )
    }
)


def get_class_layer(name: str) -> ClassLayer:
    if name not in CLASS_LAYERS:
        raise NotFoundError(f"unknown class layer {name!r}; known: {sorted(CLASS_LAYERS)}")
    return CLASS_LAYERS[name]


_memo = threading.local()


@dataclass(frozen=True)
class HabitatLevel:
    """A habitat class layer at one level of a classifier's hierarchy (picklable: publish
    workers load the classifier from the card path, once per process). The finest level
    is the classifier's best output; a coarser one is that class's ancestor."""

    card: str
    depth: int

    def __call__(self, q: Q, info: SpeciesInfo) -> npt.NDArray[np.uint8]:
        out: npt.NDArray[np.uint8] = _level_values(self.card, self.depth)[self._best(q, info)]
        return out

    def _best(self, q: Q, info: SpeciesInfo) -> npt.NDArray[np.intp]:
        """Each pixel's best output (-1 off the territory), once per tile for all levels."""
        hit = getattr(_memo, "last", None)
        if hit is not None and hit[0] is q and hit[1] is info and hit[2] == self.card:
            cached: npt.NDArray[np.intp] = hit[3]
            return cached
        clf = classifier_for(Path(self.card))
        rows = clf.rows_in(info.ids)
        flat = q.reshape(q.shape[0], -1)
        valid = flat[rows[0]] != NODATA
        best = np.full(flat.shape[1], -1, np.intp)
        if valid.any():
            # [pixels, species] probabilities of the territory's pixels only
            probs = _P32[flat[np.ix_(rows, np.flatnonzero(valid))].T]
            best[valid] = clf.classify(probs)
        shaped: npt.NDArray[np.intp] = best.reshape(q.shape[1:])
        _memo.last = (q, info, self.card, shaped)
        return shaped


@functools.lru_cache(maxsize=64)
def _level_values(card: str, depth: int) -> npt.NDArray[np.uint8]:
    """Each output's class value at ``depth``, then NO_CLASS (for -1: off the territory);
    made once per card and level, not per tile (it walks the hierarchy)."""
    values = classifier_for(Path(card)).card.output_values(depth)
    return np.append(values, np.uint8(NO_CLASS))


_P32 = np.where(np.arange(256) == NODATA, 0.0, np.arange(256) * SCALE).astype(np.float32)


def habitat_layers(card_path: Path) -> dict[str, ClassLayer]:
    """The class layers of a habitat classifier: ``habitat_l<d>`` for each level of its
    hierarchy, the finest (the classifier's own output) first."""
    clf = classifier_for(card_path)
    card = clf.card
    path = str(Path(card_path).resolve())
    return {
        f"habitat_l{d}": ClassLayer(
            f"habitat_l{d}",
            f"Habitat, level {d} ({card.name} {card.version})",
            card.scheme(d),
            HabitatLevel(path, d),
        )
        for d in range(card.levels, 0, -1)
    }
