"""Single chunks of Zarr v3 arrays (cubes and releases), by chunk coordinates.

:func:`chunk_reader` picks the reader by a capability check: :class:`LocalChunkReader`
when the array is in a local directory in a layout it supports, else
:class:`ZarrChunkReader` (any store, any codec). A release's arrays are read through
:mod:`sdmatlas.release.sources`, which adds :class:`RangeChunkReader` (the same decoding
over ranged GETs of an object store).

The local reader is written by hand for speed: zarr-python takes about 1 to 3 ms to
return one chunk (its async codec pipeline and index handling), where a tile needs one
to four chunks per species, a group tile many more, and an area report one per block
its outline cuts. For the exact layouts that ``publish`` writes on a local directory
(``bytes`` + ``zstd`` codecs after an optional ``transpose``, optionally inside
``sharding_indexed`` with the index at the end), it reads the shard index once, then
each chunk with one ``pread`` and one zstd decompression (about 0.1 ms). The results
are identical (tested against zarr on every array of a release).
"""

from __future__ import annotations

import json
import os
import threading
from collections import OrderedDict
from itertools import product
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import zarr
from numcodecs import Zstd
from zarr.storage import LocalStore

from sdmatlas.errors import CorruptDataError
from sdmatlas.zarr_access import array

INDEX_CACHE_BYTES = 32 * 2**20
"""Shard indexes one reader keeps (bytes)."""
EMPTY = 2**64 - 1
"""Shard index entry of a missing inner chunk (offset and size)."""
_zstd = Zstd()


def _transpose_order(codecs: list[dict[str, Any]]) -> tuple[int, ...] | None:
    """The order of a leading ``transpose`` codec, if there is one."""
    if codecs and codecs[0]["name"] == "transpose":
        return tuple(int(i) for i in codecs[0]["configuration"]["order"])
    return None


def _plain_codecs(codecs: list[dict[str, Any]]) -> bool:
    if _transpose_order(codecs) is not None:
        codecs = codecs[1:]
    names = [c["name"] for c in codecs]
    if names != ["bytes", "zstd"]:
        return False
    endian = (codecs[0].get("configuration") or {}).get("endian", "little")
    return bool(endian == "little")


