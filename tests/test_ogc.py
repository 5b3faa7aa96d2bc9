"""OGC and OSGeo services (WMTS 1.0.0, TMS 1.0.0), read by real clients (OWSLib, GDAL's
WMTS and WMS drivers) from a live server."""

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
from typing import Any
from xml.etree import ElementTree as ET

import morecantile
import numpy as np
import pytest
import rasterio
import uvicorn
from owslib.tms import TileMapService
from owslib.wmts import WebMapTileService
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


# -- WMTS ---------------------------------------------------------------------------------------


def _xyz_png(live: str, z: int, x: int, y: int, cmap: str = "viridis") -> bytes:
    url = f"{live}/tiles/{LAYER}/WebMercatorQuad/{z}/{x}/{y}.png?colormap={cmap}"
    return urllib.request.urlopen(url).read()


def test_owslib_reads_wmts_capabilities_and_gets_tiles(live: str) -> None:
    wmts = WebMapTileService(f"{live}/wmts", version="1.0.0")
    assert LAYER in wmts.contents
    lay = wmts.contents[LAYER]
    assert set(lay.tilematrixsetlinks) == {
        "WebMercatorQuad",
        "WGS1984Quad",
        "EuropeanETRS89_LAEAQuad",
    }
    assert "viridis" in lay.styles and lay.styles["viridis"].get("isDefault")
    assert "image/png" in lay.formats
    assert any(r["format"] == "image/png" for r in lay.resourceURLs)
    assert wmts.tilematrixsets["WebMercatorQuad"].crs == "urn:ogc:def:crs:EPSG::3857"
    tile = _data_tile(live, 9)
    for cmap in ["viridis", "magma"]:
        got = wmts.gettile(layer=LAYER, tilematrixset="WebMercatorQuad", tilematrix="9",
                           row=tile.y, column=tile.x, format="image/png", style=cmap)  # fmt: skip
        assert got.read() == _xyz_png(live, 9, tile.x, tile.y, cmap)
    rest = lay.resourceURLs[0]["template"]
    url = (rest.replace("{Style}", "viridis").replace("{TileMatrixSet}", "WebMercatorQuad")
           .replace("{TileMatrix}", "9").replace("{TileRow}", str(tile.y))
           .replace("{TileCol}", str(tile.x)))  # fmt: skip
    assert urllib.request.urlopen(url).read() == _xyz_png(live, 9, tile.x, tile.y)


def test_gdal_wmts_driver_reads_our_pixels_georeferenced(live: str) -> None:
    """GDAL's WMTS driver on our capabilities: a window read at the tile matrix of zoom 9
    equals our XYZ tile, at the right place."""
    tile = _data_tile(live, 9)
    b = morecantile.tms.get("WebMercatorQuad").xy_bounds(tile)
    src = (f"WMTS:{live}/wmts/1.0.0/WMTSCapabilities.xml,layer={LAYER},"
           "tilematrixset=WebMercatorQuad,style=viridis")  # fmt: skip
    res9 = morecantile.tms.get("WebMercatorQuad").matrix(9).cellSize
    # zoom 9 at full resolution, over the whole matrix set (tile-aligned, not cropped)
    with rasterio.open(src, ZOOM_LEVEL=9, EXTENT_METHOD="TILE_MATRIX_SET") as ds:
        assert ds.crs.to_epsg() == 3857
        assert ds.res[0] == pytest.approx(res9, rel=1e-9)
        win = ds.window(b.left, b.bottom, b.right, b.top).round_offsets().round_lengths()
        got = ds.read(window=win)
    want = np.asarray(Image.open(io.BytesIO(_xyz_png(live, 9, tile.x, tile.y))).convert("RGBA"))
    assert got.shape == (4, 256, 256)
    assert np.array_equal(got.transpose(1, 2, 0), want)


INVALID = "InvalidParameterValue"


