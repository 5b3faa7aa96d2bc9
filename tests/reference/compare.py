"""Comparing two releases: every stored file byte for byte, the manifest but for timings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: manifest entries that say when and how a publish ran, not what it wrote
RUN_FIELDS = ("published", "seconds", "publish")


def stored_files(root: Path) -> dict[str, bytes]:
    """Every file of a release below ``root`` (relative path -> bytes), the root group's
    zarr.json (the manifest) left out."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.relative_to(root) != Path("zarr.json")
    }


def manifest(root: Path) -> dict[str, Any]:
    meta = json.loads((root / "zarr.json").read_text())
    attrs: dict[str, Any] = meta["attributes"]
    attrs["sdmatlas"] = {k: v for k, v in attrs["sdmatlas"].items() if k not in RUN_FIELDS}
    return attrs


def assert_same_release(a: Path, b: Path) -> None:
    fa, fb = stored_files(a), stored_files(b)
    assert sorted(fa) == sorted(fb), sorted(set(fa) ^ set(fb))[:10]
    differ = [k for k in fa if fa[k] != fb[k]]
    assert not differ, f"{len(differ)} files differ, e.g. {differ[:5]}"
    assert manifest(a) == manifest(b)
