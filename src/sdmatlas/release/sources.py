"""Chunk sources of a release's arrays, chosen by a capability check.

As xarray picks a backend with ``guess_can_open``, each source here says whether it can
read an array (from where the release's bytes are and the array's metadata), and the
first that can, in :data:`SOURCES` order, reads it:

1. :class:`TileDBSource`: releases in the TileDB engine (:mod:`.tiledb_engine`);
2. :class:`LocalShards`: hand-written shard reader, one ``pread`` per chunk, for the
   layouts ``publish`` writes on a local directory;
3. :class:`ObjectRanges`: the same decoding over ranged GETs of an object store (shard
   indexes cached: one GET per inner chunk, batched);
4. :class:`ZarrPython`: zarr-python, any store and codec (slower per chunk).

Every source gives the same values (tested against zarr-python on every array).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import zarr

from sdmatlas.chunks import (
    ChunkReader,
    LocalChunkReader,
    RangeChunkReader,
    ShardChunkReader,
    ZarrChunkReader,
)
from sdmatlas.errors import CorruptDataError, NotFoundError
from sdmatlas.release import layout
from sdmatlas.release.objects import FsspecObjects
from sdmatlas.zarr_access import array


@dataclass
class ReleaseData:
    """Where the bytes of one release are: a local directory, objects on an fsspec
    filesystem, or a TileDB group."""

    name: str
    """The release id, for error messages (never a server path)."""
    local_dir: Path | None = None
    objects: FsspecObjects | None = None
    zarr_url: str | None = None
    storage_options: dict[str, Any] | None = None
    tiledb_uri: str | None = None
    _group: zarr.Group | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def metadata(self, key: str) -> dict[str, Any]:
        """The metadata document of the node at ``key`` ("" for the root)."""
        if self.tiledb_uri is not None:
            from sdmatlas.release.tiledb_engine import node_metadata

            return node_metadata(self.tiledb_uri, key, self.name)
        doc = layout.metadata_key(key)
        if self.local_dir is not None:
            try:
                raw: bytes | None = (self.local_dir / doc).read_bytes()
            except FileNotFoundError:
                raw = None
        elif self.objects is not None:
            raw = self.objects.read(doc)
        else:  # pragma: no cover - every store sets one
            raise NotFoundError(f"release {self.name} has no data location")
        if raw is None:
            raise NotFoundError(f"release {self.name}: {doc} is missing from its storage")
        try:
            meta: dict[str, Any] = json.loads(raw)
        except ValueError as exc:
            raise CorruptDataError(f"release {self.name}: {doc} is not JSON: {exc}") from None
        return meta

    def group(self) -> zarr.Group:
        """The release's root group through zarr-python (opened on first use)."""
        with self._lock:
            if self._group is None:
                if self.local_dir is not None:
                    self._group = zarr.open_group(self.local_dir, mode="r")
                else:
                    from zarr.storage import FsspecStore

                    store = FsspecStore.from_url(
                        str(self.zarr_url), storage_options=self.storage_options, read_only=True
                    )
                    self._group = zarr.open_group(store=store, mode="r")
            return self._group


class Source(Protocol):
    name: ClassVar[str]

    @staticmethod
    def can_open(data: ReleaseData, meta: dict[str, Any]) -> bool: ...

    @staticmethod
    def open(data: ReleaseData, key: str, meta: dict[str, Any]) -> ChunkReader: ...


class TileDBSource:
    name: ClassVar[str] = "tiledb"

    @staticmethod
    def can_open(data: ReleaseData, meta: dict[str, Any]) -> bool:
        return data.tiledb_uri is not None

    @staticmethod
    def open(data: ReleaseData, key: str, meta: dict[str, Any]) -> ChunkReader:
        from sdmatlas.release.tiledb_engine import TileDBChunkReader

        reader: ChunkReader = TileDBChunkReader(str(data.tiledb_uri), key, meta, data.name)
        return reader


class LocalShards:
    name: ClassVar[str] = "local-shards"

    @staticmethod
    def can_open(data: ReleaseData, meta: dict[str, Any]) -> bool:
        return data.local_dir is not None and ShardChunkReader.supports(meta)

    @staticmethod
    def open(data: ReleaseData, key: str, meta: dict[str, Any]) -> ChunkReader:
        assert data.local_dir is not None
        return LocalChunkReader(data.local_dir / key, meta)


class ObjectRanges:
    name: ClassVar[str] = "object-ranges"

    @staticmethod
    def can_open(data: ReleaseData, meta: dict[str, Any]) -> bool:
        return data.objects is not None and ShardChunkReader.supports(meta)

    @staticmethod
    def open(data: ReleaseData, key: str, meta: dict[str, Any]) -> ChunkReader:
        assert data.objects is not None
        return RangeChunkReader(data.objects, key, meta)


class ZarrPython:
    name: ClassVar[str] = "zarr-python"

    @staticmethod
    def can_open(data: ReleaseData, meta: dict[str, Any]) -> bool:
        return data.local_dir is not None or data.zarr_url is not None

    @staticmethod
    def open(data: ReleaseData, key: str, meta: dict[str, Any]) -> ChunkReader:
        reader: ChunkReader = ZarrChunkReader(array(data.group(), key))
        return reader


SOURCES: list[type[Source]] = [TileDBSource, LocalShards, ObjectRanges, ZarrPython]


def open_source(
    data: ReleaseData, key: str, sources: list[type[Source]] | None = None
) -> ChunkReader:
    """A chunk reader of the array at ``key``: the first of ``sources`` that can open it."""
    meta = data.metadata(key)
    if meta.get("node_type", "array") != "array":
        raise NotFoundError(f"release {data.name}: {key} is a group, not an array")
    for source in sources or SOURCES:
        if source.can_open(data, meta):
            reader: ChunkReader = source.open(data, key, meta)
            return reader
    raise NotFoundError(f"release {data.name}: no reader can open {key}")  # pragma: no cover
