"""The release format has one owner (:mod:`sdmatlas.release`): its layout, its typed and
versioned manifest, and chunk sources chosen by capability, identical on every store."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from sdmatlas.errors import CorruptDataError, IncompleteReleaseError, NotFoundError
from sdmatlas.predict.cube import open_cube
from sdmatlas.publish.release import PublishOptions, publish
from sdmatlas.publish.species_csv import species_info_from_csv
from sdmatlas.release import FORMAT_VERSION, Release, layout
from sdmatlas.release.sources import ZarrPython, open_source
from sdmatlas.storage import (
    LocalReleaseStore,
    ReleaseStore,
    open_release,
)

SRC = Path(__file__).resolve().parents[1] / "src" / "sdmatlas"

# Paths inside a release, and manifest keys read by subscript: only sdmatlas.release may
# spell them. (The prediction cube is another format, with its own module.)
LAYOUT = re.compile(r"""f?["'](levels|blocks|stats)/""")
MANIFEST = re.compile(
    r"""\[["'](format_version|indicator_order|aggregates|release_id|published|threshold)["']\]"""
)


def test_no_module_outside_the_release_package_spells_the_layout() -> None:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel.startswith("release/") or rel == "predict/cube.py":
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if LAYOUT.search(line) or MANIFEST.search(line):
                found.append(f"{rel}:{n}: {line.strip()}")
    assert found == [], "layout strings outside sdmatlas.release:\n" + "\n".join(found)


def test_the_grep_finds_what_it_looks_for() -> None:
    """The check above can fail: the patterns match the forms the code used to have."""
    assert LAYOUT.search('array(release, "levels/0/probability")')
    assert LAYOUT.search('f"blocks/{edge}/{name}"')
    assert MANIFEST.search('meta["release_id"]')
    assert not LAYOUT.search("layout.level_array(0, name)")


@pytest.fixture
def store(release_store_of_each_kind: ReleaseStore) -> ReleaseStore:
    return release_store_of_each_kind


@pytest.fixture
def published(store: ReleaseStore, cube: Path) -> Release:
    info = species_info_from_csv(None, open_cube(cube).species_ids)
    publish(cube, store, "fmt-1", info, PublishOptions(min_level_size=16))
    return store.open("fmt-1")


@pytest.fixture(scope="module")
def reference(cube: Path, tmp_path_factory: pytest.TempPathFactory) -> Release:
    """The same cube published as Zarr in a local directory, read with zarr-python."""
    info = species_info_from_csv(None, open_cube(cube).species_ids)
    store = LocalReleaseStore(tmp_path_factory.mktemp("ref"))
    publish(cube, store, "fmt-1", info, PublishOptions(min_level_size=16))
    return store.open("fmt-1")


def _arrays(rel: Release) -> list[str]:
    keys = [layout.PIXELS, layout.TERRITORY, layout.SPECIES]
    keys += [layout.aggregate(e, n) for e in rel.manifest.aggregates for n in layout.AGGREGATES]
    keys += [layout.stats(n) for n in layout.STATS]
    for k in range(rel.n_levels):
        keys += [layout.level_array(k, v) for v in [layout.PROBABILITY, *rel.manifest.indicators]]
    return keys


def test_every_source_reads_what_zarr_python_reads(published: Release, reference: Release) -> None:
    """The fast sources (local shards, object-store ranges, TileDB) against zarr-python,
    on every array of a release, one chunk at a time and in batches (TileDB against the
    same cube published as Zarr)."""
    fast_kinds = set()
    for key in _arrays(published):
        fast = published.source(key)
        fast_kinds.add(type(fast).__name__)
        ref = published if published.engine != "tiledb" else reference
        slow = open_source(ref.data, key, [ZarrPython])
        assert (fast.shape, fast.dtype, fast.inner) == (slow.shape, slow.dtype, slow.inner), key
        grid = [range(-(-n // c)) for n, c in zip(slow.shape, slow.inner, strict=True)]
        every = np.stack(np.meshgrid(*grid, indexing="ij"), -1).reshape(-1, len(grid))
        coords = [tuple(int(v) for v in c) for c in every]
        sample = coords[:: max(1, len(coords) // 40)]
        for c, batch in zip(sample, fast.chunks(sample), strict=True):
            want = slow.chunk(c)
            np.testing.assert_array_equal(fast.chunk(c), want, err_msg=f"{key} {c}")
            np.testing.assert_array_equal(batch, want, err_msg=f"{key} {c} (batch)")
        full = tuple(slice(0, n) for n in slow.shape)
        if np.prod(slow.shape) < 2e6:
            np.testing.assert_array_equal(fast.region(full), slow.region(full), err_msg=key)
    expected = {"zarr": "LocalChunkReader", "zarr-fsspec": "RangeChunkReader",
                "tiledb": "TileDBChunkReader"}[published.engine]  # fmt: skip
    assert expected in fast_kinds


def test_the_manifest_is_typed(published: Release, cube: Path) -> None:
    m = published.manifest
    assert m.format_version == FORMAT_VERSION and m.release_id == "fmt-1"
    assert m.grid == open_cube(cube).grid
    assert list(published.species_ids) == open_cube(cube).species_ids
    assert m.indicator_order == list(m.indicators)
    with pytest.raises(NotFoundError, match="no indicator or class layer 'nope'"):
        published.level(0, "nope")
    with pytest.raises(NotFoundError, match="levels 0 to"):
        published.level(published.n_levels, "probability")


def _rewrite_manifest(
    tmp_path: Path, cube: Path, change: dict[str, object], drop: tuple[str, ...] = ()
) -> Path:
    import zarr

    info = species_info_from_csv(None, open_cube(cube).species_ids)
    loc = Path(publish(cube, tmp_path / "r", "x-1", info, PublishOptions(min_level_size=16)))
    g = zarr.open_group(loc, mode="r+")
    old = dict(g.attrs[layout.MANIFEST_ATTR])  # type: ignore[arg-type]
    g.attrs[layout.MANIFEST_ATTR] = {k: v for k, v in {**old, **change}.items() if k not in drop}
    return loc


def test_version_2_releases_from_before_task_publishing_open(tmp_path: Path, cube: Path) -> None:
    """Their manifests have no ``publish`` record (bench/tiles.py's release is one)."""
    loc = _rewrite_manifest(tmp_path, cube, {}, drop=("publish",))
    assert open_release(loc).manifest.publish == {}


def test_unknown_versions_and_keys_are_refused(tmp_path: Path, cube: Path) -> None:
    loc = _rewrite_manifest(tmp_path, cube, {"format_version": FORMAT_VERSION + 1})
    with pytest.raises(IncompleteReleaseError, match=rf"format version {FORMAT_VERSION + 1}"):
        open_release(loc)
    loc = _rewrite_manifest(tmp_path / "b", cube, {"sets": {"lambda": 0.3}})
    with pytest.raises(CorruptDataError, match=r"does not match format version .*sets"):
        open_release(loc)
    loc = _rewrite_manifest(tmp_path / "c", cube, {"kind": "cube"})
    with pytest.raises(NotFoundError, match="not an sdmatlas release"):
        open_release(loc)
