"""One contract, run against every release store: a local directory, an fsspec URL and
the TileDB engine.

``memory://`` is fsspec's in-process filesystem: the same code path as s3:// or gs://
(FsspecStore, pointer objects), with no server to reach from here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import World
from sdmatlas.errors import NotFoundError, ReleaseExistsError
from sdmatlas.predict.cube import open_cube
from sdmatlas.publish import queries
from sdmatlas.publish.release import publish
from sdmatlas.publish.species_csv import species_info_from_csv
from sdmatlas.publish.workspace import leftovers, remove_leftover
from sdmatlas.storage import (
    FsspecReleaseStore,
    LocalReleaseStore,
    ReleaseStore,
    TileDBReleaseStore,
    release_store,
)


@pytest.fixture
def store(release_store_of_each_kind: ReleaseStore) -> ReleaseStore:
    return release_store_of_each_kind


def test_publish_open_and_query(store: ReleaseStore, cube: Path, coast: World) -> None:
    c = open_cube(cube)
    assert store.list() == [] and not store.exists("r1")
    location = publish(cube, store, "r1", species_info_from_csv(None, c.species_ids))
    assert location == store.location("r1")
    assert store.exists("r1") and store.list() == ["r1"]
    rel = store.open("r1")
    x, y = coast.grid.xy(40, 30)
    assert np.array_equal(queries.point(rel, float(x), float(y)).codes, c.read()[:, 40, 30])


def test_existing_and_missing_ids(store: ReleaseStore, cube: Path) -> None:
    info = species_info_from_csv(None, open_cube(cube).species_ids)
    publish(cube, store, "r1", info)
    with pytest.raises(ReleaseExistsError, match="already exists"):
        publish(cube, store, "r1", info)
    with pytest.raises(NotFoundError, match="no release 'nope'"):
        store.open("nope")


def test_a_failed_publish_leaves_nothing_visible(store: ReleaseStore, cube: Path) -> None:
    info = species_info_from_csv(None, open_cube(cube).species_ids)

    def crash(stage: str, done: int, total: int) -> None:
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        publish(cube, store, "r2", info, progress=crash)
    assert store.list() == [] and not store.exists("r2")
    if isinstance(store, FsspecReleaseStore):
        assert not store.fs.exists(f"{store.root}/_data") or not store.fs.ls(f"{store.root}/_data")
    elif isinstance(store, TileDBReleaseStore):  # the staging group is removed
        assert not store.root.exists() or list(store.root.iterdir()) == []
    else:  # a local publish keeps its finished tasks for --resume, hidden from readers
        assert isinstance(store, LocalReleaseStore)
        assert [p.name for p in store.root.iterdir()] == [".r2.publishing"]
        (left,) = leftovers(store.root)
        assert remove_leftover(store.root, left) and not any(store.root.iterdir())


def test_commit_refuses_an_id_that_appeared_meanwhile(store: ReleaseStore, cube: Path) -> None:
    info = species_info_from_csv(None, open_cube(cube).species_ids)
    staging = store.begin("r3")
    if staging.group is not None:
        staging.group.attrs["x"] = 1
        staging.group.create_array("a", shape=(1,), dtype="uint8")
    else:
        Path(staging.token).mkdir(parents=True)
        (Path(staging.token) / "x").write_text("a staged file")
    publish(cube, store, "r3", info)
    with pytest.raises(ReleaseExistsError, match="appeared meanwhile"):
        store.commit(staging)
    store.abort(staging)
    assert store.list() == ["r3"]


def test_release_store_picks_the_backend(tmp_path: Path) -> None:
    assert isinstance(release_store(tmp_path), LocalReleaseStore)
    assert isinstance(release_store(f"file://{tmp_path}"), LocalReleaseStore)
    assert isinstance(release_store("memory://bucket/releases"), FsspecReleaseStore)
    assert isinstance(release_store(f"tiledb+{tmp_path}"), TileDBReleaseStore)