def test_wmts_errors_are_exception_reports(live: str) -> None:
    for query, code in [
        ("SERVICE=WMTS&REQUEST=GetTile", "MissingParameterValue"),
        ("SERVICE=WMTS&REQUEST=DescribeEverything", "OperationNotSupported"),
        (f"SERVICE=WMTS&REQUEST=GetTile&LAYER={LAYER}&STYLE=rainbow&FORMAT=image/png"
         "&TILEMATRIXSET=WebMercatorQuad&TILEMATRIX=9&TILEROW=1&TILECOL=1", INVALID),
        (f"SERVICE=WMTS&REQUEST=GetTile&LAYER={LAYER}&STYLE=default&FORMAT=image/gif"
         "&TILEMATRIXSET=WebMercatorQuad&TILEMATRIX=9&TILEROW=1&TILECOL=1", INVALID),
        (f"SERVICE=WMTS&REQUEST=GetTile&LAYER={LAYER}&STYLE=default&FORMAT=image/png"
         "&TILEMATRIXSET=WebMercatorQuad&TILEMATRIX=2&TILEROW=9&TILECOL=1", "TileOutOfRange"),
        ("SERVICE=WMTS&REQUEST=GetTile&LAYER=nope&STYLE=default&FORMAT=image/png"
         "&TILEMATRIXSET=WebMercatorQuad&TILEMATRIX=2&TILEROW=1&TILECOL=1", INVALID),
        (f"SERVICE=WMTS&REQUEST=GetTile&LAYER={LAYER}&STYLE=default&FORMAT=image/png"
         "&TILEMATRIXSET=Nope&TILEMATRIX=2&TILEROW=1&TILECOL=1", "InvalidParameterValue"),
    ]:  # fmt: skip
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"{live}/wmts?{query}")
        assert 400 <= e.value.code < 500, query
        doc = ET.fromstring(e.value.read())
        exc = doc.find("{http://www.opengis.net/ows/1.1}Exception")
        assert exc is not None and exc.attrib["exceptionCode"] == code, query


# -- WMS ----------------------------------------------------------------------------------------


def _getmap(live: str, **params: str) -> Any:
    q = "&".join(f"{k}={v}" for k, v in {"SERVICE": "WMS", "REQUEST": "GetMap", **params}.items())
    return urllib.request.urlopen(f"{live}/wms?{q}")


def test_owslib_reads_wms_and_gets_maps(live: str) -> None:
    from owslib.wms import WebMapService

    images = {}
    for version in ["1.1.1", "1.3.0"]:
        wms = WebMapService(f"{live}/wms", version=version)
        assert LAYER in wms.contents, version
        lay = wms.contents[LAYER]
        assert "viridis" in lay.styles
        assert "EPSG:4326" in lay.crsOptions and "EPSG:3035" in lay.crsOptions
        tile = _data_tile(live, 9)
        b = morecantile.tms.get("WebMercatorQuad").bounds(tile)
        bbox = (b.left, b.bottom, b.right, b.top)  # OWSLib swaps to lat/lon itself for 1.3.0
        img = wms.getmap(layers=[LAYER], styles=["magma"], srs="EPSG:4326", bbox=bbox,
                         size=(200, 150), format="image/png", transparent=True)  # fmt: skip
        images[version] = np.asarray(Image.open(io.BytesIO(img.read())).convert("RGBA"))
        assert images[version].shape == (150, 200, 4)
        assert (images[version][..., 3] == 255).any(), img.geturl()
    assert np.array_equal(images["1.1.1"], images["1.3.0"])


def test_getmap_axis_order_follows_the_version(live: str) -> None:
    """The same EPSG:4326 box: lon/lat under 1.1.1, lat/lon under 1.3.0, same image."""
    tile = _data_tile(live, 9)
    b = morecantile.tms.get("WebMercatorQuad").bounds(tile)
    common = {"LAYERS": LAYER, "STYLES": "", "WIDTH": "120", "HEIGHT": "90",
              "FORMAT": "image/png", "TRANSPARENT": "TRUE"}  # fmt: skip
    old = _getmap(live, VERSION="1.1.1", SRS="EPSG:4326",
                  BBOX=f"{b.left},{b.bottom},{b.right},{b.top}", **common).read()  # fmt: skip
    new = _getmap(live, VERSION="1.3.0", CRS="EPSG:4326",
                  BBOX=f"{b.bottom},{b.left},{b.top},{b.right}", **common).read()  # fmt: skip
    crs84 = _getmap(live, VERSION="1.3.0", CRS="CRS:84",
                    BBOX=f"{b.left},{b.bottom},{b.right},{b.top}", **common).read()  # fmt: skip
    assert old == new == crs84
    img = np.asarray(Image.open(io.BytesIO(old)).convert("RGBA"))
    assert (img[..., 3] == 255).any()


def test_getmap_in_web_mercator_equals_the_tile(live: str) -> None:
    tile = _data_tile(live, 9)
    b = morecantile.tms.get("WebMercatorQuad").xy_bounds(tile)
    r = _getmap(live, VERSION="1.3.0", LAYERS=LAYER, STYLES="", CRS="EPSG:3857",
                BBOX=f"{b.left},{b.bottom},{b.right},{b.top}", WIDTH="256", HEIGHT="256",
                FORMAT="image/png", TRANSPARENT="TRUE")  # fmt: skip
    got = np.asarray(Image.open(io.BytesIO(r.read())).convert("RGBA"))
    want = np.asarray(Image.open(io.BytesIO(_xyz_png(live, 9, tile.x, tile.y))).convert("RGBA"))
    assert np.array_equal(got, want)


