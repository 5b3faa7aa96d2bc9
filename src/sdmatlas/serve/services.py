"""The long-lived objects of one API process, built once by the app factory (and by
each seeding worker). Framework-free: routes reach them through ``api/deps.py``."""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from sdmatlas.catalog.db import Catalog
from sdmatlas.errors import NotFoundError
from sdmatlas.predict.live import LivePredictor
from sdmatlas.serve.cache import DiskCache, TileCache, build_cache
from sdmatlas.serve.offload import HeavySlots
from sdmatlas.serve.ratelimit import RateLimiter
from sdmatlas.serve.tiles.layers import (
    GROUP_INDICATORS,
    GroupSpec,
    LayerRef,
    LayerResolver,
    OgcLayer,
    group_rows,
    release_groups,
)
from sdmatlas.serve.tiles.reader import OpenRelease, ReleaseReader
from sdmatlas.serve.tiles.tiling import IndexCache
from sdmatlas.settings import Settings

T = TypeVar("T")


@dataclass
class Services:
    settings: Settings
    catalog: Catalog
    layers: LayerResolver
    reader: ReleaseReader
    indexes: IndexCache
    tiles: TileCache
    heavy: HeavySlots
    exports: DiskCache
    live: LivePredictor
    job_rate: RateLimiter
    _groups: OrderedDict[tuple[str, str, str], npt.NDArray[np.intp]] = field(
        default_factory=OrderedDict
    )
    _memo: dict[tuple[object, ...], tuple[float, Any]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def build(cls, settings: Settings, catalog: Catalog) -> Services:
        return cls(
            settings=settings,
            catalog=catalog,
            layers=LayerResolver(catalog, settings.layer_cache_seconds),
            reader=ReleaseReader(settings.chunk_cache_mb * 2**20, settings.storage_options),
            indexes=IndexCache(settings.tile_index_cache),
            tiles=build_cache(settings),
            heavy=HeavySlots(settings.heavy_requests, settings.heavy_wait_seconds),
            # COG downloads: files served with Range; never expire by age (versioned keys)
            exports=DiskCache(
                settings.data_dir / "export-cache", settings.export_cache_mb * 2**20, math.inf
            ),
            live=LivePredictor(settings.device, int(settings.live_cache_mb * 2**20)),
            job_rate=RateLimiter(settings.jobs_requests_per_minute),
        )

    def open(self, ref: LayerRef) -> OpenRelease:
        return self.reader.release(ref.release, ref.storage_uri)

    def cached_group_rows(self, ref: LayerRef, spec: GroupSpec) -> npt.NDArray[np.intp] | None:
        """The group's rows if this process already knows them (no I/O), else None."""
        with self._lock:
            return self._groups.get((ref.release, ref.version, spec.key()))

    def group_rows(self, ref: LayerRef, spec: GroupSpec) -> npt.NDArray[np.intp]:
        """The species rows of a group (validated), remembered per release version."""
        key = (ref.release, ref.version, spec.key())
        hit = self.cached_group_rows(ref, spec)
        if hit is not None:
            return hit
        rows = group_rows(self.open(ref), spec)
        with self._lock:
            self._groups[key] = rows
            while len(self._groups) > 1024:
                self._groups.popitem(last=False)
        return rows

    def release_groups(self, ref: LayerRef) -> list[GroupSpec]:
        """The named groups of the layer's release (:func:`layers.release_groups`),
        remembered like the other catalog-derived documents."""
        return self.memo(("groups", ref.release, ref.version),
                         lambda: release_groups(self.open(ref)))  # fmt: skip

    def group_layers(self, release: str) -> list[tuple[LayerRef, GroupSpec]]:
        """Every named group layer of a release: each group indicator it has, by each of
        its groups (what the OGC services list)."""
        out: list[tuple[LayerRef, GroupSpec]] = []
        for ind in GROUP_INDICATORS:
            try:
                ref = self.layers.resolve(f"{release}:group:{ind}")
            except NotFoundError:  # the release lacks the indicator
                continue
            out += [(ref, spec) for spec in self.release_groups(ref)]
        return out

    def resolve_ogc(self, ogc: OgcLayer, legend: bool = False) -> tuple[LayerRef, GroupSpec | None]:
        """The layer an OGC name names, and its group, validated: a group layer without a
        group (but for its legend, the same for all groups) or with an unknown one is
        NotFoundError, an oversized group InvalidInputError."""
        ref = self.layers.resolve(ogc.id)
        if ref.kind == "group" and not legend:
            if ogc.group is None:
                raise NotFoundError(
                    f"a group layer's OGC name names its group: {ref.id}:<genus|family|status>"
                    ":<value> (WMS: with dots for colons; see GetCapabilities)"
                )
            self.group_rows(ref, ogc.group)
        return ref, ogc.group

    def memo(self, key: tuple[object, ...], make: Callable[[], T]) -> T:
        """``make()``, remembered for ``layer_cache_seconds`` under ``key``: catalog-derived
        documents (service capabilities, the releases of each period) that every process
        sees change within that delay, as it sees layers."""
        now = time.monotonic()
        with self._lock:
            hit = self._memo.get(key)
        if hit is not None and now - hit[0] < self.settings.layer_cache_seconds:
            value: T = hit[1]
            return value
        value = make()
        with self._lock:
            if len(self._memo) > 256:
                self._memo.clear()
            self._memo[key] = (now, value)
        return value
