"""The long-lived objects of one API process, built once by the app factory."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from fastapi import Request

from sdmatlas.catalog.db import Catalog
from sdmatlas.serve.layers import GroupSpec, LayerRef, LayerResolver, group_rows
from sdmatlas.serve.reader import OpenRelease, ReleaseReader
from sdmatlas.serve.tiling import IndexCache
from sdmatlas.settings import Settings


@dataclass
class Services:
    settings: Settings
    catalog: Catalog
    layers: LayerResolver
    reader: ReleaseReader
    indexes: IndexCache
    _groups: OrderedDict[tuple[str, str, str], npt.NDArray[np.intp]] = field(
        default_factory=OrderedDict
    )
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def build(cls, settings: Settings, catalog: Catalog) -> Services:
        return cls(
            settings=settings,
            catalog=catalog,
            layers=LayerResolver(catalog, settings.layer_cache_seconds),
            reader=ReleaseReader(settings.chunk_cache_mb * 2**20),
            indexes=IndexCache(settings.tile_index_cache),
        )

    def open(self, ref: LayerRef) -> OpenRelease:
        return self.reader.release(ref.release, ref.storage_uri)

    def group_rows(self, ref: LayerRef, spec: GroupSpec) -> npt.NDArray[np.intp]:
        """The species rows of a group (validated), remembered per release version."""
        key = (ref.release, ref.version, spec.key())
        with self._lock:
            hit = self._groups.get(key)
        if hit is not None:
            return hit
        rows = group_rows(self.open(ref), spec)
        with self._lock:
            self._groups[key] = rows
            while len(self._groups) > 1024:
                self._groups.popitem(last=False)
        return rows


def services(request: Request) -> Services:
    s: Services = request.app.state.services
    return s
