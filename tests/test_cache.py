"""The tile cache against a real Redis server (Debian's redis-server, started here),
real disks (tmpfs mounts where the test may mount, for full and read-only disks),
and real worker processes; seeding; metrics and access logs."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import morecantile
import pytest
from fastapi.testclient import TestClient

from conftest import free_port, sdmatlas_server, served_catalog
from sdmatlas.catalog.db import Catalog
from sdmatlas.serve.app import create_app
from sdmatlas.serve.cache import DiskCache, Entry, MemoryCache, RedisCache, TileCache
from sdmatlas.settings import Settings

# slow: real Redis, tmpfs mounts and worker processes (make test-fast skips them)
pytestmark = pytest.mark.slow

TERRITORIES = Path(__file__).resolve().parents[1] / "src/sdmatlas/demo/territories.geojson"
BIN = Path(sys.executable).parent
KEY = "coast-cache"
LAYER = f"{KEY}:species:3"


class RedisServer:
    """A throwaway redis-server on a free port; stop() and start() for outages."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.time() + 10
        while time.time() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port)):
                return self
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start (make test installs it)")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    r = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def catalog_settings(tmp_path_factory: pytest.TempPathFactory, cube: Path) -> Settings:
    """The coast cube published and catalogued; settings with caching off (tests add it)."""
    return served_catalog(cube, tmp_path_factory.mktemp("cache"), [(KEY, "2020")], tile_cache=[],
                          layer_cache_seconds=0, tile_cache_retry_seconds=0.3)  # fmt: skip


def data_tiles(client: TestClient, z: int, n: int) -> list[str]:
    tms = morecantile.tms.get("WebMercatorQuad")
    out = []
    for t in tms.tiles(13.0, 44.8, 14.5, 45.6, [z]):
        path = f"/tiles/{LAYER}/WebMercatorQuad/{z}/{t.x}/{t.y}.png"
        if client.get(path).headers.get("X-Tile-Empty") != "true":
            out.append(path)
        if len(out) == n:
            break
    assert out
    return out


def app(settings: Settings, **update: object) -> TestClient:
    return TestClient(create_app(settings.model_copy(update=update)))


# -- backends ------------------------------------------------------------------------------------


def test_backends_store_and_return_entries(tmp_path: Path, redis_server: RedisServer) -> None:
    key = "ab" * 16
    entry = Entry(b"\x89PNG...", empty=False, level=2)
    for b in [MemoryCache(1 << 20), DiskCache(tmp_path / "d"), RedisCache(redis_server.url, 60)]:
        assert b.get("rel-1", key) is None and not b.contains("rel-1", key)
        b.put("rel-1", key, entry.encode())
        assert Entry.decode(b.get("rel-1", key) or b"") == entry, b.name
        assert b.contains("rel-1", key) and b.get("rel-2", key) is None, b.name
    assert Entry.decode(Entry(b"", True, None).encode()) == Entry(b"", True, None)
    with pytest.raises(ValueError):
        DiskCache(tmp_path).path("../etc", key)
    # a hit in a slower backend is copied into the faster ones
    mem, disk = MemoryCache(1 << 20), DiskCache(tmp_path / "d")
    stack = TileCache([mem, disk])
    hit = stack.get("rel-1", key)
    assert hit is not None and hit[1] == "disk" and mem.get("rel-1", key) == entry.encode()
    assert stack.get("rel-1", key) == (entry, "memory")
    # the memory cache stays within its bytes
    small = MemoryCache(10_000)
    for i in range(100):
        small.put("r", f"{i:032x}", bytes(500))
    assert small._bytes <= 10_000 and small.get("r", f"{99:032x}") is not None
    # purging a release frees its files and leaves the others
    disk.put("rel-2", key, b"xx")
    assert disk.purge("rel-1") == (1, len(entry.encode()))
    assert disk.get("rel-1", key) is None and disk.get("rel-2", key) == b"xx"


