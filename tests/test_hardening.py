"""Serving that cannot be knocked over: each finding of the hostile-input campaign as a
test (issue 21), through the real app in-process and, where the event loop is the
point, through a real `sdmatlas serve`.

Budgets are set low in some apps here so that the checks run on the small coast
release; the defaults are the same code with other numbers.
"""

from __future__ import annotations

import io
import json
import shutil
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from PIL import Image
from pyproj import Transformer

from conftest import sdmatlas_server, served_catalog
from sdmatlas.grid import Grid
from sdmatlas.polygons import densify
from sdmatlas.publish.cover import pixel_mask
from sdmatlas.serve.app import create_app
from sdmatlas.serve.tiles.tiling import transformer
from sdmatlas.settings import Settings
from sdmatlas.testing.releases import release_group
from sdmatlas.zarr_access import sdmatlas_attrs

KEY = "coast-h"
LAYER = f"{KEY}:species:3"
BIG = "9223372036854775808"  # 2**63: one more than SQLite's integers hold
OGC = "{http://www.opengis.net/ogc}ServiceException"
OWS = "{http://www.opengis.net/ows/1.1}Exception"


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory, cube: Path) -> Settings:
    return served_catalog(cube, tmp_path_factory.mktemp("hard"), [(KEY, "2020")], tile_cache=[])


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture(scope="module")
def grid(settings: Settings) -> Grid:
    rel = release_group(settings.data_dir / "releases" / KEY)
    return Grid.model_validate(sdmatlas_attrs(rel)["grid"])


GETMAP = {"SERVICE": "WMS", "REQUEST": "GetMap", "VERSION": "1.3.0", "LAYERS": LAYER,
          "STYLES": "", "CRS": "EPSG:3857", "BBOX": "1500000,5600000,1600000,5700000",
          "WIDTH": "64", "HEIGHT": "64", "FORMAT": "image/png"}  # fmt: skip


def getmap(c: TestClient, **changes: str) -> Any:
    """A WMS 1.3.0 GetMap of the coast layer, with some parameters changed."""
    return c.get("/wms", params={**GETMAP, **changes})


def _app(settings: Settings, **changes: Any) -> TestClient:
    return TestClient(create_app(settings.model_copy(update=changes)))


def _ring(grid: Grid, dx0: float, dy0: float, size: float) -> list[list[float]]:
    """A square of ``size`` metres at (dx0, dy0) from the grid's centre, in lon/lat."""
    to_ll = transformer(grid.crs, "EPSG:4326")
    cx, cy = grid.x0 + grid.width * grid.res / 2, grid.y0 - grid.height * grid.res / 2
    pts = [(0, 0), (size, 0), (size, size), (0, size), (0, 0)]
    return [list(to_ll.transform(cx + dx0 + dx, cy + dy0 + dy)) for dx, dy in pts]


# -- bodies, vertices and headers: refused before parsing -----------------------------------------


