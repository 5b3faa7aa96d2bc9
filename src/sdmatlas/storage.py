"""Where releases live: one narrow interface, a local directory or an fsspec URL behind it.

A :class:`ReleaseStore` maps release ids to Zarr groups and publishes
atomically: a release is written into a staging location that readers never
look at, then made visible in one step.

- :class:`LocalReleaseStore` (the default): ``<root>/<id>/``; staging is a
  hidden sibling directory, committed by a rename.
- :class:`FsspecReleaseStore`: any fsspec URL (``s3://bucket/releases``,
  ``gs://...``, ``memory://...``); data goes to ``<root>/_data/<id>-<uuid>/``
  and is committed by writing the small pointer object ``<root>/<id>.json``,
  a single PUT, which object stores make atomic.

- :class:`~sdmatlas.release.tiledb_engine.TileDBReleaseStore`: the same arrays as
  TileDB dense arrays in a TileDB group per release.

``open`` gives a :class:`~sdmatlas.release.Release`: the typed manifest and chunk
sources chosen for the store (:mod:`sdmatlas.release.sources`).
:func:`open_release` opens a release from the location its store gave (what the
catalog records).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zarr

from sdmatlas.errors import NotFoundError, ReleaseExistsError, StorageUnavailableError
from sdmatlas.release import layout
from sdmatlas.release.core import Release
from sdmatlas.release.objects import FsspecObjects
from sdmatlas.release.sources import ReleaseData


@dataclass(frozen=True)
class Staging:
    """A release being written: its group (None where the store is not Zarr), and what
    the store needs to commit or abort it."""

    release_id: str
    group: zarr.Group | None
    token: str


class ReleaseStore(ABC):
    @abstractmethod
    def exists(self, release_id: str) -> bool: ...

    @abstractmethod
    def list(self) -> list[str]: ...

    @abstractmethod
    def open(self, release_id: str) -> Release:
        """The published release, read-only; NotFoundError if there is none."""

    @abstractmethod
    def begin(self, release_id: str) -> Staging:
        """A new, invisible group to write the release into."""

    @abstractmethod
    def commit(self, staging: Staging) -> None:
        """Make a staged release visible, all at once; refuses an id that appeared meanwhile."""

    @abstractmethod
    def abort(self, staging: Staging) -> None:
        """Remove a staged release."""

    @abstractmethod
    def location(self, release_id: str) -> str: ...

    def upload(self, staging: Staging, local_dir: Path) -> None:
        """Copy a release built in ``local_dir`` into ``staging`` (stores whose staging
        is not a local directory)."""
        raise NotImplementedError(f"{type(self).__name__} stages in place")


def _listed(root: Path, exists: Callable[[str], bool]) -> list[str]:
    """The releases in a local directory: its entries that are not hidden and exist."""
    if not root.exists():
        return []
    return sorted(p.name for p in root.iterdir() if not p.name.startswith(".") and exists(p.name))


class LocalReleaseStore(ReleaseStore):
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def _path(self, release_id: str) -> Path:
        return self.root / release_id

    def exists(self, release_id: str) -> bool:
        return (self._path(release_id) / layout.metadata_key("")).exists()

    def list(self) -> list[str]:
        return _listed(self.root, self.exists)

    def open(self, release_id: str) -> Release:
        if not self.exists(release_id):
            raise NotFoundError(f"no release {release_id!r} in {self.root}")
        data = ReleaseData(name=release_id, local_dir=self._path(release_id))
        return Release(data, self.location(release_id), engine="zarr")

    def begin(self, release_id: str) -> Staging:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".{release_id}.publishing-{uuid.uuid4().hex[:8]}"
        return Staging(release_id, zarr.open_group(tmp, mode="w", zarr_format=3), str(tmp))

    def commit(self, staging: Staging) -> None:
        final = self._path(staging.release_id)
        try:
            os.rename(staging.token, final)  # atomic; fails if final exists and is not empty
        except OSError as exc:
            raise ReleaseExistsError(f"release {staging.release_id!r} appeared meanwhile") from exc

    def abort(self, staging: Staging) -> None:
        shutil.rmtree(staging.token, ignore_errors=True)

    def location(self, release_id: str) -> str:
        return str(self._path(release_id))


class FsspecReleaseStore(ReleaseStore):
    def __init__(self, url: str, **storage_options: Any) -> None:
        import fsspec

        self.url = url.rstrip("/")
        options = dict(storage_options)
        # s3fs retries a timed-out request 5 times by default: a class attribute, not an
        # option; a server that must answer within a request's deadline lowers it
        retries = options.pop("retries", None)
        self.fs, self.root = fsspec.core.url_to_fs(self.url, **options)
        if retries is not None:
            self.fs.retries = int(retries)
        self.storage_options = options

    def _pointer(self, release_id: str) -> str:
        return f"{self.root}/{release_id}.json"

    def _group(self, data: str, mode: str) -> zarr.Group:
        from zarr.storage import FsspecStore

        # from_url wraps synchronous filesystems (memory://, local) for Zarr's async API
        store = FsspecStore.from_url(
            f"{self.url}/{data}",
            storage_options=self.storage_options or None,
            read_only=mode == "r",
        )
        if mode == "r":
            return zarr.open_group(store=store, mode="r")
        return zarr.open_group(store=store, mode="w", zarr_format=3)

    def exists(self, release_id: str) -> bool:
        try:
            return bool(self.fs.exists(self._pointer(release_id)))
        except Exception as exc:  # connection refused, timeouts, 5xx after retries
            raise StorageUnavailableError(
                f"the release store does not answer ({type(exc).__name__}); retry later"
            ) from exc

    def list(self) -> list[str]:
        if not self.fs.exists(self.root):
            return []
        names = [str(p).rsplit("/", 1)[-1] for p in self.fs.ls(self.root, detail=False)]
        return sorted(n[: -len(".json")] for n in names if n.endswith(".json"))

    def open(self, release_id: str) -> Release:
        objects = FsspecObjects(self.fs, self.root, release_id)
        raw = objects.read(f"{release_id}.json")
        if raw is None:
            raise NotFoundError(f"no release {release_id!r} at {self.url}")
        data_dir = str(json.loads(raw)["data"])
        data = ReleaseData(
            name=release_id,
            objects=FsspecObjects(self.fs, f"{self.root}/{data_dir}", release_id),
            zarr_url=f"{self.url}/{data_dir}",
            storage_options=self.storage_options or None,
        )
        return Release(data, self.location(release_id), engine="zarr-fsspec")

    def begin(self, release_id: str) -> Staging:
        data = f"_data/{release_id}-{uuid.uuid4().hex[:8]}"
        return Staging(release_id, self._group(data, "w"), data)

    def commit(self, staging: Staging) -> None:
        if self.exists(staging.release_id):
            raise ReleaseExistsError(f"release {staging.release_id!r} appeared meanwhile")
        body = json.dumps({"data": staging.token, "release_id": staging.release_id})
        self.fs.pipe_file(self._pointer(staging.release_id), body.encode())

    def abort(self, staging: Staging) -> None:
        path = f"{self.root}/{staging.token}"
        if self.fs.exists(path):
            self.fs.rm(path, recursive=True)

    def location(self, release_id: str) -> str:
        return f"{self.url}/{release_id}.json"

    def upload(self, staging: Staging, local_dir: Path) -> None:
        """Every file of ``local_dir`` into the staging prefix (one PUT each; shards are
        whole objects, so a release of Europe is about a million objects, not billions)."""
        files = sorted(p for p in Path(local_dir).rglob("*") if p.is_file())
        target = f"{self.root}/{staging.token}"
        self.fs.put(
            [str(p) for p in files],
            [f"{target}/{p.relative_to(local_dir).as_posix()}" for p in files],
        )


class TileDBReleaseStore(ReleaseStore):
    """Releases as TileDB groups in a local directory (:mod:`sdmatlas.release.tiledb_engine`):
    ``<root>/<id>/``, written into a hidden sibling from the Zarr release publish builds,
    then renamed into place."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def _path(self, release_id: str) -> Path:
        return self.root / release_id

    def exists(self, release_id: str) -> bool:
        import tiledb

        path = self._path(release_id)
        return path.is_dir() and tiledb.object_type(str(path)) == "group"

    def list(self) -> list[str]:
        return _listed(self.root, self.exists)

    def open(self, release_id: str) -> Release:
        if not self.exists(release_id):
            raise NotFoundError(f"no release {release_id!r} in the TileDB store {self.root}")
        data = ReleaseData(name=release_id, tiledb_uri=str(self._path(release_id)))
        return Release(data, self.location(release_id), engine="tiledb")

    def begin(self, release_id: str) -> Staging:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".{release_id}.publishing-{uuid.uuid4().hex[:8]}"
        return Staging(release_id, None, str(tmp))

    def upload(self, staging: Staging, local_dir: Path) -> None:
        from sdmatlas.release.tiledb_engine import write_release

        write_release(Path(local_dir), staging.token)

    def commit(self, staging: Staging) -> None:
        try:
            os.rename(staging.token, self._path(staging.release_id))
        except OSError as exc:
            raise ReleaseExistsError(f"release {staging.release_id!r} appeared meanwhile") from exc

    def abort(self, staging: Staging) -> None:
        shutil.rmtree(staging.token, ignore_errors=True)

    def location(self, release_id: str) -> str:
        return f"tiledb+{self._path(release_id)}"


