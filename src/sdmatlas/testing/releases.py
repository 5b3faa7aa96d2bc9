"""Raw access to a local release for tests and benchmarks: its Zarr group, read with
zarr-python, an independent reader of what :mod:`sdmatlas.release` writes and reads."""

from __future__ import annotations

from pathlib import Path

import zarr


def release_group(path: Path | str) -> zarr.Group:
    """The release directory's root group, opened with zarr-python (read-only)."""
    return zarr.open_group(Path(path), mode="r")
