"""Shared fixtures: small windows of the demo world and the committed demo model.

The demo world is defined at every EPSG:3035 coordinate, so a small window
here has the same covariates as the same place in the full demo, and the
committed demo model (trained at 500 m) applies to it unchanged.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from sdmatlas.catalog.db import Catalog
from sdmatlas.demo import DEMO_CARD, region
from sdmatlas.demo.build import write_covariates
from sdmatlas.grid import Grid
from sdmatlas.settings import Settings
from sdmatlas.territory import Territory, write_mask_raster
from sdmatlas.testing.localpg import LocalPostgres

ROOT = Path(__file__).resolve().parents[1]

# Starlette's TestClient sends "Host: testserver"; the apps of the tests accept it beside
# the default allow-list (tests/test_hardening.py checks the default and the refusals).
os.environ.setdefault("SDMATLAS_ALLOWED_HOSTS", '["testserver", "localhost", "127.0.0.1", "[::1]"]')


@dataclass(frozen=True)
class World:
    """A window of the demo world: covariate COGs, a territory mask raster, its grid."""

    root: Path
    grid: Grid
    territory: Territory

    @property
    def covariates(self) -> dict[str, Path]:
        return {p.stem: p for p in sorted((self.root / "covariates").glob("*.tif"))}

    @property
    def territory_path(self) -> Path:
        return self.root / "territory.tif"


def make_world(root: Path, left: float, top: float, width: int, height: int, chunk: int) -> World:
    res = region.RESOLUTION
    grid = Grid(crs=region.CRS, res=res, x0=left, y0=top, width=width, height=height, chunk=chunk)
    territory = region.demo_territory(grid)
    write_covariates(grid, root / "covariates")
    write_mask_raster(territory, root / "territory.tif")
    return World(root, grid, territory)


@pytest.fixture(scope="session")
def demo_card() -> Path:
    return DEMO_CARD


@pytest.fixture(scope="session")
def coast(tmp_path_factory: pytest.TempPathFactory) -> World:
    """70 x 90 pixels on the Istrian coast: land, sea and islands; 32-pixel chunks
    (3 x 3, the last row and column partial)."""
    world = make_world(tmp_path_factory.mktemp("coast"), 4_580_000.0, 2_520_000.0, 90, 70, 32)
    assert 0.2 < world.territory.mask.mean() < 0.95, "the fixture must hold land and sea"
    return world


@pytest.fixture(scope="session")
def many_chunks(tmp_path_factory: pytest.TempPathFactory) -> World:
    """160 x 200 pixels in 16-pixel chunks: enough chunks to interrupt a run mid-way."""
    world = make_world(tmp_path_factory.mktemp("many"), 4_600_000.0, 2_600_000.0, 200, 160, 16)
    assert world.territory.mask.mean() > 0.5
    return world


@pytest.fixture(scope="session")
def cube(tmp_path_factory: pytest.TempPathFactory, demo_card: Path, coast: World) -> Path:
    """The demo model's complete cube over the ``coast`` window (read-only: copy to change)."""
    from sdmatlas.predict.pipeline import PredictOptions, predict

    out = tmp_path_factory.mktemp("cube") / "cube.zarr"
    predict(demo_card, coast.covariates, coast.territory, out, PredictOptions(workers=0))
    return out


def wait_for_markers(cube_path: Path, proc: subprocess.Popen[bytes], n: int = 5,
                     timeout: float = 300) -> int:  # fmt: skip
    """Wait until a running prediction has at least ``n`` done markers (or has ended):
    the moment to kill or cancel it mid-run. Returns the markers seen."""
    markers = cube_path / "_sdmatlas" / "done"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if markers.exists() and len(os.listdir(markers)) >= n:
            break
        time.sleep(0.005)
    return len(os.listdir(markers)) if markers.exists() else 0


def cube_chunk_bytes(cube_path: Path) -> dict[str, bytes]:
    """Every stored chunk of a cube's probability array, by relative path."""
    base = cube_path / "probability" / "c"
    return {
        str(p.relative_to(base)): p.read_bytes() for p in sorted(base.rglob("*")) if p.is_file()
    }


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


# -- catalog backends ---------------------------------------------------------------------------
# The same catalog tests run on the embedded SQLite and on a real PostgreSQL 15 + PostGIS 3
# (a throwaway cluster started here). A missing PostGIS is an error, never a skip.

BACKENDS = ["sqlite", pytest.param("postgis", marks=pytest.mark.slow)]
_db_names = itertools.count()


@pytest.fixture(scope="session")
def postgres() -> Iterator[LocalPostgres]:
    pg = LocalPostgres().start()
    yield pg
    pg.remove()


def new_database(pg: LocalPostgres) -> str:
    """A new, empty database on the session's cluster; returns its URL."""
    name = f"t{next(_db_names)}"
    admin = sa.create_engine(pg.url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return pg.url.rsplit("/", 1)[0] + f"/{name}"


def catalog_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / f'catalog-{next(_db_names)}.sqlite'}"
    return new_database(request.getfixturevalue("postgres"))


