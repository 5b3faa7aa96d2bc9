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
from sdmatlas.serve.cache import DiskCache, TileCache, build_cache
from sdmatlas.serve.offload import HeavySlots
from sdmatlas.serve.tiles.layers import GroupSpec, LayerRef, LayerResolver, group_rows
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
            reader=ReleaseReader(settings.chunk_cache_mb * 2**20),
            indexes=IndexCache(settings.tile_index_cache),
            tiles=build_cache(settings),
            heavy=HeavySlots(settings.heavy_requests, settings.heavy_wait_seconds),
            # COG downloads: files served with Range; never expire by age (versioned keys)
            exports=DiskCache(
                settings.data_dir / "export-cache", settings.export_cache_mb * 2**20, math.inf
            ),
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
