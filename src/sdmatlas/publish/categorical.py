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
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
import numpy.typing as npt

from sdmatlas.classes import NO_CLASS, ClassEntry, ClassScheme
from sdmatlas.errors import NotFoundError
from sdmatlas.publish.indicators import Q, SpeciesInfo, set_stats
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
