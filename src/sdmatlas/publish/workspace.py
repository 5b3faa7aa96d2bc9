"""The bookkeeping of one publish: a lock, the plan, done markers and partial results.

A publish into a local releases directory works in ``<root>/.<id>.publishing/``::

    plan.json                 what is being published (cube, species, options); --resume
                              refuses a workspace whose plan differs, and says how
    release/                  the release's Zarr group, renamed to <root>/<id> at commit
    done/<stage>/<key>        one marker per finished task (JSON: its small results)
    partials/<stage>/<key>.npz larger partial results of a task (histograms, boxes)
    weights/<level>/<key>.npy level-0 pixel counts of a pyramid tile (for the next level)
    runs.json                 one record per run (tasks already done, tasks computed)

and holds ``<root>/.<id>.publish.lock`` (an flock) while it runs: a second publish of
the same id is refused at once. Readers never look at hidden names, so nothing is
visible before the commit. A killed publish leaves its workspace behind; ``--resume``
finishes it, ``sdmatlas clean`` lists and removes it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from sdmatlas.errors import ReleaseExistsError

SUFFIX = ".publishing"
LOCK_SUFFIX = ".publish.lock"


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


@dataclass(frozen=True)
class Workspace:
    """A workspace directory (picklable: tasks on workers write markers into it)."""

    path: Path

    @property
    def release_dir(self) -> Path:
        return self.path / "release"

    # -- markers -------------------------------------------------------------------------

    def marker(self, stage: str, key: str) -> Path:
        return self.path / "done" / stage / key

    def mark_done(self, stage: str, key: str, info: dict[str, Any]) -> None:
        _atomic_write(self.marker(stage, key), json.dumps(info).encode())

    def done(self, stage: str) -> dict[str, dict[str, Any]]:
        """The finished tasks of ``stage`` and what they recorded."""
        d = self.path / "done" / stage
        if not d.exists():
            return {}
        return {
            p.name: json.loads(p.read_text()) for p in d.iterdir() if not p.name.startswith(".")
        }

    # -- partial results -----------------------------------------------------------------

    def save_partial(self, stage: str, key: str, arrays: dict[str, npt.NDArray[Any]]) -> None:
        path = self.path / "partials" / stage / f"{key}.npz"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{key}.{uuid.uuid4().hex[:8]}.npz")
        np.savez_compressed(tmp, **arrays)  # type: ignore[arg-type]
        os.replace(tmp, path)

    def load_partial(self, stage: str, key: str) -> dict[str, npt.NDArray[Any]]:
        with np.load(self.path / "partials" / stage / f"{key}.npz") as z:
            return {k: z[k] for k in z.files}

    def save_weights(self, level: int, key: str, weights: npt.NDArray[np.int64]) -> None:
        path = self.path / "weights" / str(level) / f"{key}.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{key}.{uuid.uuid4().hex[:8]}.npy")
        np.save(tmp, weights)
        os.replace(tmp, path)

    def load_weights(self, level: int, key: str) -> npt.NDArray[np.int64] | None:
        """The saved weights of a tile; None for a tile that was not run (no territory)."""
        try:
            out: npt.NDArray[np.int64] = np.load(self.path / "weights" / str(level) / f"{key}.npy")
        except FileNotFoundError:
            return None
        return out

    # -- plan and runs -----------------------------------------------------------------------

    def read_plan(self) -> dict[str, Any] | None:
        try:
            plan: dict[str, Any] = json.loads((self.path / "plan.json").read_text())
        except FileNotFoundError:
            return None
        return plan

    def write_plan(self, plan: dict[str, Any]) -> None:
        _atomic_write(self.path / "plan.json", json.dumps(plan, indent=1).encode())

    def runs(self) -> list[dict[str, Any]]:
        try:
            runs: list[dict[str, Any]] = json.loads((self.path / "runs.json").read_text())
        except FileNotFoundError:
            return []
        return runs

    def start_run(self, run: dict[str, Any]) -> int:
        """Record a run as started (a run killed later stays recorded so); its index."""
        runs = self.runs()
        _atomic_write(self.path / "runs.json", json.dumps([*runs, run]).encode())
        return len(runs)

    def finish_run(self, index: int, run: dict[str, Any]) -> None:
        runs = self.runs()
        runs[index] = run
        _atomic_write(self.path / "runs.json", json.dumps(runs).encode())

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def plan_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The top-level entries in which two plans differ."""
    return sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))


class PublishLock:
    """An exclusive, non-blocking flock on ``<root>/.<id>.publish.lock``."""

    def __init__(self, root: Path, release_id: str) -> None:
        self.path = root / f".{release_id}{LOCK_SUFFIX}"
        self.release_id = release_id
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
            os.close(fd)
            raise ReleaseExistsError(
                f"release {self.release_id!r} is being published by another process "
                f"({holder or 'unknown'}); wait for it to finish, nothing was changed"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {os.uname().nodename}".encode(), 0)
        self._fd = fd

    def release(self, remove: bool) -> None:
        if self._fd is None:
            return
        if remove:
            self.path.unlink(missing_ok=True)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> PublishLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release(remove=False)


def workspace_for(root: Path, release_id: str) -> Workspace:
    return Workspace(root / f".{release_id}{SUFFIX}")


def temporary_workspace() -> Workspace:
    """A workspace outside the releases directory (stores that cannot resume)."""
    return Workspace(Path(tempfile.mkdtemp(prefix="sdmatlas-publish-")))


@dataclass(frozen=True)
class Leftover:
    """A workspace of a publish that did not finish, found by :func:`leftovers`."""

    path: Path
    release_id: str
    bytes: int
    in_use: bool


def _size(path: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, f)).st_size
    return total


def leftovers(root: Path) -> list[Leftover]:
    """Workspaces (and temporary directories of interrupted older publishes) in ``root``;
    ``in_use`` when a running publish holds its lock."""
    if not root.exists():
        return []
    found = []
    for p in sorted(root.iterdir()):
        name = p.name
        if not (name.startswith(".") and p.is_dir()):
            continue
        if name.endswith(SUFFIX):
            rid = name[1 : -len(SUFFIX)]
        elif ".publishing-" in name:  # an older publish's random staging name
            rid = name[1:].split(".publishing-")[0]
        else:
            continue
        found.append(Leftover(p, rid, _size(p), _locked(root, rid)))
    return found


def _locked(root: Path, release_id: str) -> bool:
    path = root / f".{release_id}{LOCK_SUFFIX}"
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def remove_leftover(root: Path, item: Leftover) -> bool:
    """Remove a leftover workspace unless a publish took its lock meanwhile."""
    lock = PublishLock(root, item.release_id)
    try:
        lock.acquire()
    except ReleaseExistsError:
        return False
    try:
        shutil.rmtree(item.path, ignore_errors=True)
    finally:
        lock.release(remove=True)
    return True