class ShardChunkReader:
    """Chunks of one array, by chunk coordinates, decoded to full-size numpy blocks.

    The decoding is here; where the bytes come from is a subclass's: files
    (:class:`LocalChunkReader`) or ranged GETs (:class:`RangeChunkReader`)."""

    def __init__(self, meta: dict[str, Any], name: str) -> None:
        self.name = name
        self.shape = tuple(meta["shape"])
        self.dtype = np.dtype(meta["data_type"])
        fill = meta["fill_value"]
        self.fill = float(fill) if isinstance(fill, str) else fill  # "NaN" for floats
        self.outer = tuple(meta["chunk_grid"]["configuration"]["chunk_shape"])
        encoding = meta.get("chunk_key_encoding", {}).get("configuration") or {}
        self.sep: str = str(encoding.get("separator", "/"))
        codec = meta["codecs"][0]
        if codec["name"] == "sharding_indexed":
            self.inner = tuple(codec["configuration"]["chunk_shape"])
            self.per_shard = tuple(o // i for o, i in zip(self.outer, self.inner, strict=True))
        else:
            self.inner = self.outer
            self.per_shard = tuple(1 for _ in self.outer)
        self.sharded = codec["name"] == "sharding_indexed"
        inner_codecs = codec["configuration"]["codecs"] if self.sharded else meta["codecs"]
        #: bytes stored in this axis order (a ``transpose`` codec); decoded chunks are
        #: views back in the array's order, so ``chunk().transpose(order)`` is contiguous
        self.order = _transpose_order(inner_codecs)
        self.zstd_level = int((inner_codecs[-1].get("configuration") or {}).get("level", 0))
        self._stored = (
            tuple(self.inner[i] for i in self.order) if self.order is not None else self.inner
        )
        # Shard indexes read, most recently used last; bounded to INDEX_CACHE_BYTES (a
        # 256-species level shard's index is 4 kB, a pixel shard's 16 kB, and a server
        # may touch millions of shards)
        self._indexes: OrderedDict[tuple[int, ...], npt.NDArray[np.uint64] | None] = OrderedDict()
        self._max_indexes = max(64, INDEX_CACHE_BYTES // (int(np.prod(self.per_shard)) * 16))
        self._lock = threading.Lock()

    @staticmethod
    def supports(meta: dict[str, Any]) -> bool:
        codecs = meta.get("codecs") or []
        if meta.get("chunk_key_encoding", {}).get("name", "default") != "default":
            return False
        if len(codecs) == 1 and codecs[0]["name"] == "sharding_indexed":
            cfg = codecs[0]["configuration"]
            index = [c["name"] for c in cfg["index_codecs"]]
            return (
                _plain_codecs(cfg["codecs"])
                and index == ["bytes", "crc32c"]
                and cfg.get("index_location", "end") == "end"
            )
        return _plain_codecs(codecs)

    # -- where the bytes come from (subclasses) -------------------------------------

    def _whole(self, outer: tuple[int, ...]) -> bytes | None:
        """A whole chunk or shard object; None if there is none."""
        raise NotImplementedError

    def _tails(self, outers: list[tuple[int, ...]], n: int) -> list[bytes | None]:
        """The last ``n`` bytes of each shard object (None where there is none)."""
        raise NotImplementedError

    def _ranges(self, requests: list[tuple[tuple[int, ...], int, int]]) -> list[bytes]:
        """``(shard, offset, size)`` byte ranges of shard objects."""
        raise NotImplementedError

    def where(self, outer: tuple[int, ...]) -> str:
        """A chunk or shard object, named for error messages."""
        return f"{self.name}/c{self.sep}{self.sep.join(map(str, outer))}"

    # -- decoding ------------------------------------------------------------------

    def _indexes_of(
        self, outers: list[tuple[int, ...]]
    ) -> dict[tuple[int, ...], npt.NDArray[np.uint64] | None]:
        """Shard indexes, from the cache or read (all missing ones in one batch)."""
        out: dict[tuple[int, ...], npt.NDArray[np.uint64] | None] = {}
        with self._lock:
            for o in outers:
                if o in self._indexes:
                    self._indexes.move_to_end(o)
                    out[o] = self._indexes[o]
        todo = [o for o in dict.fromkeys(outers) if o not in out]
        if not todo:
            return out
        n = int(np.prod(self.per_shard))
        for o, raw in zip(todo, self._tails(todo, n * 16 + 4), strict=True):
            out[o] = None if raw is None else np.frombuffer(raw[:-4], dtype="<u8").reshape(n, 2)
        with self._lock:
            for o in todo:
                self._indexes[o] = out[o]
            while len(self._indexes) > self._max_indexes:
                self._indexes.popitem(last=False)
        return out

    def chunk(self, coords: tuple[int, ...]) -> npt.NDArray[Any]:
        """The inner chunk at ``coords`` (in units of inner chunks), full chunk shape.
        (The one-chunk case of :meth:`chunks`, without its batching: the tile path.)"""
        if not self.sharded:
            raw = self._whole(coords)
            return self._filled() if raw is None else self._decode(raw, self.where(coords))
        outer = tuple(c // p for c, p in zip(coords, self.per_shard, strict=True))
        with self._lock:
            cached = outer in self._indexes
            if cached:
                self._indexes.move_to_end(outer)
                idx = self._indexes[outer]
        if not cached:
            idx = self._indexes_of([outer])[outer]
        if idx is None:
            return self._filled()
        within = tuple(c % p for c, p in zip(coords, self.per_shard, strict=True))
        offset, nbytes = (int(v) for v in idx[int(np.ravel_multi_index(within, self.per_shard))])
        if offset == EMPTY:
            return self._filled()
        raw = self._ranges([(outer, offset, nbytes)])[0]
        return self._decode(raw, f"{self.where(outer)} chunk {within}")

    def chunks(self, coords: list[tuple[int, ...]]) -> list[npt.NDArray[Any]]:
        """Several inner chunks; their bytes are fetched in one batch (one round of
        concurrent ranged GETs on an object store)."""
        if not self.sharded:
            return [
                self._filled() if raw is None else self._decode(raw, self.where(c))
                for c in coords
                for raw in [self._whole(c)]
            ]
        outers = [tuple(c // p for c, p in zip(cc, self.per_shard, strict=True)) for cc in coords]
        indexes = self._indexes_of(outers)
        out: list[npt.NDArray[Any] | None] = [None] * len(coords)
        wanted: list[tuple[int, tuple[tuple[int, ...], int, int]]] = []
        for i, (cc, outer) in enumerate(zip(coords, outers, strict=True)):
            idx = indexes[outer]
            within = tuple(c % p for c, p in zip(cc, self.per_shard, strict=True))
            if idx is None:
                out[i] = self._filled()
                continue
            offset, nbytes = (
                int(v) for v in idx[int(np.ravel_multi_index(within, self.per_shard))]
            )
            if offset == EMPTY:
                out[i] = self._filled()
            else:
                wanted.append((i, (outer, offset, nbytes)))
        if wanted:
            raws = self._ranges([r for _, r in wanted])
            for (i, (outer, _, _)), raw in zip(wanted, raws, strict=True):
                out[i] = self._decode(raw, f"{self.where(outer)} chunk {coords[i]}")
        return [o for o in out if o is not None]

    def region(self, region: tuple[slice, ...]) -> npt.NDArray[Any]:
        """The values in ``region`` (slices with explicit bounds inside the array), read
        chunk by chunk."""
        return assemble(self, region)

    def _decode(self, raw: bytes, where: str) -> npt.NDArray[Any]:
        try:
            data = _zstd.decode(raw)
            out = np.frombuffer(data, dtype=self.dtype.newbyteorder("<")).reshape(self._stored)
            return out if self.order is None else out.transpose(np.argsort(self.order))
        except Exception as exc:  # a truncated or corrupted chunk
            raise CorruptDataError(f"cannot decode {where}: {exc}") from exc

    def _filled(self) -> npt.NDArray[Any]:
        return np.full(self.inner, self.fill, dtype=self.dtype)


class LocalChunkReader(ShardChunkReader):
    """Chunks of an array in a local directory: one ``pread`` each."""

    def __init__(self, array_dir: Path, meta: dict[str, Any]) -> None:
        super().__init__(meta, str(array_dir))
        self.dir = array_dir
        self._prefix = os.path.join(str(array_dir), "c" + self.sep)

    def chunk_path(self, outer: tuple[int, ...]) -> str:
        # a plain string: pathlib's parsing cost about 20 us a chunk, a tenth of a decode
        return self._prefix + self.sep.join(map(str, outer))

    def where(self, outer: tuple[int, ...]) -> str:
        return self.chunk_path(outer)

    def _whole(self, outer: tuple[int, ...]) -> bytes | None:
        try:
            with open(self.chunk_path(outer), "rb") as fh:
                return fh.read()
        except FileNotFoundError:
            return None

    def _tails(self, outers: list[tuple[int, ...]], n: int) -> list[bytes | None]:
        out: list[bytes | None] = []
        for outer in outers:
            try:
                with open(self.chunk_path(outer), "rb") as fh:
                    fh.seek(-n, os.SEEK_END)
                    out.append(fh.read(n))
            except FileNotFoundError:
                out.append(None)
        return out

    def _ranges(self, requests: list[tuple[tuple[int, ...], int, int]]) -> list[bytes]:
        out = []
        for outer, offset, nbytes in requests:
            fd = os.open(self.chunk_path(outer), os.O_RDONLY)
            try:
                out.append(os.pread(fd, nbytes, offset))
            finally:
                os.close(fd)
        return out


class ByteRanges(Protocol):
    """Objects below one prefix, read whole, by their tails, or by byte ranges."""

    def read(self, key: str) -> bytes | None:
        """A whole object; None if there is none."""

    def read_tails(self, keys: list[str], n: int) -> list[bytes | None]:
        """The last ``n`` bytes of each object (None where there is none), in one batch."""

    def read_ranges(self, requests: list[tuple[str, int, int]]) -> list[bytes]:
        """``(key, offset, size)`` ranges, in one batch."""


class RangeChunkReader(ShardChunkReader):
    """Chunks of an array on an object store: shard indexes read once (a ranged GET of
    the shard's tail) and cached, then one ranged GET per inner chunk, batched."""

    def __init__(self, objects: ByteRanges, array_key: str, meta: dict[str, Any]) -> None:
        super().__init__(meta, array_key)
        self.objects = objects
        self._prefix = f"{array_key}/c{self.sep}"

    def _key(self, outer: tuple[int, ...]) -> str:
        return self._prefix + self.sep.join(map(str, outer))

    def _whole(self, outer: tuple[int, ...]) -> bytes | None:
        return self.objects.read(self._key(outer))

    def _tails(self, outers: list[tuple[int, ...]], n: int) -> list[bytes | None]:
        return self.objects.read_tails([self._key(o) for o in outers], n)

    def _ranges(self, requests: list[tuple[tuple[int, ...], int, int]]) -> list[bytes]:
        return self.objects.read_ranges([(self._key(o), off, n) for o, off, n in requests])


def local_reader(array_dir: Path) -> LocalChunkReader | None:
    """A direct reader for the array at ``array_dir``, or None if its layout is not one
    this module handles (then zarr-python reads it)."""
    try:
        meta = json.loads((array_dir / "zarr.json").read_text())
    except (OSError, ValueError):
        return None
    if meta.get("node_type") != "array" or not LocalChunkReader.supports(meta):
        return None
    return LocalChunkReader(array_dir, meta)


def pad_chunk(data: npt.NDArray[Any], inner: tuple[int, ...], fill: Any) -> npt.NDArray[Any]:
    """A chunk at the array's edge (cut short) padded with the fill value to full size."""
    if data.shape == inner:
        return data
    out = np.full(inner, fill, dtype=data.dtype)
    out[tuple(slice(0, n) for n in data.shape)] = data
    return out


class ZarrChunkReader:
    """The same interface through zarr-python: any store, any codec (slower per chunk)."""

    def __init__(self, arr: zarr.Array[Any]) -> None:
        self.arr = arr
        self.shape = tuple(arr.shape)
        self.dtype = np.dtype(arr.dtype)
        self.inner = tuple(arr.chunks)
        self.fill = arr.fill_value

    def chunk(self, coords: tuple[int, ...]) -> npt.NDArray[Any]:
        sel = tuple(slice(c * n, (c + 1) * n) for c, n in zip(coords, self.inner, strict=True))
        return pad_chunk(np.asarray(self.arr[sel]), self.inner, self.fill)

    def chunks(self, coords: list[tuple[int, ...]]) -> list[npt.NDArray[Any]]:
        return [self.chunk(c) for c in coords]

    def region(self, region: tuple[slice, ...]) -> npt.NDArray[Any]:
        return np.asarray(self.arr[region])


class ChunkSource(Protocol):
    """What every chunk reader offers (another engine's readers, TileDB's, included)."""

    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    inner: tuple[int, ...]

    def chunk(self, coords: tuple[int, ...]) -> npt.NDArray[Any]: ...

    def chunks(self, coords: list[tuple[int, ...]]) -> list[npt.NDArray[Any]]: ...

    def region(self, region: tuple[slice, ...]) -> npt.NDArray[Any]: ...


ChunkReader = ChunkSource


def assemble(reader: Any, region: tuple[slice, ...]) -> npt.NDArray[Any]:
    """``region`` of the array of ``reader`` (anything with ``inner``, ``dtype`` and
    ``chunk``), pasted together chunk by chunk."""
    out = np.empty([int(s.stop) - int(s.start) for s in region], dtype=reader.dtype)
    ranges = [
        range(s.start // n, -(-s.stop // n)) for s, n in zip(region, reader.inner, strict=True)
    ]
    for idx in product(*ranges):
        src, dst = [], []
        for i, s, n in zip(idx, region, reader.inner, strict=True):
            lo, hi = max(s.start, i * n), min(s.stop, (i + 1) * n)
            src.append(slice(lo - i * n, hi - i * n))
            dst.append(slice(lo - s.start, hi - s.start))
        out[tuple(dst)] = reader.chunk(idx)[tuple(src)]
    return out


def chunk_reader(group: zarr.Group, path: str) -> ChunkReader:
    """Chunks of the array at ``path`` below ``group``: read directly from a local
    directory when :meth:`LocalChunkReader.supports` its layout, else through zarr."""
    store = group.store
    if isinstance(store, LocalStore):
        direct = local_reader(Path(str(store.root)) / group.path / path)
        if direct is not None:
            return direct
    return ZarrChunkReader(array(group, path))
