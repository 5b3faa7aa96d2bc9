"""Direct reads of single chunks from the release's Zarr v3 arrays on a local disk.

Written by hand for speed: zarr-python takes about 2 to 3 ms to return one inner chunk
of a sharded array (its async codec pipeline and index handling), where a tile needs
one to four chunks per species and a group tile many more. For the exact layouts that
``publish`` writes on a local directory (``bytes`` + ``zstd`` codecs, optionally inside
``sharding_indexed`` with the index at the end), this reads the shard index once,
then each chunk with one ``pread`` and one zstd decompression (about 0.1 ms).
Anything else (another codec, an object store) goes through zarr-python, unchanged.
The results are identical (tested against zarr on every array of a release).
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from numcodecs import Zstd

from sdmatlas.errors import CorruptDataError

_EMPTY = 2**64 - 1
_zstd = Zstd()


def _plain_codecs(codecs: list[dict[str, Any]]) -> bool:
    names = [c["name"] for c in codecs]
    if names != ["bytes", "zstd"]:
        return False
    endian = (codecs[0].get("configuration") or {}).get("endian", "little")
    return bool(endian == "little")


class LocalChunkReader:
    """Chunks of one array, by chunk coordinates, decoded to full-size numpy blocks."""

    def __init__(self, array_dir: Path, meta: dict[str, Any]) -> None:
        self.dir = array_dir
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
        self._indexes: dict[tuple[int, ...], npt.NDArray[np.uint64] | None] = {}
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

    def _path(self, outer: tuple[int, ...]) -> Path:
        return self.dir / ("c" + self.sep + self.sep.join(str(i) for i in outer))

    def _index(self, outer: tuple[int, ...]) -> npt.NDArray[np.uint64] | None:
        with self._lock:
            if outer in self._indexes:
                return self._indexes[outer]
        path = self._path(outer)
        n = int(np.prod(self.per_shard))
        size = n * 16 + 4
        try:
            with path.open("rb") as fh:
                fh.seek(-size, os.SEEK_END)
                raw = fh.read(size)
        except FileNotFoundError:
            idx = None
        else:
            idx = np.frombuffer(raw[:-4], dtype="<u8").reshape(n, 2)
        with self._lock:
            self._indexes[outer] = idx
        return idx

    def chunk(self, coords: tuple[int, ...]) -> npt.NDArray[Any]:
        """The inner chunk at ``coords`` (in units of inner chunks), full chunk shape."""
        if not self.sharded:
            return self._decode_file(self._path(coords))
        outer = tuple(c // p for c, p in zip(coords, self.per_shard, strict=True))
        within = tuple(c % p for c, p in zip(coords, self.per_shard, strict=True))
        idx = self._index(outer)
        if idx is None:
            return self._filled()
        k = int(np.ravel_multi_index(within, self.per_shard))
        offset, nbytes = (int(v) for v in idx[k])
        if offset == _EMPTY:
            return self._filled()
        fd = os.open(self._path(outer), os.O_RDONLY)
        try:
            raw = os.pread(fd, nbytes, offset)
        finally:
            os.close(fd)
        return self._decode(raw, f"{self._path(outer)} chunk {within}")

    def _decode_file(self, path: Path) -> npt.NDArray[Any]:
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return self._filled()
        return self._decode(raw, str(path))

    def _decode(self, raw: bytes, where: str) -> npt.NDArray[Any]:
        try:
            data = _zstd.decode(raw)
            return np.frombuffer(data, dtype=self.dtype.newbyteorder("<")).reshape(self.inner)
        except Exception as exc:  # a truncated or corrupted chunk
            raise CorruptDataError(f"cannot decode {where}: {exc}") from exc

    def _filled(self) -> npt.NDArray[Any]:
        return np.full(self.inner, self.fill, dtype=self.dtype)


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