@pytest.fixture(params=BACKENDS)
def empty_catalog(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Catalog]:
    """A catalog database with no tables, on each backend."""
    c = Catalog(catalog_url(request.param, request, tmp_path))
    yield c
    c.dispose()


@pytest.fixture(params=BACKENDS)
def catalog(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Catalog]:
    """A migrated, empty catalog, on each backend."""
    c = Catalog(catalog_url(request.param, request, tmp_path))
    c.upgrade()
    yield c
    c.dispose()


# -- a real `sdmatlas serve` ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def sdmatlas_server(env: dict[str, str], workers: int = 1, ready: str = "/health") -> Iterator[str]:
    """``sdmatlas serve`` in a subprocess on a free port, with ``env`` over a copy of the
    environment cleared of SDMATLAS_* and PROMETHEUS_* variables; yields its base URL."""
    port = free_port()
    full = {k: v for k, v in os.environ.items() if not k.startswith(("SDMATLAS_", "PROMETHEUS"))}
    # stderr to a file, not a pipe: undrained, its access logs would block the server
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "sdmatlas"), "serve", "--port", str(port),
             "--workers", str(workers)],
            env=full | env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=log,
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 60
        try:
            while True:
                try:
                    urllib.request.urlopen(base + ready, timeout=2)
                    break
                except OSError:
                    if proc.poll() is not None or time.time() > deadline:
                        log.seek(0)
                        tail = log.read()[-3000:]
                        raise AssertionError(f"sdmatlas serve did not start: {tail!r}") from None
                    time.sleep(0.2)
            yield base
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(20)


@contextlib.contextmanager
def uvicorn_thread(app: Any, log_level: str = "warning") -> Iterator[str]:
    """An ASGI app served by uvicorn on a free port in a thread; yields its base URL."""
    import threading

    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level=log_level))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    assert server.started
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


# -- a served catalog ----------------------------------------------------------------------------


def served_catalog(cube: Path, root: Path, releases: list[tuple[str, str]],
                   releases_at: str | None = None, iucn: bool = False,
                   **settings: object) -> Settings:  # fmt: skip
    """The cube published as each (key, period) release under ``root`` (or in the release
    store ``releases_at``), catalogued in a SQLite catalog under ``root`` with the demo
    territories; the app settings to serve it. ``iucn``: the species get a mix of IUCN
    categories, threatened ones rare (else none: every set's worst status is "NA")."""
    from sdmatlas.catalog.imports import import_territories
    from sdmatlas.catalog.register import register_release
    from sdmatlas.predict.cube import open_cube
    from sdmatlas.publish.indicators import SpeciesInfo
    from sdmatlas.publish.release import PublishOptions, publish
    from sdmatlas.storage import open_release, release_store

    ids = np.asarray(open_cube(cube).species_ids, np.int64)
    n = len(ids)
    none = np.zeros(n, bool)
    # two genera of one family: the OGC services list their group layers
    genus = np.array(["Alpha" if i % 4 == 0 else "Beta" for i in range(n)], dtype=object)
    mix = {41: "CR", 23: "EN", 13: "VU", 7: "NT", 5: "DD"}
    cats = [next((c for k, c in mix.items() if i % k == 1), "LC") if iucn else "" for i in range(n)]
    info = SpeciesInfo(ids=ids, protected=none, invasive=none, endemic=none, genus=genus,
                       family=np.array(["Fagaceae"] * n, dtype=object),
                       iucn=np.array(cats if iucn else [], dtype=object))  # fmt: skip
    s = Settings(data_dir=root, database_url=f"sqlite:///{root / 'catalog.sqlite'}",
                 **settings)  # type: ignore[arg-type]  # fmt: skip
    c = Catalog.from_settings(s)
    c.upgrade()
    import_territories(c, ROOT / "src" / "sdmatlas" / "demo" / "territories.geojson")
    store = release_store(releases_at or root / "releases", s.storage_options)
    for key, period in releases:
        rel = publish(cube, store, key, info, PublishOptions(min_level_size=16))
        register_release(c, open_release(rel, s.storage_options), rel, period)
    c.dispose()
    return s


# -- release stores ------------------------------------------------------------------------------


@pytest.fixture(params=["local", "fsspec-memory", "tiledb"])
def release_store_of_each_kind(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """A local directory, an fsspec store (``memory://``: the code path of s3:// without a
    server; tests/test_object_store.py has the real one) and the TileDB engine."""
    import uuid

    from sdmatlas.storage import FsspecReleaseStore, LocalReleaseStore, TileDBReleaseStore

    if request.param == "local":
        yield LocalReleaseStore(tmp_path / "releases")
    elif request.param == "tiledb":
        yield TileDBReleaseStore(tmp_path / "tiledb")
    else:
        s = FsspecReleaseStore(f"memory://sdmatlas-test-{uuid.uuid4().hex}/releases")
        yield s
        if s.fs.exists(s.root):
            s.fs.rm(s.root, recursive=True)
