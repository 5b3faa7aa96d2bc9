"""OSGeo TMS 1.0.0, read by real clients (OWSLib, GDAL's WMS driver) from a live server."""

from __future__ import annotations

import io
import itertools
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from xml.etree import ElementTree as ET

import morecantile
import numpy as np
import pytest
import rasterio
import uvicorn
from owslib.tms import TileMapService
from PIL import Image
from rasterio.windows import Window

from sdmatlas.catalog.db import Catalog
from sdmatlas.catalog.imports import import_territories
from sdmatlas.catalog.register import register_release
from sdmatlas.predict.cube import open_cube
from sdmatlas.publish.indicators import SpeciesInfo
from sdmatlas.publish.release import PublishOptions, open_release, publish
from sdmatlas.serve.app import create_app
from sdmatlas.settings import Settings

TERRITORIES = Path(__file__).resolve().parents[1] / "src/sdmatlas/demo/territories.geojson"
KEY = "coast-tms"
LAYER = f"{KEY}:species:3"


@pytest.fixture(scope="module")
def app_settings(tmp_path_factory: pytest.TempPathFactory, cube: Path) -> Iterator[Settings]:
    ids = np.asarray(open_cube(cube).species_ids, np.int64)
    n = len(ids)
    info = SpeciesInfo(ids=ids, protected=np.zeros(n, bool), invasive=np.zeros(n, bool),
                       endemic=np.zeros(n, bool))  # fmt: skip
    tmp = tmp_path_factory.mktemp("tms")
    rel = Path(publish(cube, tmp / "releases", KEY, info, PublishOptions(min_level_size=16)))
    s = Settings(data_dir=tmp, database_url=f"sqlite:///{tmp / 'catalog.sqlite'}")
    c = Catalog.from_settings(s)
    c.upgrade()
    import_territories(c, TERRITORIES)
    register_release(c, open_release(rel), str(rel), "2020")
    c.dispose()
    yield s


@pytest.fixture(scope="module")
def live(app_settings: Settings) -> Iterator[str]:
    """The app served by uvicorn on a free port, in a thread."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = uvicorn.Config(create_app(app_settings), host="127.0.0.1", port=port,
                            log_level="warning")  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    assert server.started
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def _data_tile(live: str, z: int) -> morecantile.Tile:
    """A WebMercatorQuad tile at zoom z with data in it (XYZ numbering)."""
    tms = morecantile.tms.get("WebMercatorQuad")
    for t in tms.tiles(13.0, 44.8, 14.5, 45.6, [z]):
        r = urllib.request.urlopen(f"{live}/tiles/{LAYER}/WebMercatorQuad/{z}/{t.x}/{t.y}.png")
        if r.headers.get("X-Tile-Empty") != "true":
            return t
    raise AssertionError("no tile with data")


def test_owslib_reads_the_service_and_fetches_tiles(live: str) -> None:
    service = TileMapService(f"{live}/tms/1.0.0")
    ours = [tm for tm in service.items() if tm[0].endswith(f"/{LAYER}/WebMercatorQuad")]
    assert ours, [tm[0] for tm in service.items()][:5]
    href, tilemap = ours[0]
    assert tilemap.srs in ("EPSG:900913", "EPSG:3857") and tilemap.profile == "global-mercator"
    tile = _data_tile(live, 9)
    tms_y = 2**9 - 1 - tile.y
    got = service.gettile(tile.x, tms_y, 9, id=href)
    xyz = urllib.request.urlopen(f"{live}/tiles/{LAYER}/WebMercatorQuad/9/{tile.x}/{tile.y}.png")
    assert got.read() == xyz.read()


def test_tile_map_document(live: str) -> None:
    profiles = [
        ("WebMercatorQuad", "global-mercator"),
        ("WGS1984Quad", "global-geodetic"),
        ("EuropeanETRS89_LAEAQuad", "local"),
    ]
    for name, profile in profiles:
        doc = ET.fromstring(urllib.request.urlopen(f"{live}/tms/1.0.0/{LAYER}/{name}").read())
        assert doc.tag == "TileMap" and doc.attrib["version"] == "1.0.0"
        sets = doc.find("TileSets")
        assert sets is not None and sets.attrib["profile"] == profile
        orders = [int(t.attrib["order"]) for t in sets.findall("TileSet")]
        assert orders == list(range(orders[0], orders[-1] + 1))
        upp = [float(t.attrib["units-per-pixel"]) for t in sets.findall("TileSet")]
        assert all(a > b for a, b in itertools.pairwise(upp))
        assert doc.find("Origin") is not None and doc.find("TileFormat") is not None


def test_gdal_reads_tms_tiles_georeferenced(live: str) -> None:
    """GDAL's WMS driver in TMS mode (y from the bottom) returns the XYZ tile's pixels."""
    z = 9
    tile = _data_tile(live, z)
    half = 20037508.342789244
    url = f"{live}/tms/1.0.0/{LAYER}/WebMercatorQuad/${{z}}/${{x}}/${{y}}.png"
    xml = f"""<GDAL_WMS>
  <Service name="TMS"><ServerUrl>{url}</ServerUrl></Service>
  <DataWindow><UpperLeftX>{-half}</UpperLeftX><UpperLeftY>{half}</UpperLeftY>
    <LowerRightX>{half}</LowerRightX><LowerRightY>{-half}</LowerRightY>
    <TileLevel>{z}</TileLevel><TileCountX>1</TileCountX><TileCountY>1</TileCountY>
    <YOrigin>bottom</YOrigin></DataWindow>
  <Projection>EPSG:3857</Projection><BlockSizeX>256</BlockSizeX><BlockSizeY>256</BlockSizeY>
  <BandsCount>4</BandsCount><ZeroBlockHttpCodes>204,404</ZeroBlockHttpCodes>
</GDAL_WMS>"""
    with rasterio.open(xml) as ds:
        assert ds.crs.to_epsg() == 3857
        got = ds.read(window=Window(tile.x * 256, tile.y * 256, 256, 256))
        b = morecantile.tms.get("WebMercatorQuad").xy_bounds(tile)
        left, top = ds.transform * (tile.x * 256, tile.y * 256)
        assert left == pytest.approx(b.left, abs=1e-3) and top == pytest.approx(b.top, abs=1e-3)
    png = urllib.request.urlopen(f"{live}/tiles/{LAYER}/WebMercatorQuad/{z}/{tile.x}/{tile.y}.png")
    want = np.asarray(Image.open(io.BytesIO(png.read())).convert("RGBA")).transpose(2, 0, 1)
    assert np.array_equal(got, want)


def test_bad_tms_requests(live: str) -> None:
    import urllib.error

    for url, status in [
        (f"/tms/1.0.0/{LAYER}/Nope", 404),
        (f"/tms/1.0.0/{LAYER}/WebMercatorQuad?format=npy", 400),
        (f"/tms/1.0.0/{LAYER}/WebMercatorQuad/3/0/8.png", 404),
        (f"/tms/1.0.0/{LAYER}/WebMercatorQuad/3/0/0.npy", 400),
        (f"/tms/1.0.0/{KEY}:species:999/WebMercatorQuad", 404),
    ]:
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(live + url)
        assert e.value.code == status, url