def test_gdal_wms_driver_reads_getmap(live: str) -> None:
    tile = _data_tile(live, 9)
    b = morecantile.tms.get("WebMercatorQuad").xy_bounds(tile)
    xml = f"""<GDAL_WMS><Service name="WMS"><Version>1.1.1</Version>
  <ServerUrl>{live}/wms?</ServerUrl><SRS>EPSG:3857</SRS><ImageFormat>image/png</ImageFormat>
  <Layers>{LAYER}</Layers><Transparent>TRUE</Transparent></Service>
  <DataWindow><UpperLeftX>{b.left}</UpperLeftX><UpperLeftY>{b.top}</UpperLeftY>
  <LowerRightX>{b.right}</LowerRightX><LowerRightY>{b.bottom}</LowerRightY>
  <SizeX>256</SizeX><SizeY>256</SizeY></DataWindow>
  <BandsCount>4</BandsCount><BlockSizeX>256</BlockSizeX><BlockSizeY>256</BlockSizeY>
</GDAL_WMS>"""
    with rasterio.open(xml) as ds:
        assert ds.crs.to_epsg() == 3857 and ds.bounds.left == pytest.approx(b.left)
        got = ds.read()
    want = np.asarray(Image.open(io.BytesIO(_xyz_png(live, 9, tile.x, tile.y))).convert("RGBA"))
    assert np.array_equal(got.transpose(1, 2, 0), want)


def test_wms_errors_are_service_exception_reports(live: str) -> None:
    base = {"VERSION": "1.3.0", "LAYERS": LAYER, "STYLES": "", "CRS": "EPSG:3857",
            "BBOX": "1500000,5600000,1600000,5700000", "WIDTH": "64", "HEIGHT": "64",
            "FORMAT": "image/png"}  # fmt: skip
    for change, code in [
        ({"LAYERS": "nope"}, "LayerNotDefined"),
        ({"STYLES": "rainbow"}, "StyleNotDefined"),
        ({"CRS": "EPSG:2154"}, "InvalidCRS"),
        ({"FORMAT": "image/gif"}, "InvalidFormat"),
        ({"WIDTH": "99999"}, None),
        ({"BBOX": "1600000,5600000,1500000,5700000"}, None),
        ({"REQUEST": "GetSomething"}, "OperationNotSupported"),
    ]:
        params = {**base, **change}
        with pytest.raises(urllib.error.HTTPError) as e:
            _getmap(live, **params)
        assert 400 <= e.value.code < 500
        doc = ET.fromstring(e.value.read())
        exc = doc.find("{http://www.opengis.net/ogc}ServiceException")
        assert exc is not None, change
        assert exc.attrib.get("code") == code, (change, exc.attrib)


def test_getfeatureinfo_gives_the_layer_value(live: str, app_settings: Settings) -> None:
    """OWSLib's getfeatureinfo at a pixel returns the release's value there."""
    import json

    from owslib.wms import WebMapService

    from sdmatlas.grid import Grid
    from sdmatlas.zarr_access import array, sdmatlas_attrs

    rel = open_release(Path(app_settings.data_dir) / "releases" / KEY)
    grid = Grid.model_validate(sdmatlas_attrs(rel)["grid"])
    ids = list(np.asarray(array(rel, "species")[:]))
    codes = np.asarray(array(rel, "levels/0/probability")[ids.index(3)])
    row, col = (int(v) for v in np.argwhere(codes != 255)[len(np.argwhere(codes != 255)) // 2])
    # a 3 x 3 map centred on that release pixel, in the release's own CRS
    x0, y0 = grid.x0 + (col - 1) * grid.res, grid.y0 - (row + 2) * grid.res
    bbox = (x0, y0, x0 + 3 * grid.res, y0 + 3 * grid.res)
    for version in ["1.1.1", "1.3.0"]:
        wms = WebMapService(f"{live}/wms", version=version)
        r = wms.getfeatureinfo(layers=[LAYER], srs="EPSG:3035", bbox=bbox, size=(3, 3),
                               format="image/png", query_layers=[LAYER],
                               info_format="application/json", xy=(1, 1))  # fmt: skip
        doc = json.loads(r.read())
        assert doc["features"][0]["value"] == pytest.approx(codes[row, col] / 254, abs=1e-4)
    text = urllib.request.urlopen(
        f"{live}/wms?SERVICE=WMS&VERSION=1.3.0&REQUEST=GetFeatureInfo&QUERY_LAYERS={LAYER}"
        f"&CRS=EPSG:3035&BBOX={bbox[1]},{bbox[0]},{bbox[3]},{bbox[2]}&WIDTH=3&HEIGHT=3&I=1&J=1"
        "&INFO_FORMAT=text/html"
    ).read()
    assert b"<table>" in text
