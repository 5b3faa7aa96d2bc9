"""The TileDB engine: a release's arrays as TileDB dense arrays, read by the same readers.

Layout: one TileDB group per release (``<root>/<id>/``), holding a dense array at each
array path of :mod:`sdmatlas.release.layout` (``levels/0/probability``, ``pixels``,
``blocks/8/sum``, ...). Each array has one attribute ``v``, the Zarr array's dtype and
fill value, **space tiles equal to the Zarr inner chunks** (so one chunk read is one
TileDB tile read) and a zstd filter at the level publish uses (3). Node metadata (the
Zarr metadata document, with its attributes: the manifest on the root group, species
names on ``species``) is kept as TileDB metadata, so :mod:`sdmatlas.release.sources`
sees the same documents as on a Zarr store.

Publish builds the release as Zarr in its local workspace (the fast writers), then
:func:`write_release` copies it array by array into a hidden TileDB group, renamed into
place on commit (atomic, as for local Zarr). Blocks holding only the fill value are not
written: TileDB reads them back as the fill value, as Zarr does for missing chunks.

Not done: the block aggregates as one array with four attributes (closer to TileDB's
model); object-store URIs for this engine (TileDB's own VFS would read them).
"""

from __future__ import annotations

import json
import os
import threading
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import tiledb
import zarr

from sdmatlas.chunks import LocalChunkReader, pad_chunk
from sdmatlas.errors import CorruptDataError, NotFoundError

ATTR = "v"
META = "zarr"
"""The TileDB metadata key holding a node's Zarr metadata document (JSON)."""
WRITE_BYTES = 64 * 2**20
"""Largest block copied in one TileDB write."""
ZSTD_LEVEL = 3


def _inner(meta: dict[str, Any]) -> tuple[int, ...]:
    codec = (meta.get("codecs") or [{}])[0]
    if codec.get("name") == "sharding_indexed":
        return tuple(int(n) for n in codec["configuration"]["chunk_shape"])
    return tuple(int(n) for n in meta["chunk_grid"]["configuration"]["chunk_shape"])


def _fill(meta: dict[str, Any], dtype: np.dtype[Any]) -> Any:
    fill = meta["fill_value"]
    return np.float64(fill) if isinstance(fill, str) else dtype.type(fill)


def _schema(meta: dict[str, Any]) -> tiledb.ArraySchema:
    # a 0-d array (a level's ``spatial_ref``) is one cell of a 1-d array
    shape = [int(n) for n in meta["shape"]] or [1]
    dtype = np.dtype(meta["data_type"])
    inner = _inner(meta) or (1,)
    dims = [
        tiledb.Dim(
            name=f"d{i}", domain=(0, max(n, 1) - 1), tile=max(1, min(t, max(n, 1))), dtype=np.int64
        )
        for i, (n, t) in enumerate(zip(shape, inner, strict=True))
    ]
    attr = tiledb.Attr(
        name=ATTR,
        dtype=dtype,
        fill=_fill(meta, dtype),
        filters=tiledb.FilterList([tiledb.ZstdFilter(level=ZSTD_LEVEL)]),
    )
    # Zarr stores ``pixels`` [y, x, species] species-major inside each chunk (a transpose
    # codec): neighbouring pixels of one species compress far better than neighbouring
    # species of one pixel. TileDB's col-major cell order (first axis fastest) gives the
    # same grouping: each species' 8 x 8 cells together.
    codec = (meta.get("codecs") or [{}])[0]
    chain = codec["configuration"]["codecs"] if codec.get("name") == "sharding_indexed" else [codec]
    transposed = any(c.get("name") == "transpose" for c in chain)
    return tiledb.ArraySchema(
        domain=tiledb.Domain(*dims), sparse=False, attrs=[attr],
        cell_order="col-major" if transposed else "row-major", tile_order="row-major",
    )  # fmt: skip