def test_cached_tiles_equal_rendered_ones(
    catalog_settings: Settings, redis_server: RedisServer, tmp_path: Path
) -> None:
    plain = app(catalog_settings)
    paths = data_tiles(plain, 10, 6)
    stack = {"tile_cache": ["memory", "disk", "redis"], "tile_cache_dir": tmp_path / "tiles",
             "redis_url": redis_server.url}  # fmt: skip
    first = app(catalog_settings, **stack)
    for p in paths:
        want = plain.get(p)
        assert want.headers["X-Cache"] == "off"
        miss = first.get(p)
        assert miss.headers["X-Cache"] == "miss" and miss.content == want.content
        hit = first.get(p)
        assert hit.headers["X-Cache"] == "hit-memory" and hit.content == want.content
        assert hit.headers["ETag"] == want.headers["ETag"]
        assert hit.headers.get("X-Pyramid-Level") == want.headers.get("X-Pyramid-Level")
    # a second process: its memory is empty, the disk has the tiles
    second = app(catalog_settings, **stack)
    assert {second.get(p).headers["X-Cache"] for p in paths} == {"hit-disk"}
    # a replica on another machine: only Redis is shared
    replica = app(catalog_settings, tile_cache=["redis"], redis_url=redis_server.url)
    for p in paths:
        r = replica.get(p)
        assert r.headers["X-Cache"] == "hit-redis" and r.content == plain.get(p).content
    # WMTS and TMS read the same entries
    z, x, y = (int(v) for v in re.findall(r"/(\d+)/(\d+)/(\d+)\.png", paths[0])[0])
    wmts = second.get(f"/wmts/1.0.0/{LAYER}/default/WebMercatorQuad/{z}/{y}/{x}.png")
    tms = second.get(f"/tms/1.0.0/{LAYER}/WebMercatorQuad/{z}/{x}/{2**z - 1 - y}.png")
    assert wmts.headers["X-Cache"].startswith("hit") and tms.headers["X-Cache"].startswith("hit")
    assert wmts.content == tms.content == plain.get(paths[0]).content


def test_a_new_layer_version_never_gets_an_old_tile(
    catalog_settings: Settings, tmp_path: Path
) -> None:
    from dataclasses import replace

    c = app(catalog_settings, tile_cache=["memory", "disk"], tile_cache_dir=tmp_path)
    path = data_tiles(c, 10, 1)[0]
    old = c.get(path)
    assert c.get(path).headers["X-Cache"] == "hit-memory"
    layers = c.app.state.services.layers  # type: ignore[attr-defined]
    real = layers._lookup

    def republished(layer_id: str):  # type: ignore[no-untyped-def]
        return replace(real(layer_id), version="f" * 16)

    layers._lookup = republished
    new = c.get(path)
    assert new.headers["X-Cache"] == "miss" and new.headers["ETag"] != old.headers["ETag"]
    # a retired release is refused at once (layer_cache_seconds=0), though its tiles are cached
    layers._lookup = real
    with Catalog.from_settings(catalog_settings).session() as s:
        from sqlalchemy import update

        from sdmatlas.catalog.schema import Release

        s.execute(update(Release).where(Release.key == KEY).values(status="retired"))
        s.commit()
    try:
        gone = c.get(path)
        assert gone.status_code == 404 and "retired" in gone.json()["detail"]
    finally:
        with Catalog.from_settings(catalog_settings).session() as s:
            s.execute(update(Release).where(Release.key == KEY).values(status="published"))
            s.commit()
    assert c.get(path).status_code == 200


def test_empty_tiles_are_cached_as_empty(catalog_settings: Settings, tmp_path: Path) -> None:
    c = app(catalog_settings, tile_cache=["disk"], tile_cache_dir=tmp_path)
    tms = morecantile.tms.get("WebMercatorQuad")
    t = tms.tile(14.6, 45.0, 11)  # the sea east of the window's data (an empty tile)
    path = f"/tiles/{LAYER}/WebMercatorQuad/11/{t.x + 3}/{t.y}.png"
    first, again = c.get(path), c.get(path)
    assert first.headers["X-Tile-Empty"] == "true" and again.headers["X-Tile-Empty"] == "true"
    assert again.headers["X-Cache"] == "hit-disk" and again.content == first.content
    assert len(first.content) < 200  # one transparent palette image


# -- concurrency ---------------------------------------------------------------------------------


