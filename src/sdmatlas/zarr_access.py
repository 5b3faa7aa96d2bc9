"""Typed access to Zarr groups: a named member as an array, the sdmatlas attributes as a dict.

Zarr types ``group[name]`` as ``Array | Group``; these helpers check and narrow it once.
"""

from __future__ import annotations

from typing import Any, cast

import zarr

from sdmatlas.errors import NotFoundError


def array(group: zarr.Group, path: str) -> zarr.Array[Any]:
    """The array at ``path`` below ``group``."""
    try:
        node = group[path]
    except KeyError as exc:
        raise NotFoundError(f"no array {path!r} in {group.store_path}") from exc
    if not isinstance(node, zarr.Array):
        raise NotFoundError(f"{path!r} in {group.store_path} is a group, not an array")
    return node


def sdmatlas_attrs(group: zarr.Group) -> dict[str, Any]:
    """The ``sdmatlas`` attribute of a cube or release group."""
    meta = group.attrs.get("sdmatlas")
    if not isinstance(meta, dict):
        raise NotFoundError(f"{group.store_path} has no sdmatlas metadata")
    return cast(dict[str, Any], meta)
