"""Reading release pixels for tiles: open each release once, keep decoded chunks.

Each release is opened once per process (not per request) and its level arrays
are kept. Decoded chunks live in one bounded LRU shared by all releases (keyed by
release, array, species row and chunk position), so neighbouring tiles, zooms that
reuse a level, and repeated requests decode a chunk once. A tile then gathers its
pixels from the few chunks its index map touches (no per-request dataset opening,
no per-request warp).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from sdmatlas.classes import ClassScheme
from sdmatlas.errors import NotFoundError
from sdmatlas.grid import Grid
from sdmatlas.publish.indicators import INDICATORS, SpeciesInfo
from sdmatlas.quantize import NODATA
from sdmatlas.release import Release
from sdmatlas.release.manifest import ClassLayerEntry
from sdmatlas.serve.tiles.tiling import TileIndex
from sdmatlas.storage import open_release


class ChunkCache:
    """A thread-safe LRU of decoded chunks, bounded in bytes."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._items: OrderedDict[tuple[Any, ...], npt.NDArray[Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[Any, ...]) -> npt.NDArray[Any] | None:
        with self._lock:
            v = self._items.get(key)
            if v is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return v

    def __contains__(self, key: tuple[Any, ...]) -> bool:
        """Whether ``key`` is cached (not counted as a hit or a miss)."""
        with self._lock:
            return key in self._items

    def put(self, key: tuple[Any, ...], value: npt.NDArray[Any]) -> None:
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.bytes -= old.nbytes
            self._items[key] = value
            self.bytes += value.nbytes
            while self.bytes > self.max_bytes and len(self._items) > 1:
                _, v = self._items.popitem(last=False)
                self.bytes -= v.nbytes


@dataclass
class OpenRelease:
    """A release opened for serving: the release, and what tiles ask of it most."""

    key: str
    uri: str
    release: Release
    grid: Grid
    n_levels: int
    species_ids: npt.NDArray[np.int64]
    species_names: list[str]
    info: SpeciesInfo
    genus: list[str]
    family: list[str]
    threshold: float
    indicators: dict[str, dict[str, Any]]
    block: int  # edge of the area-query block aggregates (pixels)
    class_layers: dict[str, ClassLayerEntry] = field(default_factory=dict)

    def scheme(self, name: str) -> ClassScheme:
        """The classes of class layer ``name``."""
        entry = self.class_layers.get(name)
        if entry is None:
            raise NotFoundError(f"release {self.key} has no class layer {name!r}")
        return entry.scheme

    def species_row(self, species_id: int) -> int:
        return self.release.species_row(species_id)


def open_for_serving(
    key: str, uri: str, storage_options: dict[str, Any] | None = None
) -> OpenRelease:
    rel = open_release(uri, storage_options)
    meta = rel.manifest
    ids = rel.species_ids
    info, genus, family = rel.species_info()
    return OpenRelease(
        key=key,
        uri=uri,
        release=rel,
        grid=meta.grid,
        n_levels=meta.levels,
        species_ids=ids,
        species_names=rel.species_names,
        info=info,
        genus=genus,
        family=family,
        threshold=meta.threshold,
        indicators={n: i.model_dump() for n, i in meta.indicators.items()},
        block=meta.block,
        class_layers=dict(meta.class_layers),
    )