def served(settings: Settings, env: dict[str, str], workers: int = 2) -> Any:
    db = {"SDMATLAS_DATA_DIR": str(settings.data_dir),
          "SDMATLAS_DATABASE_URL": str(settings.database_url)}  # fmt: skip
    return sdmatlas_server(db | env, workers)


def metric(text: str, name: str, labels: str = "") -> float:
    total = 0.0
    for line in text.splitlines():
        if (line.startswith(name + "{") and labels in line) or (
            not labels and line.startswith(name + " ")
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.mark.parametrize("backend", ["disk", "redis"])
def test_one_render_for_concurrent_requests(
    catalog_settings: Settings, redis_server: RedisServer, tmp_path: Path, backend: str
) -> None:
    """16 simultaneous requests for one missing tile, over 2 worker processes: 1 render."""
    env = {"SDMATLAS_TILE_CACHE": json.dumps([backend]), "SDMATLAS_REDIS_URL": redis_server.url,
           "SDMATLAS_TILE_CACHE_DIR": str(tmp_path / "tiles")}  # fmt: skip
    tms = morecantile.tms.get("WebMercatorQuad")
    with served(catalog_settings, env) as base:
        for k, t in enumerate(tms.tiles(13.5, 45.0, 14.0, 45.4, [13])):
            if k == 3:
                break
            url = f"{base}/tiles/{LAYER}/WebMercatorQuad/13/{t.x}/{t.y}.png?colormap=cividis"
            barrier = threading.Barrier(16)
            bodies: list[bytes] = []

            def fetch(
                u: str = url, b: threading.Barrier = barrier, out: list[bytes] = bodies
            ) -> None:
                b.wait()
                out.append(urllib.request.urlopen(u, timeout=30).read())

            threads = [threading.Thread(target=fetch) for _ in range(16)]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            assert len(bodies) == 16 and len(set(bodies)) == 1
        text = urllib.request.urlopen(f"{base}/metrics").read().decode()
    assert metric(text, "sdmatlas_tile_renders_total") == 3, text[:2000]
    assert metric(text, "sdmatlas_tile_cache_requests_total", f'backend="{backend}"') >= 48


# -- faults --------------------------------------------------------------------------------------


def test_redis_down_serves_uncached_then_recovers(
    catalog_settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    r = RedisServer(tmp_path).start()
    try:
        c = app(catalog_settings, tile_cache=["redis"], redis_url=r.url)
        paths = data_tiles(c, 11, 3)
        want = {p: c.get(p).content for p in paths}
        assert c.get(paths[0]).headers["X-Cache"] == "hit-redis"
        r.stop()
        caplog.set_level(logging.WARNING, logger="sdmatlas.cache")
        for p in paths:  # rendered, uncached, never refused
            got = c.get(p)
            assert got.status_code == 200 and got.content == want[p]
            assert got.headers["X-Cache"] == "miss"
        assert any("redis is down" in m for m in caplog.messages)
        m = c.get("/metrics").text
        assert 'sdmatlas_tile_cache_up{backend="redis"} 0.0' in m
        assert metric(m, "sdmatlas_tile_cache_requests_total", 'result="error"') >= 1
        r.start()  # same port, empty
        time.sleep(0.4)  # the retry delay (tile_cache_retry_seconds=0.3)
        assert c.get(paths[0]).headers["X-Cache"] == "miss"  # stored again
        assert c.get(paths[0]).headers["X-Cache"] == "hit-redis"
        assert any("redis is back" in m for m in caplog.messages)
        assert 'sdmatlas_tile_cache_up{backend="redis"} 1.0' in c.get("/metrics").text
    finally:
        r.stop()


def _mount_tmpfs(path: Path, options: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                          capture_output=True)  # fmt: skip
    return done.returncode == 0


@pytest.mark.parametrize("fault", ["full", "read-only"])
def test_a_broken_disk_cache_does_not_stop_serving(
    catalog_settings: Settings, tmp_path: Path, fault: str
) -> None:
    """A 48 KB tmpfs fills up after a few tiles; a read-only tmpfs refuses every write.
    Where this test may not mount (not root), the cache path is under a regular file,
    which refuses every write too (ENOTDIR)."""
    where = tmp_path / "mnt"
    mounted = _mount_tmpfs(where, "size=48k" if fault == "full" else "ro,size=1m")
    if not mounted:
        (tmp_path / "file").write_bytes(b"")
        where = tmp_path / "file" / "cache"
    try:
        c = app(catalog_settings, tile_cache=["disk"], tile_cache_dir=where)
        plain = app(catalog_settings)
        paths = data_tiles(plain, 12, 12)
        for p in paths:
            got = c.get(p)
            assert got.status_code == 200 and got.content == plain.get(p).content, p
        m = c.get("/metrics").text
        assert 'sdmatlas_tile_cache_up{backend="disk"} 0.0' in m
    finally:
        if mounted:
            subprocess.run(["umount", str(where)], check=False)


# -- seeding -------------------------------------------------------------------------------------

_SEEDED = re.compile(
    r"seeded (\d+) tiles: (\d+) rendered, (\d+) empty or uniform written from the plan, "
    r"(\d+) already cached, (\d+) empty"
)


def _seed_env(settings: Settings, cache_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SDMATLAS_")}
    return env | {"SDMATLAS_DATA_DIR": str(settings.data_dir),
                  "SDMATLAS_DATABASE_URL": str(settings.database_url),
                  "SDMATLAS_TILE_CACHE": '["disk"]', "SDMATLAS_TILE_CACHE_DIR": str(cache_dir),
                  "COLUMNS": "200"}  # fmt: skip


def _tiles_on_disk(cache_dir: Path) -> int:
    return sum(1 for p in (cache_dir / KEY).rglob("*") if p.is_file() and p.name[0] != ".")


def test_seed_killed_and_restarted_renders_each_tile_once(
    catalog_settings: Settings, tmp_path: Path
) -> None:
    cache_dir = tmp_path / "tiles"
    # 24 layers up to 4 zooms past their native 8 (the most a seed takes): enough tiles
    # to kill the seed half-way
    layers = [LAYER, *(f"{KEY}:species:{i}" for i in range(4, 27))]
    cmd = [str(BIN / "sdmatlas"), "seed", *layers, "--zoom", "8-12", "--processes", "2"]
    env = _seed_env(catalog_settings, cache_dir)
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 120
    while _tiles_on_disk(cache_dir) < 300 if cache_dir.exists() else True:
        assert proc.poll() is None, "the seed finished before it could be killed"
        assert time.time() < deadline
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)
    done = _tiles_on_disk(cache_dir)
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    m = _SEEDED.search(" ".join(out.stderr.split()))
    assert m is not None, out.stderr[-2000:]
    planned, rendered, written, cached, _ = (int(v) for v in m.groups())
    # each tile made once: rendered, or written from the planner's verdict (empty, uniform)
    assert cached == done and rendered + written == planned - done and planned > done
    assert _tiles_on_disk(cache_dir) == planned
    assert "tiles/s" in out.stderr
    # every seeded tile is what the API renders
    c = app(catalog_settings, tile_cache=["disk"], tile_cache_dir=cache_dir)
    plain = app(catalog_settings)
    for p in data_tiles(plain, 12, 5):
        got = c.get(p)
        assert got.headers["X-Cache"] == "hit-disk" and got.content == plain.get(p).content


def test_seed_over_a_territory_and_bad_arguments(
    catalog_settings: Settings, tmp_path: Path
) -> None:
    env = _seed_env(catalog_settings, tmp_path / "tiles")
    sd = str(BIN / "sdmatlas")
    w, s, e, n = app(catalog_settings).get(f"/layers/{LAYER}").json()["bbox"]
    west_half = f"{w},{s},{(w + e) / 2},{n}"
    whole = subprocess.run([sd, "seed", LAYER, "--zoom", "12"], env=env, capture_output=True,
                           text=True, timeout=120)  # fmt: skip
    part = subprocess.run([sd, "seed", LAYER, "--zoom", "12", "--bbox", west_half],
                          env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    a = _SEEDED.search(" ".join(whole.stderr.split()))
    b = _SEEDED.search(" ".join(part.stderr.split()))
    assert a and b and 0 < int(b.group(1)) < int(a.group(1))
    assert int(b.group(2)) == int(b.group(3)) == 0  # all already there from the first run
    pa = subprocess.run([sd, "seed", LAYER, "--zoom", "12", "--territory", "demo-pa-1"],
                        env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert pa.returncode == 0 and _SEEDED.search(" ".join(pa.stderr.split())), pa.stderr[-500:]
    for args, words in [
        (["--zoom", "9-3"], "zoom"),
        (["--bbox", "1,2,3"], "--bbox"),
        (["--tms", "Nope"], "TileMatrixSet"),
        (["--territory", "XX"], "XX"),
        (["--format", "npy"], "png or webp"),
        (["--zoom", "5-20"], "beyond layer"),
    ]:
        bad = subprocess.run([sd, "seed", LAYER, *args], env=env, capture_output=True,
                             text=True, timeout=120)  # fmt: skip
        assert bad.returncode == 2 and words in bad.stderr, (args, bad.stderr[-500:])
        assert "Traceback" not in bad.stderr


# -- static archives (issue 20, in part) ---------------------------------------------------------


def test_pmtiles_archives_hold_what_the_api_serves(
    catalog_settings: Settings, tmp_path: Path
) -> None:
    """``seed --to pmtiles DIR``: one PMTiles v3 archive per layer; the pmtiles package
    reads every planned tile back, byte for byte the API's tile (empty ones left out);
    header bounds, zooms and metadata are the layer's; a second run keeps an archive of
    the current version; bad targets exit 2."""
    from pmtiles.reader import MmapSource, Reader
    from pmtiles.tile import TileType

    from sdmatlas.serve.archive import archive_path

    env = {k: v for k, v in _seed_env(catalog_settings, tmp_path / "tiles").items()
           if k != "SDMATLAS_TILE_CACHE"}  # no persistent cache needed  # fmt: skip
    sd = str(BIN / "sdmatlas")
    out = tmp_path / "archives"
    indicator = f"{KEY}:indicator:richness"
    classes = f"{KEY}:classes:set_worst_status"
    cmd = [sd, "seed", LAYER, indicator, classes, "--zoom", "8-11", "--to", "pmtiles", str(out)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    plain = app(catalog_settings)
    tms = morecantile.tms.get("WebMercatorQuad")
    for lid in (LAYER, indicator, classes):
        path = archive_path(out, lid)
        assert path.name == lid.replace(":", ".") + ".pmtiles"
        info = plain.get(f"/layers/{lid}").json()
        with open(path, "rb") as f:
            reader = Reader(MmapSource(f))
            header, meta = reader.header(), reader.metadata()
            assert header["tile_type"] == TileType.PNG and header["clustered"]
            assert (header["min_zoom"], header["max_zoom"]) == (8, 11)
            w, s_, e, n = info["bbox"]
            assert header["min_lon_e7"] == round(w * 1e7) and header["max_lat_e7"] == round(n * 1e7)
            assert meta["version"] == info["version"] and meta["layer"] == lid
            assert meta["attribution"] and meta["name"] == info["title"]
            stored = 0
            for t in tms.tiles(w, s_, e, n, [8, 9, 10, 11]):
                api = plain.get(f"/tiles/{lid}/WebMercatorQuad/{t.z}/{t.x}/{t.y}.png")
                got = reader.get(t.z, t.x, t.y)
                if api.headers.get("X-Tile-Empty") == "true":
                    assert got is None  # left out: readers draw nothing there
                else:
                    assert got == api.content, (lid, t)
                    stored += 1
            assert stored > 10 and header["addressed_tiles_count"] == stored
            assert header["tile_contents_count"] <= stored  # identical tiles stored once
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "already of this layer version" in again.stderr
    for args, words in [
        (["--to", "pmtiles", str(tmp_path / "file.txt" / "x")], "archive folder"),
        (["--to", "tarball", str(out)], "--to"),
        ([f"{KEY}:species:99999"], "99999"),
    ]:
        (tmp_path / "file.txt").write_text("not a folder")
        bad = subprocess.run([sd, "seed", LAYER, "--zoom", "8", *(["--to", "pmtiles", str(out)]
                              if args[0] != "--to" else []), *args], env=env,
                             capture_output=True, text=True, timeout=120)  # fmt: skip
        assert bad.returncode == 2 and words in " ".join(bad.stderr.split()), (args, bad.stderr)
        assert "Traceback" not in bad.stderr
    assert list(out.glob(".*.tmp")) == []  # nothing half-written left behind


def test_mbtiles_archives_hold_what_the_api_serves_and_gdal_reads_them(
    catalog_settings: Settings, tmp_path: Path
) -> None:
    """``seed --to mbtiles DIR``: an MBTiles 1.3 file per layer whose ``tiles`` view holds
    the API's bytes (TMS rows), identical tiles stored once, the metadata of the layer;
    GDAL's MBTiles driver (through rasterio) opens it with the right bounds and zoom."""
    import sqlite3

    import rasterio
    import rasterio.warp

    from sdmatlas.serve.archive import archive_path

    env = {k: v for k, v in _seed_env(catalog_settings, tmp_path / "tiles").items()
           if k != "SDMATLAS_TILE_CACHE"}  # fmt: skip
    out = tmp_path / "mb"
    cmd = [str(BIN / "sdmatlas"), "seed", LAYER, "--zoom", "8-10", "--to", "mbtiles", str(out)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    plain = app(catalog_settings)
    info = plain.get(f"/layers/{LAYER}").json()
    path = archive_path(out, LAYER, "mbtiles")
    with sqlite3.connect(path) as db:
        meta = dict(db.execute("SELECT name, value FROM metadata"))
        rows = db.execute("SELECT zoom_level, tile_column, tile_row, tile_data FROM tiles")
        tiles = {(z, x, (1 << z) - 1 - r): bytes(d) for z, x, r, d in rows}
        n_images = db.execute("SELECT count(*) FROM images").fetchone()[0]
    assert meta["format"] == "png" and (meta["minzoom"], meta["maxzoom"]) == ("8", "10")
    assert meta["version"] == info["version"] and meta["name"] == info["title"]
    w, s_, e, n = info["bbox"]
    assert [float(v) for v in meta["bounds"].split(",")] == pytest.approx([w, s_, e, n])
    tms = morecantile.tms.get("WebMercatorQuad")
    stored = 0
    for t in tms.tiles(w, s_, e, n, [8, 9, 10]):
        api = plain.get(f"/tiles/{LAYER}/WebMercatorQuad/{t.z}/{t.x}/{t.y}.png")
        if api.headers.get("X-Tile-Empty") == "true":
            assert (t.z, t.x, t.y) not in tiles
        else:
            assert tiles[(t.z, t.x, t.y)] == api.content, t
            stored += 1
    assert stored == len(tiles) > 3 and n_images <= stored
    with rasterio.open(path) as ds:  # GDAL's MBTiles driver: the highest zoom, in 3857
        assert ds.driver == "MBTiles" and ds.crs.to_epsg() == 3857
        assert ds.res[0] == pytest.approx(tms.matrix(10).cellSize, rel=1e-6)
        left, bottom, right, top = rasterio.warp.transform_bounds(ds.crs, 4326, *ds.bounds)
        # GDAL crops to the metadata bounds, snapped to its pixels (10 m at zoom 10)
        assert [left, bottom, right, top] == pytest.approx([w, s_, e, n], abs=2e-4)
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "already of this layer version" in again.stderr
    assert list(out.glob(".*.tmp")) == []


def test_a_killed_archive_seed_and_a_new_layer_version(
    catalog_settings: Settings, tmp_path: Path
) -> None:
    """SIGKILL while an archive is being made: no archive appears, only a temporary file
    the next run removes; that run writes the whole archive. A new layer version (here
    set in the catalog) makes the next run rewrite it, with the new version inside."""
    from sqlalchemy import update

    from sdmatlas.catalog.schema import Layer
    from sdmatlas.serve.archive import archive_path, archive_version

    env = {k: v for k, v in _seed_env(catalog_settings, tmp_path / "tiles").items()
           if k != "SDMATLAS_TILE_CACHE"}  # fmt: skip
    out = tmp_path / "archives"
    # many layers (archives are written one after the other) up to 4 zooms past native
    layers = [*(f"{KEY}:species:{i}" for i in range(4, 10)), LAYER]
    cmd = [str(BIN / "sdmatlas"), "seed", *layers, "--zoom", "8-12", "--to", "pmtiles", str(out)]
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 120
    while len(list(out.glob("*.pmtiles"))) < 3:  # a few archives done, one being made
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.02)
    assert proc.poll() is None, "the seed finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)
    path = archive_path(out, LAYER)
    assert not path.exists() and len(list(out.glob(".*.tmp"))) <= 1
    for done_path in out.glob("*.pmtiles"):  # every archive there is whole
        assert archive_version(done_path) is not None, done_path
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert path.exists() and list(out.glob(".*.tmp")) == []
    assert len(list(out.glob("*.pmtiles"))) >= 3
    version = app(catalog_settings).get(f"/layers/{LAYER}").json()["version"]
    assert archive_version(path) == version
    with Catalog.from_settings(catalog_settings).session() as s:
        s.execute(update(Layer).where(Layer.name == "species/3").values(version="f" * 16))
        s.commit()
    try:
        again = subprocess.run([*cmd[:2], LAYER, "--zoom", "8-10", "--to", "pmtiles", str(out)],
                               env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
        assert again.returncode == 0 and "already of this layer version" not in again.stderr
        assert archive_version(path) == "f" * 16
    finally:
        with Catalog.from_settings(catalog_settings).session() as s:
            s.execute(update(Layer).where(Layer.name == "species/3").values(version=version))
            s.commit()


# -- monitoring ----------------------------------------------------------------------------------


def test_metrics_and_access_logs_follow_requests(
    catalog_settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    c = app(catalog_settings, tile_cache=["memory"])
    caplog.set_level(logging.INFO, logger="sdmatlas.access")
    path = data_tiles(c, 9, 1)[0]
    r = c.get(path, headers={"X-Request-ID": "req-42"})
    assert r.headers["X-Request-ID"] == "req-42"
    assert c.get("/layers/nope:species:1").status_code == 404
    assert len(c.get("/health").headers["X-Request-ID"]) == 32  # a new id when none is given
    text = c.get("/metrics").text
    assert 'route="/tiles/{layer}/{tms}/{z}/{x}/{y}.{format}"' in text
    assert 'sdmatlas_http_requests_total{method="GET",route="/layers/{layer}",status="404"}' in text
    for name in ["sdmatlas_http_request_duration_seconds_bucket", "sdmatlas_tile_stage_seconds",
                 "sdmatlas_tile_bytes_bucket", "sdmatlas_tile_cache_requests_total",
                 "sdmatlas_db_pool_connections"]:  # fmt: skip
        assert name in text, name
    record = next(r for r in caplog.records if getattr(r, "request_id", None) == "req-42")
    assert record.status == 200 and record.route.startswith("/tiles/")  # type: ignore[attr-defined]
    from sdmatlas.serve.observe.logs import JSONFormatter

    line = json.loads(JSONFormatter().format(record))
    assert line["request_id"] == "req-42" and line["duration_ms"] >= 0 and line["cache"]
    assert c.get("/ready").json() == {"status": "ready"}


def test_ready_fails_while_release_storage_is_gone(
    catalog_settings: Settings, tmp_path: Path
) -> None:
    c = app(catalog_settings)
    root = Path(catalog_settings.data_dir) / "releases"
    moved = tmp_path / "moved"
    root.rename(moved)
    try:
        r = c.get("/ready")
        assert r.status_code == 503 and KEY in r.json()["detail"]
        assert str(root) not in r.text  # the location is logged, not shown
        assert c.get("/health").status_code == 200
    finally:
        moved.rename(root)
    assert c.get("/ready").status_code == 200


def test_grafana_dashboard_uses_served_metrics(catalog_settings: Settings) -> None:
    """Every metric the dashboard queries is one /metrics serves."""
    root = Path(__file__).resolve().parents[1]
    board = json.loads((root / "deploy" / "grafana" / "sdmatlas.json").read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 6
    c = app(catalog_settings, tile_cache=["memory"])
    c.get(data_tiles(c, 9, 1)[0])
    served_names = {
        line.split("{")[0].split(" ")[0]
        for line in c.get("/metrics").text.splitlines()
        if line and not line.startswith("#")
    }
    for expr in exprs:
        for name in re.findall(r"\b(sdmatlas_[a-z_]+)", expr):
            assert name in served_names, (name, expr)
