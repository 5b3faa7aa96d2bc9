"""The release manifest: typed, versioned, checked when a release is opened.

It is the ``sdmatlas`` attribute of the release's root group. A reader first checks
``kind`` and ``format_version`` (refusing versions it does not know, with what to do),
then validates the rest into :class:`Manifest`; unknown keys are refused too, so that a
format change always comes with a version number.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sdmatlas.classes import ClassScheme
from sdmatlas.errors import CorruptDataError, IncompleteReleaseError, NotFoundError
from sdmatlas.grid import Grid
from sdmatlas.publish.indicators import SpeciesInfo
from sdmatlas.release.layout import KNOWN_VERSIONS
from sdmatlas.sets import SetRule


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class IndicatorEntry(_Model):
    title: str
    units: str
    stats: dict[str, Any] = Field(default_factory=dict)
    """min, max, mean, count and the value histogram over the territory."""


class ClassLayerEntry(_Model):
    """A class layer (format 4): its classes, and their pixels over the territory."""

    title: str
    scheme: ClassScheme
    counts: list[int] = Field(default_factory=list)
    """Level-0 pixels of each class, in the scheme's order."""


class SpeciesEntry(_Model):
    """Per-species columns, in the order of the species axis."""

    ids: list[int]
    protected: list[bool]
    invasive: list[bool]
    endemic: list[bool]
    range_km2: list[float]
    genus: list[str] | None = None
    family: list[str] | None = None
    iucn: list[str] | None = None
    """IUCN categories ("" unknown); absent from version-2 releases."""


class Manifest(_Model):
    format_version: int
    kind: Literal["release"]
    release_id: str
    status: Literal["published"]
    published: str
    seconds: float
    grid: Grid
    levels: int
    encoding: dict[str, Any]
    threshold: float
    block: int
    """Edge of the pixel-major chunks and of the finest area-query blocks."""
    aggregates: list[int]
    """Block aggregate edges, finest first."""
    indicator_order: list[str]
    indicators: dict[str, IndicatorEntry]
    species: SpeciesEntry
    source: dict[str, Any]
    """What it was predicted from: model (card, name, version), inputs, territory."""
    publish: dict[str, Any] = Field(default_factory=dict)
    """How it was published: the task tile and the run records (absent from version-2
    releases published before publishing ran as tasks)."""
    species_set: SetRule | None = None
    """The species-set rule of the set-based indicators (version 3)."""
    class_layers: dict[str, ClassLayerEntry] = Field(default_factory=dict)
    """The class layers, in the order of the ``classes`` block aggregate's columns
    (version 4)."""

    def class_columns(self, name: str) -> slice:
        """The columns of class layer ``name`` in ``blocks/<edge>/classes``."""
        start = 0
        for n, entry in self.class_layers.items():
            k = len(entry.scheme.classes)
            if n == name:
                return slice(start, start + k)
            start += k
        raise NotFoundError(f"the release has no class layer {name!r}")

    def species_info(self) -> tuple[SpeciesInfo, list[str], list[str]]:
        """The species flags and range sizes, and the genus and family of each."""
        sp = self.species
        info = SpeciesInfo(
            ids=np.asarray(sp.ids, dtype=np.int64),
            protected=np.asarray(sp.protected, dtype=bool),
            invasive=np.asarray(sp.invasive, dtype=bool),
            endemic=np.asarray(sp.endemic, dtype=bool),
            range_km2=np.asarray(sp.range_km2, dtype=np.float64),
            threshold=self.threshold,
            iucn=np.asarray(sp.iucn if sp.iucn is not None else [], dtype=object),
            species_set=self.species_set,
        )
        n = len(sp.ids)
        return info, list(sp.genus or [""] * n), list(sp.family or [""] * n)

    @property
    def model_name(self) -> str:
        return str(self.source.get("model", {}).get("name") or "unknown")

    @property
    def model_version(self) -> str:
        return str(self.source.get("model", {}).get("version") or "0")

    @property
    def model_card(self) -> dict[str, Any]:
        return dict(self.source.get("model", {}).get("card") or {})


def parse_manifest(attrs: Any, where: str) -> Manifest:
    """The manifest in a root group's ``sdmatlas`` attribute; ``where`` names the release
    in errors."""
    if not isinstance(attrs, dict) or attrs.get("kind") != "release":
        raise NotFoundError(f"{where} is not an sdmatlas release")
    version = attrs.get("format_version")
    if version not in KNOWN_VERSIONS:
        raise IncompleteReleaseError(
            f"release {where} is in format version {version}; this sdmatlas reads versions "
            f"{', '.join(str(v) for v in sorted(KNOWN_VERSIONS))}: publish it again from its "
            "cube with this sdmatlas, or serve it with the sdmatlas that wrote it"
        )
    try:
        return Manifest.model_validate(attrs)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise CorruptDataError(
            f"release {where}: its manifest does not match format version {version} "
            f"({loc}: {first['msg']}; {exc.error_count()} problem(s))"
        ) from None