def release_store(
    location: ReleaseStore | Path | str, storage_options: dict[str, Any] | None = None
) -> ReleaseStore:
    """A store for a local directory, a ``tiledb+`` location (a local directory or URL
    of TileDB groups), or for a URL with a scheme other than ``file``."""
    if isinstance(location, ReleaseStore):
        return location
    text = str(location)
    if text.startswith("tiledb+"):
        return TileDBReleaseStore(text.removeprefix("tiledb+"))
    if "://" in text and not text.startswith("file://"):
        return FsspecReleaseStore(text, **(storage_options or {}))
    return LocalReleaseStore(Path(text.removeprefix("file://")))


def split_location(location: str) -> tuple[str, str]:
    """``(store root, release id)`` of a location a store gave (``store.location(id)``)."""
    text = str(location).rstrip("/")
    parent, _, name = text.rpartition("/")
    if text.startswith("tiledb+") or "://" not in text or text.startswith("file://"):
        return parent or ".", name
    return parent, name.removesuffix(".json")


def open_release(location: str | Path, storage_options: dict[str, Any] | None = None) -> Release:
    """The release at ``location``: a local release directory, an object-store pointer
    (``s3://bucket/releases/<id>.json``) or a ``tiledb+`` location."""
    root, release_id = split_location(str(location))
    return release_store(root, storage_options).open(release_id)