def test_oversized_bodies_are_refused_before_they_are_read(client: TestClient) -> None:
    limit = client.app.state.settings.max_body_bytes  # type: ignore[attr-defined]
    big = b'{"type": "Polygon", "coordinates": [' + b" " * limit + b"]}"
    r = client.post("/report", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "SDMATLAS_MAX_BODY_BYTES" in r.json()["detail"]
    assert r.json()["error"] == "BudgetExceededError"

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        for _ in range(limit // 65536 + 2):
            yield b" " * 65536

    r = client.post("/report", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "SDMATLAS_MAX_BODY_BYTES" in r.json()["detail"]


def test_vertex_budget_is_checked_before_the_json_is_parsed(
    settings: Settings, grid: Grid, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A polygon of 1,000,000 vertices (about 40 MB, within a raised body budget) is
    refused from a count of its brackets: json.loads never runs (a spy says so)."""
    import sdmatlas.serve.api.queries as routes

    parsed: list[int] = []
    real = routes._json_body
    monkeypatch.setattr(routes, "_json_body", lambda b, m: parsed.append(1) or real(b, m))
    lon, lat = _ring(grid, 0, 0, 1000)[0]
    angles = np.linspace(0, 2 * np.pi, 1_000_000, endpoint=False)
    ring = np.c_[lon + 0.01 * np.cos(angles), lat + 0.01 * np.sin(angles)].round(6).tolist()
    body = json.dumps({"type": "Polygon", "coordinates": [[*ring, ring[0]]]}).encode()
    with _app(settings, max_body_bytes=len(body) + 1) as c:
        r = c.post("/report", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 413, r.text
    assert "polygon vertices" in r.json()["detail"] and "SDMATLAS_MAX_POLYGON_VERTICES" in r.text
    assert parsed == []
    # within budget, the same route parses and answers
    small = {"type": "Polygon", "coordinates": [_ring(grid, 0, 0, 5000)]}
    with _app(settings) as c:
        assert c.post("/report", json=small).status_code == 200
    assert parsed == [1]


def test_oversized_headers_get_a_431(client: TestClient) -> None:
    r = client.get("/health", headers={"x-junk": "a" * 40_000})
    assert r.status_code == 431 and "SDMATLAS_MAX_HEADER_BYTES" in r.json()["detail"]


def test_multipolygon_budgets(client: TestClient, settings: Settings, grid: Grid) -> None:
    """20,000 small squares: refused by the part budget, or (with it raised) by the read
    budget of the report, before any pixel is read; the message says what to do."""
    squares = [
        [_ring(grid, (i % 40) * 300 - 12_000, (i // 40) * 300 - 9000, 120)] for i in range(20_000)
    ]
    body = {"type": "MultiPolygon", "coordinates": squares}
    r = client.post("/report", json=body)
    assert r.status_code == 413 and "SDMATLAS_MAX_POLYGON_PARTS" in r.json()["detail"]
    few = {"type": "MultiPolygon", "coordinates": squares[:400]}
    with _app(settings, max_report_values=10_000) as c:
        r = c.post("/report", json=few)
    assert r.status_code == 413, r.text
    assert "SDMATLAS_MAX_REPORT_VALUES" in r.json()["detail"] and "territory" in r.text


# -- integers and numbers out of range ------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        f"/tiles/{KEY}:species:{BIG}/WebMercatorQuad/8/1/1.png",
        f"/layers/{KEY}:species:{BIG}",
        f"/layers/{KEY}:species:{BIG}/tilejson.json",
        f"/tms/1.0.0/{KEY}:species:{BIG}/WebMercatorQuad/8/1/1.png",
        f"/wmts?SERVICE=WMTS&REQUEST=GetTile&LAYER={KEY}:species:{BIG}&STYLE=default"
        "&FORMAT=image/png&TILEMATRIXSET=WebMercatorQuad&TILEMATRIX=8&TILEROW=1&TILECOL=1",
        f"/wmts?SERVICE=WMTS&REQUEST=GetFeatureInfo&LAYER={KEY}:species:{BIG}&STYLE=default"
        "&FORMAT=image/png&TILEMATRIXSET=WebMercatorQuad&TILEMATRIX=8&TILEROW=1&TILECOL=1"
        "&I=1&J=1&INFOFORMAT=application/json",
        f"/wms?SERVICE=WMS&REQUEST=GetMap&VERSION=1.3.0&LAYERS={KEY}:species:{BIG}&STYLES="
        "&CRS=EPSG:3857&BBOX=0,0,1,1&WIDTH=8&HEIGHT=8&FORMAT=image/png",
        f"/species?offset={BIG}",
        f"/layers?offset={BIG}",
        f"/territories?offset={BIG}",
        f"/point?lon=13.8&lat=45.6&offset={BIG}",
        f"/species/{BIG}",
    ],
)
def test_huge_integers_are_4xx(client: TestClient, url: str) -> None:
    r = client.get(url)
    assert 400 <= r.status_code < 500, (url, r.status_code, r.text[:300])


@pytest.mark.parametrize(
    "crs,bbox",
    [
        ("EPSG:4326", "-1e308,-1e308,1e308,1e308"),
        ("EPSG:3857", "0,0,5e-324,5e-324"),
        ("EPSG:3857", "-1e308,-1e308,1e308,1e308"),
        ("CRS:84", "-180,-90,180,90"),
    ],
)
def test_single_tile_getmaps_with_extreme_bboxes(client: TestClient, crs: str, bbox: str) -> None:
    r = getmap(
        client, VERSION="1.1.1", SRS=crs, BBOX=bbox, WIDTH="256", HEIGHT="256", TRANSPARENT="TRUE"
    )
    assert r.status_code < 500, r.text[:300]


# -- GetMap budgets -------------------------------------------------------------------------------


def test_getmap_layer_and_pixel_budgets(client: TestClient) -> None:
    base = {
        "SERVICE": "WMS",
        "REQUEST": "GetMap",
        "VERSION": "1.3.0",
        "STYLES": "",
        "CRS": "EPSG:3857",
        "BBOX": "1500000,5600000,1600000,5700000",
        "FORMAT": "image/png",
    }
    ten = ",".join([LAYER] * 10)
    r = client.get("/wms", params={**base, "LAYERS": ten, "WIDTH": "64", "HEIGHT": "64"})
    assert r.status_code == 413 and "SDMATLAS_MAX_MAP_LAYERS" in r.text
    assert ET.fromstring(r.content).find(OGC) is not None  # a ServiceExceptionReport
    two = ",".join([LAYER] * 2)
    r = client.get("/wms", params={**base, "LAYERS": two, "WIDTH": "4096", "HEIGHT": "4096"})
    assert r.status_code == 413 and "SDMATLAS_MAX_MAP_PIXELS" in r.text
    caps = ET.fromstring(client.get("/wms?SERVICE=WMS&REQUEST=GetCapabilities").content)
    svc = caps.find("{http://www.opengis.net/wms}Service")
    assert svc is not None
    assert svc.findtext("{http://www.opengis.net/wms}LayerLimit") == "8"
    assert svc.findtext("{http://www.opengis.net/wms}MaxWidth") == "4096"


def test_requests_past_the_deadline_get_503_with_retry_after(
    settings: Settings, grid: Grid
) -> None:
    """A deadline shorter than any work: GetMap stops with a ServiceException, a report
    with the JSON error, both 503 with Retry-After; the process goes on serving."""
    with _app(settings, request_deadline_seconds=1e-9) as c:
        r = c.get(
            "/wms",
            params={
                "SERVICE": "WMS",
                "REQUEST": "GetMap",
                "VERSION": "1.3.0",
                "LAYERS": f"{LAYER},{KEY}:indicator:richness",
                "STYLES": "",
                "CRS": "EPSG:3857",
                "BBOX": "1500000,5600000,1600000,5700000",
                "WIDTH": "300",
                "HEIGHT": "300",
                "FORMAT": "image/png",
            },
        )
        assert r.status_code == 503 and r.headers["retry-after"]
        exc = ET.fromstring(r.content).find(OGC)
        assert exc is not None and "SDMATLAS_REQUEST_DEADLINE_SECONDS" in (exc.text or "")
        body = {"type": "Polygon", "coordinates": [_ring(grid, -10_000, -10_000, 20_000)]}
        r = c.post("/report", json=body)
        assert r.status_code == 503 and r.headers["retry-after"]
        assert r.json()["error"] == "DeadlineExceededError"
        assert c.get("/health").status_code == 200


# -- the event loop stays free --------------------------------------------------------------------


@pytest.mark.slow
def test_health_answers_while_big_maps_and_reports_are_in_flight(
    settings: Settings, grid: Grid
) -> None:
    """Four 4096 x 4096 GetMaps and two maximal reports on one worker process: /health
    keeps answering while they run (before this, GetMap ran on the event loop and held
    /health until it was done)."""
    env = {
        "SDMATLAS_DATABASE_URL": settings.catalog_url,
        "SDMATLAS_DATA_DIR": str(settings.data_dir),
        "SDMATLAS_TILE_CACHE": "[]",
    }
    getmap = (
        "/wms?SERVICE=WMS&REQUEST=GetMap&VERSION=1.3.0&STYLES=&CRS=EPSG:3857"
        f"&LAYERS={LAYER}&BBOX=1400000,5500000,1700000,5800000&WIDTH=4096&HEIGHT=4096"
        "&FORMAT=image/png"
    )
    square = {"type": "Polygon", "coordinates": [_ring(grid, -20_000, -20_000, 40_000)]}
    with sdmatlas_server(env, workers=1) as base:
        done: list[int] = []

        def heavy(req: urllib.request.Request | str) -> None:
            with urllib.request.urlopen(req, timeout=120) as r:
                done.append(r.status)

        report = urllib.request.Request(
            base + "/report",
            data=json.dumps(square).encode(),
            headers={"content-type": "application/json"},
        )
        jobs = [base + getmap] * 4 + [report] * 2
        threads = [threading.Thread(target=heavy, args=(j,)) for j in jobs]
        for t in threads:
            t.start()
        answered_during = 0
        while any(t.is_alive() for t in threads):
            with urllib.request.urlopen(base + "/health", timeout=10) as r:
                assert r.status == 200
            answered_during += any(t.is_alive() for t in threads)
            time.sleep(0.05)
        for t in threads:
            t.join()
    assert done == [200] * len(jobs)
    assert answered_during >= 3


# -- one error table ------------------------------------------------------------------------------


def test_a_database_outage_reaches_ogc_clients_as_503(settings: Settings, tmp_path: Path) -> None:
    """The catalog unreachable: WMS and WMTS answer 503 exception reports with
    Retry-After (not 400 LayerNotDefined), the REST API a 503 JSON."""
    gone = settings.model_copy(
        update={
            "database_url": "postgresql+psycopg://nobody@127.0.0.1:9/none",
            "database_timeout": 0.5,
        }
    )
    with TestClient(create_app(gone)) as c:
        r = getmap(c, BBOX="0,0,1,1", WIDTH="8", HEIGHT="8")
        assert r.status_code == 503 and r.headers["retry-after"]
        exc = ET.fromstring(r.content).find(OGC)
        assert exc is not None and exc.attrib.get("code") != "LayerNotDefined"
        r = c.get("/wmts", params={"SERVICE": "WMTS", "REQUEST": "GetCapabilities"})
        assert r.status_code == 503 and r.headers["retry-after"]
        assert ET.fromstring(r.content).find(OWS).attrib["exceptionCode"] == "NoApplicableCode"  # type: ignore[union-attr]
        r = c.get(f"/layers/{LAYER}")
        assert r.status_code == 503 and r.json()["error"] == "DatabaseUnavailableError"


def test_a_corrupt_chunk_reaches_wms_clients_as_a_service_exception(
    settings: Settings, tmp_path: Path
) -> None:
    """A broken chunk under a GetMap is a 5xx ServiceExceptionReport, not JSON, and says
    nothing of the server's paths."""
    root = tmp_path / "copy"
    shutil.copytree(settings.data_dir, root, ignore=shutil.ignore_patterns("tile-cache"))
    rel = root / "releases" / KEY
    for chunk in (rel / "levels").rglob("*"):
        if chunk.is_file() and "c" in chunk.parts and "probability" in chunk.parts:
            chunk.write_bytes(b"not zstd at all")
    s = settings.model_copy(
        update={"data_dir": root, "database_url": f"sqlite:///{root / 'catalog.sqlite'}"}
    )
    from sdmatlas.catalog.db import Catalog

    cat = Catalog.from_settings(s)
    with cat.engine.begin() as conn:
        import sqlalchemy as sa

        conn.execute(sa.text("UPDATE release SET storage_uri = :u"), {"u": str(rel)})
    cat.dispose()
    with TestClient(create_app(s)) as c:
        r = getmap(c, BBOX="1400000,5500000,1700000,5800000", WIDTH="300", HEIGHT="300")
    assert r.status_code >= 500 and r.headers["content-type"].startswith("text/xml")
    exc = ET.fromstring(r.content).find(OGC)
    assert exc is not None and str(root) not in r.text


def test_framework_errors_have_the_documented_shape(client: TestClient) -> None:
    r = client.get("/no/such/url")
    assert r.status_code == 404 and r.json()["error"] == "NotFoundError" and r.json()["detail"]
    r = client.delete("/species")
    assert r.status_code == 405 and r.json()["error"] == "MethodNotAllowedError"
    assert "GET" in r.json()["detail"]


# -- trusted URLs ---------------------------------------------------------------------------------


def test_a_poisoned_host_cannot_change_the_capabilities(settings: Settings) -> None:
    """Without SDMATLAS_PUBLIC_URL, an unknown Host is a 400 and nothing is built from
    it; with it, every absolute URL uses it whatever Host says."""
    plain = settings.model_copy(update={"allowed_hosts": ["localhost"]})
    with TestClient(create_app(plain), base_url="http://localhost") as c:
        for url in [
            "/wms?SERVICE=WMS&REQUEST=GetCapabilities",
            "/wmts?SERVICE=WMTS&REQUEST=GetCapabilities",
            "/tms/1.0.0",
            f"/layers/{LAYER}/tilejson.json",
        ]:
            good = c.get(url)
            assert good.status_code == 200 and "http://localhost" in good.text, url
            evil = c.get(url, headers={"host": "evil.example"})
            assert evil.status_code == 400 and "SDMATLAS_PUBLIC_URL" in evil.json()["detail"]
            assert "evil.example" not in c.get(url).text
    public = settings.model_copy(
        update={"public_url": "https://maps.example.org/api/", "allowed_hosts": ["localhost"]}
    )
    with TestClient(create_app(public), base_url="http://localhost") as c:
        for url in [
            "/wms?SERVICE=WMS&REQUEST=GetCapabilities",
            "/wmts?SERVICE=WMTS&REQUEST=GetCapabilities",
            f"/layers/{LAYER}/tilejson.json",
            f"/layers/{LAYER}/style.json",
        ]:
            r = c.get(url, headers={"host": "evil.example"})
            assert r.status_code == 200 and "evil.example" not in r.text, url
            assert "https://maps.example.org/api/" in r.text, url


def test_allowed_host_patterns() -> None:
    from sdmatlas.serve.urls import host_allowed

    allowed = ["localhost", "*.example.org", "[::1]"]
    for host, ok in [
        ("localhost", True),
        ("localhost:8000", True),
        ("a.example.org", True),
        ("a.b.example.org:443", True),
        ("example.org", False),
        ("evil.org", False),
        ("[::1]:8000", True),
        ("", False),
        ("example.org.evil.com", False),
    ]:
        assert host_allowed(host, allowed) is ok, host
    assert host_allowed("anything", ["*"])
    assert Settings(allowed_hosts=["localhost", "127.0.0.1", "[::1]"]).public_url is None


def test_no_server_paths_in_responses(client: TestClient, settings: Settings) -> None:
    for url in ["/releases", f"/releases/{KEY}", "/releases/latest", f"/layers/{LAYER}"]:
        r = client.get(url)
        assert r.status_code == 200, url
        assert str(settings.data_dir) not in r.text and "storage_uri" not in r.text, url


# -- RFC 7946: edges are lines in longitude/latitude ----------------------------------------------


def test_polygon_edges_follow_longitude_latitude_lines(client: TestClient, grid: Grid) -> None:
    """A box whose southern edge (a parallel, 3 degrees long) crosses the grid: the
    report counts exactly the pixels whose centre is north of that parallel, as in
    lon/lat; the straight chord in EPSG:3035 would cut through the grid elsewhere."""
    to_ll = Transformer.from_crs(grid.crs, 4326, always_xy=True)
    cx, cy = grid.x0 + grid.width * grid.res / 2, grid.y0 - grid.height * grid.res / 2
    lon0, lat0 = to_ll.transform(cx, cy)
    w, e, s, n = lon0 - 1.5, lon0 + 1.5, lat0, lat0 + 1.8
    box = {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]}
    r = client.post("/report", json=box, params={"release": KEY})
    assert r.status_code == 200, r.text
    rel = release_group(client.app.state.settings.data_dir / "releases" / KEY)  # type: ignore[attr-defined]
    from sdmatlas.zarr_access import array

    terr = np.asarray(array(rel, "territory")[:]) == 1
    rows, cols = np.mgrid[0 : grid.height, 0 : grid.width]
    xs, ys = grid.x0 + (cols + 0.5) * grid.res, grid.y0 - (rows + 0.5) * grid.res
    lons, lats = to_ll.transform(xs, ys)
    inside = (lats >= s) & (lats <= n) & (lons >= w) & (lons <= e) & terr
    assert 0 < inside.sum() < terr.sum()  # the parallel crosses the land of the grid
    assert r.json()["pixels"] == int(inside.sum())
    # and the undensified chord would not have matched: the test can fail
    from shapely.geometry import shape

    from sdmatlas.serve.reports import project

    to_grid = transformer("EPSG:4326", grid.crs)
    chord = project(shape(box), to_grid)
    mask, r0, c0 = pixel_mask(grid, chord)
    full = np.zeros_like(terr)
    full[r0 : r0 + mask.shape[0], c0 : c0 + mask.shape[1]] = mask
    assert int((full & terr).sum()) != int(inside.sum())
    dense = project(densify(shape(box)), to_grid)
    mask, r0, c0 = pixel_mask(grid, dense)
    full[:] = False
    full[r0 : r0 + mask.shape[0], c0 : c0 + mask.shape[1]] = mask
    assert int((full & terr).sum()) == int(inside.sum())


def test_png_of_a_report_free_getmap_still_renders(client: TestClient) -> None:
    """After all the guards, an ordinary GetMap is unchanged: an image of the size asked."""
    r = getmap(client, WIDTH="320", HEIGHT="200")
    assert r.status_code == 200
    assert Image.open(io.BytesIO(r.content)).size == (320, 200)


def test_bracket_levels_equal_a_parse_across_chunk_boundaries() -> None:
    """The prescan's counts equal those of the parsed document, whatever the chunking."""
    from sdmatlas.polygons import bracket_levels

    rng = np.random.default_rng(3)
    for _ in range(20):
        polys = [
            [np.round(rng.random((rng.integers(4, 9), 2)), 3).tolist()
             for _ in range(rng.integers(1, 4))]
            for _ in range(rng.integers(1, 6))
        ]  # fmt: skip
        doc = {"type": "Feature", "geometry": {"type": "MultiPolygon", "coordinates": polys}}
        body = json.dumps(doc).encode()
        want = [0, 1, len(polys), sum(map(len, polys)), sum(len(r) for p in polys for r in p)]
        for chunk in (1, 7, 64, 1 << 20):
            assert bracket_levels(body, chunk).tolist() == want, chunk


# -- cache hygiene ---------------------------------------------------------------------------------


def test_disk_cache_evicts_least_recently_used_past_its_cap(tmp_path: Path) -> None:
    import os

    from sdmatlas.serve.cache import DiskCache, Entry
    from sdmatlas.serve.observe.metrics import EVICTIONS

    disk = DiskCache(tmp_path, max_bytes=100_000, transient_ttl_s=3600)
    before = EVICTIONS.labels("disk", "size")._value.get()
    keys = [f"{i:032x}" for i in range(60)]
    for age, key in enumerate(keys):  # keys[0] the most recently used
        disk._sweeping.acquire()  # no background sweep while filling: swept below at once
        try:
            disk.put("rel", key, Entry(b"x" * 4000, False, 0).encode())
        finally:
            disk._sweeping.release()
        os.utime(disk.path("rel", key), (time.time() - age * 10,) * 2)
    assert sum(p.stat().st_size for p in (tmp_path / "rel").rglob("*") if p.is_file()) > 200_000
    expired, evicted = disk.sweep()
    left = sorted(p.name for p in (tmp_path / "rel").rglob("*") if p.is_file())
    size = sum(p.stat().st_size for p in (tmp_path / "rel").rglob("*") if p.is_file())
    assert expired == 0 and evicted == 60 - len(left) and size <= 90_000
    assert left == sorted(keys[: len(left)])  # the most recently used stay
    assert EVICTIONS.labels("disk", "size")._value.get() - before == evicted


def test_unversioned_tiles_expire_and_versioned_ones_stay(tmp_path: Path) -> None:
    import os

    from sdmatlas.serve.cache import DiskCache, Entry

    disk = DiskCache(tmp_path, transient_ttl_s=60)
    old = time.time() - 7200  # past the TTL, and older than the hourly LRU touch
    for key, transient in (("a" * 32, True), ("b" * 32, False)):
        disk.put("rel", key, Entry(b"tile", False, 1, transient).encode())
        os.utime(disk.path("rel", key), (old, old))
    assert disk.get("rel", "a" * 32) is None  # past its TTL: a miss
    got = disk.get("rel", "b" * 32)
    assert got is not None and Entry.decode(got) == Entry(b"tile", False, 1, False)
    assert disk.path("rel", "b" * 32).stat().st_mtime > old + 60  # the hit refreshed it
    assert disk.sweep() == (1, 0) and not disk.path("rel", "a" * 32).exists()


def test_anonymous_style_variants_cannot_fill_the_disk(settings: Settings, tmp_path: Path) -> None:
    """Hundreds of distinct rescale values through the API: trivial variants share an
    entry, and the disk cache stays under its cap (swept in the background)."""
    import morecantile

    cache_dir = tmp_path / "tiles"
    s = settings.model_copy(update={"tile_cache": ["disk"], "tile_cache_dir": cache_dir,
                                    "tile_cache_disk_mb": 1})  # fmt: skip
    grid_ = Grid.model_validate(
        sdmatlas_attrs(release_group(settings.data_dir / "releases" / KEY))["grid"]
    )
    w, s_, e, n = transformer(grid_.crs, "EPSG:4326").transform_bounds(*grid_.bounds)
    tile = next(iter(morecantile.tms.get("WebMercatorQuad").tiles(w, s_, e, n, [10])))
    url = f"/tiles/{LAYER}/WebMercatorQuad/10/{tile.x}/{tile.y}.png"
    with TestClient(create_app(s)) as c:
        a = c.get(url, params={"rescale": "0,0.8"})
        b = c.get(url, params={"rescale": "0,0.80001"})
        assert a.headers["etag"] == b.headers["etag"] and b.headers["x-cache"] == "hit-disk"
        for i in range(600):
            r = c.get(url, params={"rescale": f"0,{0.3 + i / 1000}", "colormap": "magma"})
            assert r.status_code == 200
        deadline = time.time() + 30
        while time.time() < deadline:
            size = sum(p.stat().st_size for p in cache_dir.rglob("*") if p.is_file())
            if size <= 2**20 * 1.05:
                break
            time.sleep(0.2)
    # the cap is soft by one sweep interval: a sweep runs after every cap / 20 written
    assert size <= 2**20 * 1.05


# -- fuzzing the OGC KVP parameters (the OpenAPI fuzz of test_serve does not reach them) -----

_junk = st.one_of(
    st.text(max_size=30),
    st.sampled_from(
        [
            "",
            "0",
            "-1",
            "1",
            "256",
            "4096",
            "4097",
            "1e308",
            "-1e308",
            "5e-324",
            "nan",
            "inf",
            "-inf",
            BIG,
            "-" + BIG,
            "0x10",
            "%00",
            "'; drop table x;--",
            "a" * 500,
            "1,2,3",
            "1,2,3,4",
            ",,,",
            "0,0,0,0",
        ]
    ),
)
_bbox = st.one_of(
    _junk,
    st.lists(st.floats(allow_nan=True, allow_infinity=True, width=64), min_size=4, max_size=4).map(
        lambda v: ",".join(repr(x) for x in v)
    ),
    st.sampled_from(
        [
            "1500000,5600000,1600000,5700000",
            "44.8,13.0,45.6,14.5",
            "13.0,44.8,14.5,45.6",
            "-20037508.34,-20037508.34,20037508.34,20037508.34",
        ]
    ),
)
_layer = st.one_of(
    _junk,
    st.sampled_from(
        [
            LAYER,
            f"{KEY}:indicator:richness",
            f"{KEY}:group:richness",
            "species:3",
            f"{KEY}:species:{BIG}",
            f"{LAYER},{LAYER}",
            f"{LAYER}," * 9,
        ]
    ),
)
WMS_PARAMS = {
    "SERVICE": st.sampled_from(["WMS", "wms", "WMTS", ""]),
    "REQUEST": st.sampled_from(
        ["GetMap", "GetFeatureInfo", "GetLegendGraphic", "GetCapabilities", "getmap", "Nope", ""]
    ),
    "VERSION": st.sampled_from(["1.3.0", "1.1.1", "1.1.0", "9.9.9", ""]),
    "LAYERS": _layer,
    "QUERY_LAYERS": _layer,
    "LAYER": _layer,
    "STYLES": st.one_of(_junk, st.sampled_from(["", "magma", "viridis_opaque", "default,"])),
    "STYLE": st.one_of(_junk, st.sampled_from(["magma", "default"])),
    "CRS": st.sampled_from(["EPSG:3857", "EPSG:4326", "CRS:84", "EPSG:3035", "EPSG:2154", ""]),
    "SRS": st.sampled_from(["EPSG:3857", "EPSG:4326", "epsg:4326", "x"]),
    "BBOX": _bbox,
    "WIDTH": _junk,
    "HEIGHT": _junk,
    "I": _junk,
    "J": _junk,
    "X": _junk,
    "Y": _junk,
    "FORMAT": st.sampled_from(["image/png", "image/jpeg", "image/webp", "image/gif", ""]),
    "INFO_FORMAT": st.sampled_from(["application/json", "text/html", "text/plain", "x/y"]),
    "TRANSPARENT": st.sampled_from(["TRUE", "FALSE", "maybe"]),
    "BGCOLOR": st.one_of(_junk, st.sampled_from(["0xFF0000", "0xZZZZZZ"])),
    "TIME": st.one_of(_junk, st.sampled_from(["2020", "current", "2020,2041"])),
}
WMTS_PARAMS = {
    "SERVICE": st.sampled_from(["WMTS", "WMS", ""]),
    "REQUEST": st.sampled_from(["GetTile", "GetFeatureInfo", "GetCapabilities", "Nope"]),
    "VERSION": st.sampled_from(["1.0.0", "2"]),
    "LAYER": _layer,
    "STYLE": st.one_of(_junk, st.sampled_from(["default", "magma", "viridis_opaque"])),
    "FORMAT": st.sampled_from(["image/png", "image/webp", "image/gif"]),
    "TILEMATRIXSET": st.sampled_from(
        ["WebMercatorQuad", "WGS1984Quad", "EuropeanETRS89_LAEAQuad", "Nope"]
    ),
    "TILEMATRIX": _junk,
    "TILEROW": _junk,
    "TILECOL": _junk,
    "I": _junk,
    "J": _junk,
    "INFOFORMAT": st.sampled_from(["application/json", "text/html", "x"]),
}


def _kvp(spec: dict[str, Any]) -> st.SearchStrategy[dict[str, str]]:
    return st.fixed_dictionaries({}, optional=spec)


@pytest.mark.slow
@hsettings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(params=_kvp(WMS_PARAMS))
def test_no_wms_request_gives_a_5xx(client: TestClient, params: dict[str, str]) -> None:
    r = client.get("/wms", params=params)
    assert r.status_code < 500, (params, r.text[:300])


@pytest.mark.slow
@hsettings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(params=_kvp(WMTS_PARAMS))
def test_no_wmts_request_gives_a_5xx(client: TestClient, params: dict[str, str]) -> None:
    r = client.get("/wmts", params=params)
    assert r.status_code < 500, (params, r.text[:300])


@pytest.mark.slow
@hsettings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(segments=st.lists(_junk, min_size=5, max_size=5))
def test_no_tms_or_restful_wmts_path_gives_a_5xx(client: TestClient, segments: list[str]) -> None:
    from urllib.parse import quote

    z, x, y, m, s = (quote(v, safe="") or "0" for v in segments)
    for url in [
        f"/tms/1.0.0/{LAYER}/WebMercatorQuad/{z}/{x}/{y}.png",
        f"/wmts/1.0.0/{LAYER}/default/WebMercatorQuad/{z}/{x}/{y}.{m}",
        f"/wmts/1.0.0/{LAYER}/{s}/WebMercatorQuad/{z}/{x}/{y}/{m}/{s}.json",
    ]:
        r = client.get(url)
        assert r.status_code < 500, (url, r.text[:300])


# -- process tuning in the app factory -------------------------------------------------------------


def test_every_app_gets_one_blas_thread_and_its_metrics_directory(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from threadpoolctl import threadpool_info, threadpool_limits

    missing = tmp_path / "metrics" / "not-yet"
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(missing))
    with threadpool_limits(4, user_api="blas"):
        create_app(settings)
        blas = [p for p in threadpool_info() if p["user_api"] == "blas"]
        assert blas and all(p["num_threads"] == 1 for p in blas)
    assert missing.is_dir()


# -- structure -------------------------------------------------------------------------------------


def test_the_tiles_core_imports_no_web_framework() -> None:
    """serve/tiles is a library: TileRequest -> Tile, usable by seeding and scripts
    without FastAPI or Starlette (the web layers wrap it, not the other way round)."""
    import subprocess
    import sys

    code = (
        "import sys; import sdmatlas.serve.tiles.core, sdmatlas.serve.seed; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('fastapi', 'starlette')]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_route_modules_are_not_each_others_libraries() -> None:
    """OGC modules and the seeder import no route module (they use the tiles core and
    the shared HTTP helpers); the seeder reads the Tile, not response headers."""
    import ast

    root = Path(__file__).resolve().parents[1] / "src" / "sdmatlas" / "serve"
    routes = {"sdmatlas.serve.api.catalog", "sdmatlas.serve.api.queries",
              "sdmatlas.serve.api.tiles", "sdmatlas.serve.api.viewer"}  # fmt: skip
    for path in [*root.glob("ogc/*.py"), root / "seed.py"]:
        tree = ast.parse(path.read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        allowed = {"LayerId"}  # a path-parameter annotation of the tile routes
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module in routes:
                assert {a.name for a in node.names} <= allowed, (path, node.module)
        helpers = ("__init__", "xml", "periods", "feature_info")
        assert "sdmatlas.serve.tiles.core" in imported or path.stem in helpers, path
    assert "headers" not in (root / "seed.py").read_text()


def test_heavy_requests_wait_their_turn_then_get_429() -> None:
    import asyncio

    from sdmatlas.errors import BusyError
    from sdmatlas.serve.errors import code_of, headers_of
    from sdmatlas.serve.offload import HeavySlots

    async def scenario() -> list[str]:
        slots, seen = HeavySlots(1, 0.05), []

        async def heavy(name: str, hold: float) -> None:
            try:
                async with slots.slot():
                    seen.append(f"{name} runs")
                    await asyncio.sleep(hold)
            except BusyError as exc:
                seen.append(f"{name} {code_of(exc).status} {headers_of(exc)['Retry-After']}")

        await asyncio.gather(heavy("a", 0.2), heavy("b", 0))
        await heavy("c", 0)  # the slot is free again
        return seen

    assert asyncio.run(scenario()) == ["a runs", "b 429 5", "c runs"]


@pytest.mark.parametrize("crs", ["EPSG:3857", "CRS:84", "EPSG:3035"])
def test_getmaps_drawn_in_strips_equal_one_piece(
    client: TestClient, grid: Grid, crs: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GetMap draws STRIP rows at a time (small GIL holds, a strip's memory, deadline
    checks between strips): the bytes equal the map drawn in one piece, for one layer
    (palette PNG) and two stacked layers."""
    import sdmatlas.serve.ogc.wms as wms

    w, s_, e, n = transformer(grid.crs, "EPSG:4326").transform_bounds(*grid.bounds)
    if crs == "CRS:84":
        bbox = f"{w},{s_},{e},{n}"
    else:
        x0, y0, x1, y1 = transformer("EPSG:4326", crs).transform_bounds(w, s_, e, n)
        bbox = f"{y0},{x0},{y1},{x1}" if crs == "EPSG:3035" else f"{x0},{y0},{x1},{y1}"
    for layers in (LAYER, f"{KEY}:indicator:richness,{LAYER}"):
        q = {"SERVICE": "WMS", "REQUEST": "GetMap", "VERSION": "1.3.0", "LAYERS": layers,
             "STYLES": "", "CRS": crs, "BBOX": bbox, "WIDTH": "333", "HEIGHT": "701",
             "FORMAT": "image/png", "TRANSPARENT": "TRUE"}  # fmt: skip
        monkeypatch.setattr(wms, "STRIP", 64)
        strips = client.get("/wms", params=q)
        monkeypatch.setattr(wms, "STRIP", 100_000)
        whole = client.get("/wms", params=q)
        assert strips.status_code == whole.status_code == 200, strips.text
        a = np.asarray(Image.open(io.BytesIO(strips.content)).convert("RGBA"))
        b = np.asarray(Image.open(io.BytesIO(whole.content)).convert("RGBA"))
        assert (a[..., 3] > 0).any() and np.array_equal(a, b), (crs, layers)
