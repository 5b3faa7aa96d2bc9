"""Layer identifiers of the API and their resolution through the catalog.

A layer id names a release and a layer in it, separated by colons:

* ``<release>:species:<species id>``: one species' probability (uint8 codes);
* ``<release>:indicator:<name>``: a precomputed indicator layer;
* ``<release>:group:<indicator>``: an indicator over a species group given by the
  ``genus``, ``family``, ``status`` or ``ids`` query parameter (computed on demand);
* ``<release>:classes:<name>``: a class layer (categorical: uint8 classes of a scheme,
  drawn in the classes' colours, :mod:`sdmatlas.classes`).

Resolutions are kept for a few seconds (``SDMATLAS_LAYER_CACHE_SECONDS``), so a tile
request does not query the database; a retired or republished release is seen by
every process within that delay, and the layer version (ETag, cache keys) changes
with it.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from sdmatlas.catalog import queries
from sdmatlas.catalog.db import Catalog
from sdmatlas.errors import InvalidInputError, NotFoundError
from sdmatlas.publish.groups import STATUSES, select_group
from sdmatlas.publish.indicators import INDICATORS, SET_INDICATORS
from sdmatlas.serve.tiles.reader import OpenRelease
from sdmatlas.serve.tiles.render import SPECIES_FADE

LayerKindName = Literal["species", "indicator", "group", "classes"]
_ID = re.compile(
    r"^([a-z0-9][a-z0-9._-]{0,99}):(species|indicator|group|classes):([A-Za-z0-9_]{1,64})$"
)
GROUP_INDICATORS = ("richness", "richness_thresholded")
"""Group indicators the OGC services list for every group (two per group: a list that
stays readable); :data:`GROUP_COMPUTABLE` are all that a group layer id may name."""
GROUP_COMPUTABLE = (*GROUP_INDICATORS, *(i.name for i in SET_INDICATORS))
MAX_GROUP_SPECIES = 500
#: species ids are 32-bit in the catalog; larger numbers name no layer (404, not a 500)
MAX_SPECIES_ID = 2**31 - 1


@dataclass(frozen=True)
class LayerRef:
    id: str
    release: str
    storage_uri: str
    kind: LayerKindName
    species_id: int | None
    indicator: str | None
    title: str
    units: str
    version: str
    default_range: tuple[float, float]
    bbox: tuple[float, float, float, float] | None  # lon/lat, where the data is

    @property
    def var(self) -> str:
        return "probability" if self.kind == "species" else str(self.indicator)

    @property
    def fade(self) -> float:
        """The default fade of the layer's colours: species maps fade in from p = 0."""
        return SPECIES_FADE if self.kind == "species" else 0.0

    @property
    def dtype(self) -> str:
        return "uint8" if self.kind in ("species", "classes") else "float32"


def parse_layer_id(layer_id: str) -> tuple[str, LayerKindName, str]:
    m = _ID.match(layer_id)
    if m is None:
        raise NotFoundError(
            f"layer {layer_id[:120]!r} is not a layer id: use <release>:species:<id>, "
            "<release>:indicator:<name>, <release>:classes:<name> or "
            "<release>:group:<indicator> (see GET /layers)"
        )
    kind: LayerKindName = m.group(2)  # type: ignore[assignment]
    name = m.group(3)
    if kind == "species" and (not name.isdigit() or int(name) > MAX_SPECIES_ID):
        raise NotFoundError(
            f"layer {layer_id[:120]!r}: a species id is an integer from 0 to {MAX_SPECIES_ID}"
        )
    return m.group(1), kind, name


