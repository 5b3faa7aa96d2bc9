"""Releases in an object store, served by the API with no local copy; and the TileDB
engine, held to the same contract.

The store is a real S3-compatible HTTP server in its own process (moto's standalone
server, :mod:`sdmatlas.testing.locals3`), reached over HTTP by s3fs as AWS S3 would be.
The same cube is published and catalogued twice under the same release id: into a local
directory and into the bucket; every endpoint must answer the same bytes from both.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import morecantile
import pytest
from fastapi.testclient import TestClient

from conftest import served_catalog
from sdmatlas.grid import Grid
from sdmatlas.serve.app import create_app
from sdmatlas.serve.tiles.tiling import transformer
from sdmatlas.settings import Settings
from sdmatlas.storage import open_release
from sdmatlas.testing.locals3 import LocalS3

pytestmark = pytest.mark.slow  # a server process

KEY = "coast-s3"
SPECIES = f"{KEY}:species:3"


@pytest.fixture(scope="module")
def s3() -> Iterator[LocalS3]:
    with LocalS3() as server:
        yield server


@pytest.fixture(scope="module")
def engines(
    s3: LocalS3, cube: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Settings]:
    """The same release served from a local directory and from the bucket, no tile cache."""
    local = served_catalog(cube, tmp_path_factory.mktemp("local"), [(KEY, "2020")], tile_cache=[])
    bucket = s3.bucket("sdmatlas-releases")
    remote = served_catalog(
        cube,
        tmp_path_factory.mktemp("s3"),
        [(KEY, "2020")],
        releases_at=f"{bucket}/releases",
        tile_cache=[],
        storage_options={**s3.storage_options(), "retries": 1},
    )
    tdb = tmp_path_factory.mktemp("tiledb")
    tiledb = served_catalog(cube, tdb, [(KEY, "2020")], releases_at=f"tiledb+{tdb / 'releases'}",
                            tile_cache=[])  # fmt: skip
    return {"local": local, "s3": remote, "tiledb": tiledb}


@pytest.fixture(scope="module")
def grid(engines: dict[str, Settings]) -> Grid:
    return open_release(engines["local"].data_dir / "releases" / KEY).grid


def _requests(grid: Grid, key: str = KEY) -> list[tuple[str, str, Any]]:
    """(method, url, json body) of every kind of read endpoint, over the release."""
    species = f"{key}:species:3"
    to_ll = transformer(grid.crs, "EPSG:4326")
    cx, cy = grid.x0 + grid.width * grid.res / 2, grid.y0 - grid.height * grid.res / 2
    lon, lat = to_ll.transform(cx, cy)
    corners = [(-9000, -7000), (8000, -7000), (8000, 6000), (-9000, 6000), (-9000, -7000)]
    ring = [list(to_ll.transform(cx + dx, cy + dy)) for dx, dy in corners]
    tms = morecantile.tms.get("WebMercatorQuad")
    out: list[tuple[str, str, Any]] = []
    for z in (7, 9, 11, 12):
        t = tms.tile(lon, lat, z)
        for layer, q in [(species, ""), (f"{key}:indicator:shannon", ""),
                         (f"{key}:group:richness", "?genus=Alpha")]:  # fmt: skip
            out.append(("GET", f"/tiles/{layer}/WebMercatorQuad/{z}/{t.x}/{t.y}.png{q}", None))
        out.append(("GET", f"/tiles/{species}/WebMercatorQuad/{z}/{t.x}/{t.y}.npy", None))
    b = tms.xy_bounds(tms.tile(lon, lat, 10))
    bbox = f"{lon - 0.1},{lat - 0.1},{lon + 0.1},{lat + 0.1}"
    out += [
        ("GET", f"/point?lon={lon}&lat={lat}", None),
        ("GET", f"/point?lon={lon + 0.05}&lat={lat - 0.03}&release={key}", None),
        ("POST", f"/report?release={key}", {"type": "Polygon", "coordinates": [ring]}),
        ("GET", f"/layers/{species}/cog", None),
        ("GET", f"/layers/{key}:indicator:richness/cog?bbox={bbox}", None),
        ("GET", "/wms?SERVICE=WMS&REQUEST=GetMap&VERSION=1.3.0&LAYERS="
                f"{key}.species.3&STYLES=&CRS=EPSG:3857&BBOX={b.left},{b.bottom},{b.right},{b.top}"
                "&WIDTH=200&HEIGHT=150&FORMAT=image/png", None),
    ]  # fmt: skip
    return out


def _send(c: TestClient, method: str, url: str, body: Any) -> Any:
    return c.post(url, json=body) if method == "POST" else c.get(url)


@pytest.mark.parametrize("engine", ["s3", "tiledb"])
def test_every_endpoint_answers_the_same_bytes_on_every_engine(
    engines: dict[str, Settings], grid: Grid, engine: str
) -> None:
    """From the bucket (ranged GETs) and from TileDB as from a local Zarr directory."""
    with (
        TestClient(create_app(engines["local"])) as a,
        TestClient(create_app(engines[engine])) as b,
    ):
        for method, url, body in _requests(grid):
            ra, rb = _send(a, method, url, body), _send(b, method, url, body)
            assert ra.status_code == 200, (url, ra.text[:300])
            assert rb.status_code == ra.status_code, (url, rb.text[:300])
            assert rb.content == ra.content, url
            assert rb.headers.get("content-type") == ra.headers.get("content-type"), url


def test_the_bucket_release_is_read_with_ranged_gets(engines: dict[str, Settings]) -> None:
    """The capability check picks the range reader for every array publish writes."""
    s = engines["s3"]
    location = f"s3://sdmatlas-releases/releases/{KEY}.json"
    rel = open_release(location, {**s.storage_options, "retries": 1})
    assert rel.engine == "zarr-fsspec"
    for src in (rel.level(0, "probability"), rel.pixels(), rel.aggregate(8, "sum"),
                rel.territory(), rel.level(1, "richness")):  # fmt: skip
        assert type(src).__name__ == "RangeChunkReader"


def test_a_stopped_store_answers_503_with_retry_after_then_recovers(
    s3: LocalS3, engines: dict[str, Settings], grid: Grid
) -> None:
    tile = next(url for _, url, _ in _requests(grid) if url.endswith(".npy"))
    with TestClient(create_app(engines["local"])) as a:
        want = a.get(tile)
    with TestClient(create_app(engines["s3"])) as c:
        s3.pause()  # the server process stops: connections hang, mid-request
        try:
            t0 = time.monotonic()
            r = c.get(tile)
            took = time.monotonic() - t0
            ready = c.get("/ready")
        finally:
            s3.resume()
        assert r.status_code == 503, r.text
        assert int(r.headers["retry-after"]) > 0
        assert "retry" in r.json()["detail"] and "s3://" not in r.text  # no bucket out
        assert took < 30
        assert ready.status_code == 503
        # nothing half-read stays cached: the same request now succeeds, same bytes
        again = c.get(tile)
        assert again.status_code == 200 and again.content == want.content
        assert c.get("/ready").status_code == 200


def test_a_release_missing_from_the_bucket_is_named(
    s3: LocalS3, cube: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    import s3fs

    bucket = s3.bucket("sdmatlas-gone")
    opts = {**s3.storage_options(), "retries": 1}
    at = f"{bucket}/releases"
    s = served_catalog(cube, tmp_path_factory.mktemp("gone"), [("coast-gone", "2020")],
                       releases_at=at, tile_cache=[], storage_options=opts)  # fmt: skip
    grid = open_release(f"{bucket}/releases/coast-gone.json", opts).grid
    urls = [url for _, url, _ in _requests(grid, "coast-gone")]
    point = next(u for u in urls if u.startswith("/point"))
    tile = next(u for u in urls if u.startswith("/tiles/coast-gone:species:3") and "/12/" in u)
    fs = s3fs.S3FileSystem(**s3.storage_options(), skip_instance_cache=True)
    (data,) = fs.ls("sdmatlas-gone/releases/_data")
    fs.rm(f"{data}/levels/0/probability/zarr.json")
    with TestClient(create_app(s)) as c:
        r = c.get(point)  # reads pixels: still there
        assert r.status_code == 200, r.text
        r = c.get(tile.replace(".npy", ".png"))
        assert r.status_code == 404, r.text
        detail = r.json()["detail"]
        assert "release coast-gone" in detail and "levels/0/probability" in detail
        assert "s3://" not in detail and "sdmatlas-gone" not in detail
        fs.rm(data, recursive=True)  # the whole release data, its pointer left behind
        c.app.state.services.reader._open.clear()  # type: ignore[attr-defined]
        r = c.get(point)
        assert r.status_code == 404 and "release coast-gone" in r.json()["detail"], r.text


def test_tiledb_reaches_the_same_s3_server_through_its_own_vfs(s3: LocalS3) -> None:
    """What was found for the TileDB engine on S3: TileDB's own S3 client (its VFS, not
    fsspec) writes and reads a dense array through this server with path-style
    addressing. The engine itself serves TileDB releases from local directories only
    (docs/storage.md)."""
    import numpy as np
    import tiledb

    s3.bucket("sdmatlas-tiledb")
    ctx = tiledb.Ctx(tiledb.Config({
        "vfs.s3.endpoint_override": f"127.0.0.1:{s3.port}", "vfs.s3.scheme": "http",
        "vfs.s3.use_virtual_addressing": "false", "vfs.s3.region": "eu-west-1",
        "vfs.s3.aws_access_key_id": s3.key, "vfs.s3.aws_secret_access_key": s3.secret,
    }))  # fmt: skip
    uri = "s3://sdmatlas-tiledb/a"
    dim = tiledb.Dim(name="d0", domain=(0, 99), tile=10, dtype=np.int64, ctx=ctx)
    attr = tiledb.Attr(name="v", dtype=np.uint8, ctx=ctx)
    tiledb.Array.create(
        uri, tiledb.ArraySchema(domain=tiledb.Domain(dim, ctx=ctx), attrs=[attr], ctx=ctx), ctx=ctx
    )
    with tiledb.open(uri, "w", ctx=ctx) as arr:
        arr[0:100] = np.arange(100, dtype=np.uint8)
    with tiledb.open(uri, ctx=ctx) as arr:
        assert arr[37:40]["v"].tolist() == [37, 38, 39]