def _units(
    shape: tuple[int, ...], inner: tuple[int, ...], itemsize: int
) -> list[tuple[slice, ...]]:
    """Write blocks: the whole array, split along its leading axes (at inner-chunk
    boundaries) while larger than WRITE_BYTES. Each write is a TileDB fragment, and a
    read looks at every fragment it overlaps: few large writes keep reads fast."""
    unit = list(shape)
    for ax in range(len(unit)):
        while int(np.prod(unit)) * itemsize > WRITE_BYTES and unit[ax] > inner[ax]:
            unit[ax] = max(inner[ax], -(-unit[ax] // inner[ax] // 2) * inner[ax])
    starts = [range(0, n, u) for n, u in zip(shape, unit, strict=True)]
    return [
        tuple(slice(s, min(s + u, n)) for s, u, n in zip(st, unit, shape, strict=True))
        for st in product(*starts)
    ]


def write_release(zarr_dir: Path, uri: str) -> None:
    """Copy the Zarr release in ``zarr_dir`` into a new TileDB group at ``uri``."""
    tiledb.Group.create(uri)
    docs = sorted(zarr_dir.rglob("zarr.json"))
    with tiledb.Group(uri, "w") as group:
        for doc_path in docs:
            key = doc_path.parent.relative_to(zarr_dir).as_posix()
            doc = json.loads(doc_path.read_text())
            if doc.get("node_type") != "array":
                group.meta[META if key == "." else f"{META}:{key}"] = json.dumps(doc)
                continue
            target = f"{uri}/{key}"
            os.makedirs(os.path.dirname(target), exist_ok=True)
            tiledb.Array.create(target, _schema(doc))
            with tiledb.open(target, "w") as arr:
                arr.meta[META] = json.dumps(doc)
                if not doc["shape"]:
                    arr[0:1] = np.asarray(zarr.open_array(doc_path.parent, mode="r")[()]).reshape(1)
                    continue
                src = LocalChunkReader(doc_path.parent, doc)
                fill = src.fill
                if all(src.shape):
                    for region in _units(src.shape, src.inner, src.dtype.itemsize):
                        block = src.region(region)
                        empty = np.isnan(block).all() if fill != fill else (block == fill).all()
                        if not empty:
                            arr[region] = block
            # one file of fragment metadata: opening the array reads one object
            tiledb.consolidate(
                target, config=tiledb.Config({"sm.consolidation.mode": "fragment_meta"})
            )


def node_metadata(uri: str, key: str, release: str) -> dict[str, Any]:
    """The Zarr metadata document of the node at ``key`` ("" for the root group)."""
    try:
        if key == "" or tiledb.object_type(f"{uri}/{key}") == "group":
            with tiledb.Group(uri) as group:
                raw = group.meta.get(META if key == "" else f"{META}:{key}")
        else:
            with tiledb.open(f"{uri}/{key}") as arr:
                raw = arr.meta.get(META)
    except tiledb.TileDBError:
        raw = None
    if raw is None:
        raise NotFoundError(f"release {release}: {key or 'its root group'} is missing")
    meta: dict[str, Any] = json.loads(raw)
    return meta


class TileDBChunkReader:
    """Chunks of a TileDB dense array whose space tiles are the Zarr inner chunks: a chunk
    is one tile read. Arrays are opened once per thread (TileDB-Py array handles are not
    shared between threads)."""

    def __init__(self, uri: str, key: str, meta: dict[str, Any], release: str) -> None:
        self.uri = f"{uri}/{key}"
        self.name = f"release {release}: {key}"
        self.shape = tuple(int(n) for n in meta["shape"])
        self.dtype = np.dtype(meta["data_type"])
        self.inner = _inner(meta) if self.shape else ()
        self.fill = _fill(meta, self.dtype)
        self._local = threading.local()

    def _array(self) -> Any:
        arr = getattr(self._local, "array", None)
        if arr is None:
            try:
                arr = tiledb.open(self.uri)
            except tiledb.TileDBError as exc:
                raise NotFoundError(f"{self.name} cannot be opened: {exc}") from None
            self._local.array = arr
        return arr

    def region(self, region: tuple[slice, ...]) -> npt.NDArray[Any]:
        if not self.shape:  # a 0-d array, stored as one cell
            cell: npt.NDArray[Any] = self._array()[0:1][ATTR].reshape(())
            return cell
        if any(s.stop <= s.start for s in region):
            return np.empty([max(0, s.stop - s.start) for s in region], self.dtype)
        try:
            out: npt.NDArray[Any] = self._array()[region][ATTR]
        except tiledb.TileDBError as exc:
            raise CorruptDataError(f"{self.name}: {exc}") from None
        return out

    def chunk(self, coords: tuple[int, ...]) -> npt.NDArray[Any]:
        sel = tuple(
            slice(c * n, min((c + 1) * n, s))
            for c, n, s in zip(coords, self.inner, self.shape, strict=True)
        )
        return pad_chunk(self.region(sel), self.inner, self.fill)

    def chunks(self, coords: list[tuple[int, ...]]) -> list[npt.NDArray[Any]]:
        return [self.chunk(c) for c in coords]
