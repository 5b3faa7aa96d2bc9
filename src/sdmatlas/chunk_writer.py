"""Whole shards (or whole chunks) of a Zarr v3 array, encoded and written in one go.

Why by hand: zarr-python spends about 1 to 3 ms of codec-pipeline and store overhead per
chunk it writes. ``publish`` writes small chunks by design (8 x 8 pixels x all species
for the point index, 8 x 8 blocks for the aggregates), so on a 1024 x 1024 x 16 release
that overhead was 73 of 77 seconds (issue 14). For the layouts
:class:`~sdmatlas.chunks.LocalChunkReader` reads (``bytes`` + ``zstd`` after an optional
``transpose``, optionally inside ``sharding_indexed`` with a ``bytes`` + ``crc32c``
index at the end), on a local directory, this module encodes every inner chunk with
the same zstd library and level zarr uses, builds the shard index, and writes each
shard file once (to a temporary name, then renamed: a reader never sees half a file).
Inner chunks equal to the fill value are left out, as zarr does by default
(``write_empty_chunks=False``); a write unit with nothing but fill removes its file.

Any other store or layout falls back to zarr-python's own ``array[region] = data``.
The files are read back with zarr-python in the tests, array by array.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from itertools import product
from pathlib import Path
from typing import Any

import google_crc32c
import numpy as np
import numpy.typing as npt
import zarr
from numcodecs import Zstd
from zarr.storage import LocalStore

from sdmatlas.chunks import EMPTY, LocalChunkReader, local_reader
from sdmatlas.errors import InvalidInputError


class ChunkWriter:
    """Writes aligned regions of one array; each region covers whole write units
    (shards, or chunks when the array is not sharded), or ends at the array's edge."""

    def __init__(self, arr: zarr.Array[Any] | None, layout: LocalChunkReader | None) -> None:
        self.arr = arr
        self.layout = layout
        if layout is not None:
            self.shape, self.unit = layout.shape, layout.outer
            self._zstd = Zstd(level=layout.zstd_level)
        elif arr is not None:
            self.shape, self.unit = tuple(arr.shape), tuple(arr.shards or arr.chunks)
        else:
            raise ValueError("a ChunkWriter needs an array or a layout")

    @classmethod
    def of(cls, arr: zarr.Array[Any]) -> ChunkWriter:
        """The fast writer when ``arr`` is in a local directory in a supported layout,
        else zarr-python's own writes."""
        store = arr.store
        if isinstance(store, LocalStore):
            direct = cls.at(Path(str(store.root)) / arr.path)
            if direct is not None:
                return direct
        return cls(arr, None)

    @classmethod
    def at(cls, array_dir: Path) -> ChunkWriter | None:
        """The fast writer of the array in ``array_dir``, or None if its layout is not
        one this module writes."""
        layout = local_reader(array_dir)
        return None if layout is None else cls(None, layout)

    def write(self, start: tuple[int, ...], data: npt.NDArray[Any]) -> None:
        """Write ``data`` at ``start`` (a corner of a write unit)."""
        stop = tuple(s + n for s, n in zip(start, data.shape, strict=True))
        for s, e, u, n in zip(start, stop, self.unit, self.shape, strict=True):
            if s % u or (e % u and e != n) or e > n:
                raise InvalidInputError(
                    f"region {start}..{stop} of an array {self.shape} is not aligned to its "
                    f"write unit {self.unit}"
                )
        if self.layout is None:
            assert self.arr is not None
            self.arr[tuple(slice(s, e) for s, e in zip(start, stop, strict=True))] = data
            return
        ranges = [range(s // u, -(-e // u)) for s, e, u in zip(start, stop, self.unit, strict=True)]
        for unit in product(*ranges):
            lo = [i * u - s for i, u, s in zip(unit, self.unit, start, strict=True)]
            part = data[tuple(slice(a, a + u) for a, u in zip(lo, self.unit, strict=True))]
            self._write_unit(unit, part)

    # -- encoding ---------------------------------------------------------------------------

    def _padded(self, part: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """``part`` at the full unit shape (an edge unit is padded with the fill value)."""
        assert self.layout is not None
        if part.shape == self.unit:
            return np.asarray(part, dtype=self.layout.dtype)
        out = np.full(self.unit, self.layout.fill, dtype=self.layout.dtype)
        out[tuple(slice(0, n) for n in part.shape)] = part
        return out

    def _empty(self, chunk: npt.NDArray[Any]) -> bool:
        assert self.layout is not None
        fill = self.layout.fill
        if isinstance(fill, float) and np.isnan(fill):
            return bool(np.isnan(chunk).all())
        return bool((chunk == fill).all())

    def _encode(self, chunk: npt.NDArray[Any]) -> bytes:
        assert self.layout is not None
        if self.layout.order is not None:
            chunk = chunk.transpose(self.layout.order)
        raw = np.ascontiguousarray(chunk, dtype=self.layout.dtype.newbyteorder("<"))
        return bytes(self._zstd.encode(raw))

    def _write_unit(self, unit: tuple[int, ...], part: npt.NDArray[Any]) -> None:
        assert self.layout is not None
        path = self.layout.chunk_path(unit)
        block = self._padded(part)
        if not self.layout.sharded:
            _put(path, None if self._empty(block) else self._encode(block))
            return
        inner, per = self.layout.inner, self.layout.per_shard
        nd = len(per)
        # [n0, i0, n1, i1, ...] -> [n0, n1, ..., stored inner axes]: one copy puts every
        # inner chunk's bytes, in stored order, in one row of ``flat``
        split = block.reshape([v for n, i in zip(per, inner, strict=True) for v in (n, i)])
        inner_axes = list(range(1, 2 * nd, 2))
        if self.layout.order is not None:
            inner_axes = [inner_axes[i] for i in self.layout.order]
        stored = split.transpose([*range(0, 2 * nd, 2), *inner_axes])
        flat = np.ascontiguousarray(stored, dtype=self.layout.dtype.newbyteorder("<"))
        flat = flat.reshape(int(np.prod(per)), -1)
        fill = self.layout.fill
        if isinstance(fill, float) and np.isnan(fill):
            empty = np.isnan(flat).all(axis=1)
        else:
            empty = (flat == fill).all(axis=1)
        index = np.full((flat.shape[0], 2), EMPTY, dtype="<u8")
        pieces: list[bytes] = []
        offset = 0
        for k in np.flatnonzero(~empty):
            encoded = bytes(self._zstd.encode(flat[k]))
            index[k] = (offset, len(encoded))
            pieces.append(encoded)
            offset += len(encoded)
        if not pieces:
            _put(path, None)
            return
        index_bytes = index.tobytes()
        crc = np.uint32(google_crc32c.value(index_bytes)).astype("<u4").tobytes()
        _put(path, b"".join([*pieces, index_bytes, crc]))


PARTIAL = ".partial"


def remove_partials(root: Path) -> int:
    """Delete the temporary files of writes that a killed process interrupted, anywhere
    under ``root``; returns how many. Call it only when no writer can still be running
    there (a resumed run that holds the work's lock, or one whose tasks all finished):
    a live writer's temporary file would go too, and its rename fail."""
    removed = 0
    for p in root.rglob(f"*{PARTIAL}"):
        p.unlink(missing_ok=True)
        removed += 1
    return removed


def _put(path: str, body: bytes | None) -> None:
    """Write ``body`` at ``path`` atomically (a temporary ``<path>.<hex>.partial``, then a
    rename: a SIGKILL between the two leaves it, see :func:`remove_partials`), or remove
    ``path`` when ``body`` is None."""
    if body is None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    tmp = f"{path}.{uuid.uuid4().hex[:12]}{PARTIAL}"
    try:
        fh = open(tmp, "wb")  # noqa: SIM115 - closed below
    except FileNotFoundError:  # the chunk's directory does not exist yet
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fh = open(tmp, "wb")  # noqa: SIM115
    with fh:
        fh.write(body)
    os.replace(tmp, path)