class LayerResolver:
    """Layer ids to :class:`LayerRef`, through the catalog, with a short TTL cache."""

    def __init__(self, catalog: Catalog, ttl_seconds: float) -> None:
        self.catalog = catalog
        self.ttl = ttl_seconds
        self._cache: dict[str, tuple[float, LayerRef]] = {}
        self._lock = threading.Lock()

    def cached(self, layer_id: str) -> LayerRef | None:
        """The layer if this process resolved it within the TTL, without asking the
        catalog (safe on the event loop); else None."""
        with self._lock:
            hit = self._cache.get(layer_id)
        if hit is not None and time.monotonic() - hit[0] < self.ttl:
            return hit[1]
        return None

    def resolve(self, layer_id: str) -> LayerRef:
        hit = self.cached(layer_id)
        if hit is not None:
            return hit
        now = time.monotonic()
        ref = self._lookup(layer_id)
        with self._lock:
            if len(self._cache) > 100_000:
                self._cache.clear()
            self._cache[layer_id] = (now, ref)
        return ref

    def prime(self, refs: Iterable[LayerRef]) -> None:
        """Take layers another process resolved just now (a seed's workers get their
        layers from the seed, not one catalog query each)."""
        now = time.monotonic()
        with self._lock:
            for ref in refs:
                self._cache[ref.id] = (now, ref)

    def _lookup(self, layer_id: str) -> LayerRef:
        release, kind, name = parse_layer_id(layer_id)
        with self.catalog.session() as s:
            rel = queries.get_release(s, release)
            if rel.status != "published":
                raise NotFoundError(f"release {release!r} is {rel.status}, not published")
            if kind == "group":
                if name not in GROUP_COMPUTABLE:
                    raise NotFoundError(
                        f"group indicator {name!r} is not served; use one of "
                        f"{', '.join(GROUP_COMPUTABLE)}"
                    )
                ind = INDICATORS[name]
                published = rel.published_at.isoformat() if rel.published_at else ""
                version = hashlib.sha256(f"{rel.key}\n{published}\ngroup".encode()).hexdigest()
                rich = queries.find_layers(s, release=release, indicator=name, limit=1)
                vmax = rich[0].max if rich and rich[0].max is not None else 1.0
                return LayerRef(
                    layer_id, release, rel.storage_uri, "group", None, name,
                    f"{ind.title} of a species group", ind.units, version[:16],
                    (0.0, float(vmax)), rich[0].bbox if rich else None,
                )  # fmt: skip
            if kind == "species":
                try:
                    sid = int(name)
                except ValueError:
                    raise NotFoundError(f"species id {name!r} is not an integer") from None
                found = queries.find_layers(s, release=release, species_id=sid, limit=1)
                default = (0.0, 1.0)
            else:
                found = queries.find_layers(s, release=release, indicator=name, kind=kind, limit=1)
                default = (0.0, 1.0)
                if found and found[0].min is not None and found[0].max is not None:
                    lo, hi = float(found[0].min), float(found[0].max)
                    default = (lo, hi if hi > lo else lo + 1.0)
            if not found:
                what = f"species {name}" if kind == "species" else f"{kind} {name!r}"
                raise NotFoundError(f"release {release!r} has no layer for {what}")
            info = found[0]
            return LayerRef(
                layer_id, release, rel.storage_uri, kind, info.species_id, info.indicator,
                info.title, info.units, info.version, default, info.bbox,
            )  # fmt: skip


@dataclass(frozen=True)
class GroupSpec:
    kind: Literal["genus", "family", "status", "ids"]
    value: str

    def key(self) -> str:
        return f"{self.kind}={self.value}"


def parse_group(
    genus: str | None, family: str | None, status: str | None, ids: str | None
) -> GroupSpec:
    given = [
        (k, v)
        for k, v in (("genus", genus), ("family", family), ("status", status), ("ids", ids))
        if v is not None
    ]
    if len(given) != 1:
        raise InvalidInputError(
            "a group layer needs exactly one of genus, family, status or ids "
            "(for example ?genus=Quercus or ?ids=1,2,3)"
        )
    k, v = given[0]
    return GroupSpec(k, v.strip())  # type: ignore[arg-type]


def group_rows(rel: OpenRelease, spec: GroupSpec) -> npt.NDArray[np.intp]:
    rows = select_group(rel.release, spec.kind, spec.value)
    if not len(rows):
        raise NotFoundError(f"no species of release {rel.key} is in the group {spec.key()}")
    if len(rows) > MAX_GROUP_SPECIES:
        raise InvalidInputError(
            f"the group has {len(rows)} species; dynamic group maps take at most "
            f"{MAX_GROUP_SPECIES} (use a precomputed indicator layer for larger groups)"
        )
    return rows