class ReleaseReader:
    """Releases opened once per process, and pixel gathering through the chunk cache."""

    def __init__(self, cache_bytes: int, storage_options: dict[str, Any] | None = None) -> None:
        self.chunks = ChunkCache(cache_bytes)
        self.storage_options = storage_options
        self._open: dict[str, OpenRelease] = {}
        self._lock = threading.Lock()

    def release(self, key: str, uri: str) -> OpenRelease:
        with self._lock:
            r = self._open.get(key)
            if r is not None and r.uri == uri:
                return r
        r = open_for_serving(key, uri, self.storage_options)
        with self._lock:
            self._open[key] = r
        return r

    def _chunk(
        self, rel: OpenRelease, level: int, var: str, srow: int, cy: int, cx: int
    ) -> npt.NDArray[Any]:
        key = (rel.uri, level, var, srow, cy, cx)
        hit = self.chunks.get(key)
        if hit is not None:
            return hit
        block = rel.release.level(level, var).chunk((srow, cy, cx) if srow >= 0 else (cy, cx))
        data = block[0] if srow >= 0 else block
        self.chunks.put(key, data)
        return data

    def prefetch(self, rel: OpenRelease, idx: TileIndex, var: str, srows: list[int]) -> None:
        """Put the chunks a tile needs (of ``var``, for each species row in ``srows``; -1
        for an indicator) into the chunk cache with one batched read of the missing ones:
        one round of concurrent ranged GETs on an object store, not one per chunk."""
        if idx.empty:
            return
        ch = rel.grid.chunk
        cys = range(idx.r0 // ch, (idx.r0 + idx.h - 1) // ch + 1)
        cxs = range(idx.c0 // ch, (idx.c0 + idx.w - 1) // ch + 1)
        missing = [
            (srow, cy, cx)
            for srow in srows
            for cy in cys
            for cx in cxs
            if (rel.uri, idx.level, var, srow, cy, cx) not in self.chunks
        ]
        if len(missing) < 2:
            return
        src = rel.release.level(idx.level, var)
        coords: list[tuple[int, ...]] = [c if c[0] >= 0 else c[1:] for c in missing]
        for (srow, cy, cx), block in zip(missing, src.chunks(coords), strict=True):
            self.chunks.put(
                (rel.uri, idx.level, var, srow, cy, cx), block[0] if srow >= 0 else block
            )

    def value_at(
        self, rel: OpenRelease, level: int, var: str, row: int, col: int, srow: int = -1
    ) -> Any:
        """One pixel of a layer (``probability`` with a species row, or an indicator),
        through the chunk cache."""
        ch = rel.grid.chunk
        return self._chunk(rel, level, var, srow, row // ch, col // ch)[row % ch, col % ch]

    def class_at(self, rel: OpenRelease, var: str, row: int, col: int) -> dict[str, Any]:
        """Class layer ``var``'s class at a grid pixel: value, code and name; on the
        territory without a class, value None and what no class means there (an empty
        species set); off the territory, all None."""
        scheme = rel.scheme(var)
        v = int(self.value_at(rel, 0, var, row, col))
        entry = scheme.by_value(v)
        if entry is not None:
            return {"value": v, "code": entry.code, "name": entry.name}
        terr = rel.release.territory()
        ch, cw = terr.inner
        inside = bool(terr.chunk((row // ch, col // cw))[row % ch, col % cw])
        return {"value": None, "code": None, "name": scheme.empty if inside else None}

    def gather(
        self, rel: OpenRelease, idx: TileIndex, var: str, srow: int = -1
    ) -> npt.NDArray[Any]:
        """The tile's pixels of ``var`` (``probability`` with a species row, an indicator
        or a class layer): uint8 codes or classes with NODATA (= ``NO_CLASS``), or float32
        with NaN, outside the data."""
        is_codes = var == "probability" or var in rel.class_layers
        out = np.full(
            idx.rows.shape, NODATA if is_codes else np.nan, np.uint8 if is_codes else np.float32
        )
        if idx.empty:
            return out
        # The chunks covering the tile's window, pasted into one mosaic, then one take.
        ch = rel.grid.chunk
        cy0, cy1 = idx.r0 // ch, (idx.r0 + idx.h - 1) // ch
        cx0, cx1 = idx.c0 // ch, (idx.c0 + idx.w - 1) // ch
        if cy0 == cy1 and cx0 == cx1:
            chunk = self._chunk(rel, idx.level, var, srow, cy0, cx0)
            oy, ox = idx.r0 - cy0 * ch, idx.c0 - cx0 * ch
            window = chunk[oy : oy + idx.h, ox : ox + idx.w]
        else:
            self.prefetch(rel, idx, var, [srow])
            mosaic = np.empty(((cy1 - cy0 + 1) * ch, (cx1 - cx0 + 1) * ch), out.dtype)
            for cy in range(cy0, cy1 + 1):
                for cx in range(cx0, cx1 + 1):
                    block = self._chunk(rel, idx.level, var, srow, cy, cx)
                    y, x = (cy - cy0) * ch, (cx - cx0) * ch
                    mosaic[y : y + block.shape[0], x : x + block.shape[1]] = block
            oy, ox = idx.r0 - cy0 * ch, idx.c0 - cx0 * ch
            window = mosaic[oy : oy + idx.h, ox : ox + idx.w]
        flat = np.ascontiguousarray(window).ravel()
        # np.take, not flat[offsets]: the same values, twice as fast with int32 offsets
        # (~70 against ~140 us a tile: indexing converts them to intp first)
        if idx.full:
            whole: npt.NDArray[Any] = np.take(flat, idx.offsets).reshape(idx.rows.shape)
            return whole
        out[idx.inside] = np.take(flat, idx.offsets)
        return out

    def gather_group(
        self, rel: OpenRelease, idx: TileIndex, rows: npt.NDArray[np.intp], indicator: str
    ) -> npt.NDArray[np.float32]:
        """An indicator over a species group, on the tile's pixels."""
        ind = INDICATORS[indicator]
        self.prefetch(rel, idx, "probability", [int(s) for s in rows])
        codes = np.stack([self.gather(rel, idx, "probability", int(s)) for s in rows])
        valid = codes[0] != NODATA
        return ind(codes, rel.info.select(rows), valid)
