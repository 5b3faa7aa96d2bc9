"""A published release, opened: its typed manifest and chunk sources for its arrays.

Opened only through :meth:`sdmatlas.storage.ReleaseStore.open` (or
:func:`sdmatlas.storage.open_release`, which finds the store from a location). Readers
ask it for arrays by meaning (``probability(level)``, ``pixels()``, ``aggregate(edge,
name)``), never by path.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import numpy.typing as npt

from sdmatlas.chunks import ChunkReader
from sdmatlas.errors import NotFoundError
from sdmatlas.grid import Grid
from sdmatlas.publish.indicators import SpeciesInfo
from sdmatlas.release import layout
from sdmatlas.release.manifest import Manifest, parse_manifest
from sdmatlas.release.sources import ReleaseData, open_source


class Release:
    def __init__(self, data: ReleaseData, location: str, engine: str) -> None:
        self.data = data
        self.location = location
        """Where the store keeps it (what the catalog records as its storage URI)."""
        self.engine = engine
        """``zarr`` (local directory), ``zarr-fsspec`` (object store) or ``tiledb``."""
        root = data.metadata("")
        self.manifest: Manifest = parse_manifest(
            (root.get("attributes") or {}).get(layout.MANIFEST_ATTR), data.name
        )
        species = data.metadata(layout.SPECIES)
        names = (species.get("attributes") or {}).get(layout.NAMES_ATTR) or []
        self.species_ids = np.asarray(self.manifest.species.ids, dtype=np.int64)
        self.species_names = [str(n) for n in names] or [f"species {i}" for i in self.species_ids]
        self._row_of = {int(sid): i for i, sid in enumerate(self.species_ids)}
        self._sources: dict[str, ChunkReader] = {}
        self._lock = threading.Lock()

    # -- what it is ------------------------------------------------------------------

    @property
    def id(self) -> str:
        return self.manifest.release_id

    @property
    def grid(self) -> Grid:
        return self.manifest.grid

    @property
    def n_levels(self) -> int:
        return self.manifest.levels

    def species_info(self) -> tuple[SpeciesInfo, list[str], list[str]]:
        return self.manifest.species_info()

    def species_row(self, species_id: int) -> int:
        """The species' row on the species axis (a dict look-up: on the tile path)."""
        try:
            return self._row_of[species_id]
        except KeyError:
            raise NotFoundError(f"species {species_id} is not in release {self.id}") from None

    # -- its arrays ------------------------------------------------------------------

    def source(self, key: str) -> ChunkReader:
        """The chunk reader of one array (opened once, by :func:`open_source`)."""
        with self._lock:
            hit = self._sources.get(key)
        if hit is not None:
            return hit
        reader = open_source(self.data, key)
        with self._lock:
            self._sources.setdefault(key, reader)
            return self._sources[key]

    def level(self, level: int, var: str) -> ChunkReader:
        """``probability`` ([species, y, x] codes), an indicator (float32 [y, x]) or a
        class layer (uint8 [y, x]) at ``level``."""
        if not 0 <= level < self.n_levels:
            raise NotFoundError(f"release {self.id} has levels 0 to {self.n_levels - 1}")
        m = self.manifest
        if var != layout.PROBABILITY and var not in m.indicators and var not in m.class_layers:
            raise NotFoundError(
                f"release {self.id} has no indicator or class layer {var!r}; "
                f"it has {', '.join([*m.indicator_order, *m.class_layers])}"
            )
        return self.source(layout.level_array(level, var))

    def pixels(self) -> ChunkReader:
        """[y, x, species] codes in 8 x 8 x S chunks: every species at a point."""
        return self.source(layout.PIXELS)

    def territory(self) -> ChunkReader:
        return self.source(layout.TERRITORY)

    def aggregate(self, edge: int, name: str) -> ChunkReader:
        known = (
            *layout.AGGREGATES,
            *((layout.CLASS_COUNTS,) if self.manifest.class_layers else ()),
        )
        if edge not in self.manifest.aggregates or name not in known:
            raise NotFoundError(f"release {self.id} has no block aggregate {name} at {edge}")
        return self.source(layout.aggregate(edge, name))

    def stats(self, name: str) -> npt.NDArray[Any]:
        """A per-species statistics table (``histogram``, ``presence``, ``extent``)."""
        if name not in layout.STATS:
            raise NotFoundError(f"no statistics {name!r}; known: {', '.join(layout.STATS)}")
        return self.read(layout.stats(name))

    def read(self, key: str) -> npt.NDArray[Any]:
        """A whole (small) array."""
        src = self.source(key)
        return src.region(tuple(slice(0, n) for n in src.shape))

    def __repr__(self) -> str:
        return f"Release({self.id!r}, engine={self.engine!r})"
