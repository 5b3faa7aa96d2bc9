"""Layers across periods: the WMS TIME dimension.

A release layer (``<release>:species:12``) belongs to one release. Its period layer
(``species:12``) is the same species or indicator in every period that has a
published release, with the period chosen by the request's TIME value. Each period
is served by its newest published release, so a republished period replaces the old
one without a name change. The default period, used when TIME is left out, is the
latest period label in sort order (ISO 8601 years and ``2041/2060`` intervals sort
in time order), and ``TIME=current`` (WMS 1.3.0 Annex C.2) asks for it too; since
every period layer has a default, MissingDimensionValue never applies to it. Periods
are ISO 8601 values (a year, month, date or interval), as the catalog requires.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sdmatlas.catalog import queries
from sdmatlas.errors import InvalidDimensionError, NotFoundError
from sdmatlas.serve.services import Services

_NAME = re.compile(r"^(species|indicator):[A-Za-z0-9_]{1,64}$")


class DimensionError(InvalidDimensionError):
    """A TIME value that names no period of the layer."""


@dataclass(frozen=True)
class PeriodLayer:
    name: str  # "species:12" or "indicator:richness"
    title: str
    kind: str
    periods: tuple[str, ...]  # sorted, the last one the default
    bbox: tuple[float, float, float, float] | None  # lon/lat union over the periods

    @property
    def default(self) -> str:
        return self.periods[-1]


def is_period_layer(name: str) -> bool:
    return _NAME.match(name) is not None


def served_releases(svc: Services) -> dict[str, str]:
    """Period -> key of its newest published release."""

    def load() -> dict[str, str]:
        with svc.catalog.session() as s:
            out: dict[str, str] = {}
            for r in queries.list_releases(s):  # newest first
                out.setdefault(r.period, r.key)
            return out

    return svc.memo(("served-releases",), load)


def period_layers(svc: Services, infos: list[queries.LayerInfo]) -> list[PeriodLayer]:
    """One period layer per species or indicator of the served releases."""
    served = served_releases(svc)
    found: dict[str, list[queries.LayerInfo]] = {}
    for info in infos:
        if served.get(info.period) == info.release and info.kind in ("species", "indicator"):
            found.setdefault(info.name.replace("/", ":"), []).append(info)
    out = []
    for name, items in found.items():
        boxes = [i.bbox for i in items if i.bbox is not None]
        bbox = None
        if boxes:
            bbox = (min(b[0] for b in boxes), min(b[1] for b in boxes),
                    max(b[2] for b in boxes), max(b[3] for b in boxes))  # fmt: skip
        periods = tuple(sorted({i.period for i in items}))
        out.append(PeriodLayer(name, items[0].title, items[0].kind, periods, bbox))
    return out


def resolve(svc: Services, name: str, time: str | None) -> str:
    """The release layer id showing period layer ``name`` at ``time`` (default: the
    latest period that has it). Raises NotFoundError for a name in no period and
    :class:`DimensionError` for a TIME naming no period of the layer."""
    served = served_releases(svc)
    having = []
    for period in sorted(served, reverse=True):
        try:
            svc.layers.resolve(f"{served[period]}:{name}")
        except NotFoundError:
            continue
        having.append(period)
    if not having:
        raise NotFoundError(f"layer {name!r} is in no published period")
    if time is None or time == "" or time.lower() == "current":  # WMS 1.3.0 Annex C.2
        return f"{served[having[0]]}:{name}"
    if time not in having:
        raise DimensionError(
            f"TIME={time[:40]!r} is not a period of {name}; use one of {', '.join(sorted(having))}"
        )
    return f"{served[time]}:{name}"