#: OGC names of group layers carry the group: genus, family or status, and a value of
#: letters, digits, ``_`` and ``-`` (ids lists are for the XYZ route's ``ids=``).
OGC_GROUP_KINDS = ("genus", "family", "status")
_GROUP_VALUE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_DOTTED = re.compile(
    r"^(?:(?P<release>[a-z0-9][a-z0-9._-]{0,99})\.)?(?P<kind>species|indicator|group|classes)"
    r"\.(?P<name>[A-Za-z0-9_]{1,64})(?:\.(?P<gkind>genus|family|status)"
    r"\.(?P<gvalue>[A-Za-z0-9_-]{1,64}))?$"
)


@dataclass(frozen=True)
class OgcLayer:
    """What an OGC layer name names: an API layer id (a period layer's has no release:
    ``species:12``) and, for a group layer, its group."""

    id: str
    group: GroupSpec | None = None


def ogc_name(layer: str, group: GroupSpec | None = None, sep: str = ":") -> str:
    """The OGC name of an API layer id and group. WMS uses ``sep="."``: MapProxy's
    ``autoconfig`` (and its layer ``sources``) read ``:`` as ``source:sublayer``, so
    ``demo-1.0.0.species.12``; WMTS and TMS keep the API ids. A group layer appends its
    group: ``demo-1.0.0:group:richness:genus:Quercus``."""
    name = layer if group is None else f"{layer}:{group.kind}:{group.value}"
    return name.replace(":", sep)


def group_params(spec: GroupSpec | None) -> dict[str, str]:
    """The tile query parameters that give a group (``{"genus": "Quercus"}``)."""
    return {} if spec is None else {spec.kind: spec.value}


def group_title(ref: LayerRef, spec: GroupSpec) -> str:
    """The title of a named group layer: "Expected species richness of genus Quercus"."""
    return f"{INDICATORS[str(ref.indicator)].title} of {spec.kind} {spec.value}"


def can_name_group(spec: GroupSpec) -> bool:
    """Whether an OGC name can carry the group (its value fits the name grammar)."""
    return spec.kind in OGC_GROUP_KINDS and _GROUP_VALUE.match(spec.value) is not None


def parse_ogc_name(name: str) -> OgcLayer:
    """An OGC layer name in either form (``:`` or ``.`` separated) as an API layer id and
    a group. Release ids have no ``:`` and kinds, species ids and indicator names no
    ``.``, so both forms read unambiguously from the right. Names that fit neither form
    are returned as they are (the resolver then says what a layer id looks like)."""
    if ":" in name:
        parts = name.split(":")
        grouped = len(parts) == 5 and parts[1] == "group" and parts[3] in OGC_GROUP_KINDS
        if grouped and _GROUP_VALUE.match(parts[4]):
            spec = GroupSpec(parts[3], parts[4])  # type: ignore[arg-type]
            return OgcLayer(":".join(parts[:3]), spec)
        return OgcLayer(name)
    m = _DOTTED.match(name)
    if m is None:
        return OgcLayer(name)
    head = f"{m['release']}:" if m["release"] else ""
    lid = f"{head}{m['kind']}:{m['name']}"
    if m["gkind"]:
        if m["kind"] != "group" or not m["release"]:
            return OgcLayer(name)
        return OgcLayer(lid, GroupSpec(m["gkind"], m["gvalue"]))  # type: ignore[arg-type]
    return OgcLayer(lid)


def release_groups(rel: OpenRelease) -> list[GroupSpec]:
    """The groups of a release that OGC names can carry: each genus and family of its
    species, and each status some species has (the layers the OGC services list)."""
    info, genus, family = rel.release.species_info()
    out: list[GroupSpec] = []
    for kind, names in (("family", family), ("genus", genus)):
        for value in sorted({n for n in names if n}):
            spec = GroupSpec(kind, value)  # type: ignore[arg-type]
            if can_name_group(spec):
                out.append(spec)
    out += [GroupSpec("status", s) for s in STATUSES if getattr(info, s).any()]
    return out


def layer_id(release: str, name: str) -> str:
    """The API id of a catalog layer: ``<release>:species:12``, ``<release>:indicator:x``."""
    return f"{release}:{name.replace('/', ':')}"


def published_layers(catalog: Catalog) -> list[queries.LayerInfo]:
    """Every layer of the published releases, newest release first (for OGC documents)."""
    out: list[queries.LayerInfo] = []
    with catalog.session() as s:
        while True:
            page = queries.find_layers(s, limit=queries.MAX_LIMIT, offset=len(out))
            out.extend(page)
            if len(page) < queries.MAX_LIMIT:
                return out
