"""OGC and OSGeo services (WMTS 1.0.0, TMS 1.0.0), read by real clients (OWSLib, GDAL's
WMTS and WMS drivers) from a live server."""

from __future__ import annotations

import io
import itertools
import json
import math
import re
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
from owslib.tms import TileMapService
from owslib.wmts import WebMapTileService
from PIL import Image
from rasterio.windows import Window

from conftest import served_catalog, uvicorn_thread
from sdmatlas.serve.app import create_app
from sdmatlas.settings import Settings
from sdmatlas.testing.releases import release_group

# slow: live servers read by OWSLib and GDAL (make test-fast skips them)
pytestmark = pytest.mark.slow

TERRITORIES = Path(__file__).resolve().parents[1] / "src/sdmatlas/demo/territories.geojson"
KEY = "coast-tms"
LAYER = f"{KEY}:species:3"
WMS_LAYER = f"{KEY}.species.3"  # the WMS name (MapProxy's autoconfig reads ":" as its own)
# Two more releases of the same cube: a later period, and a republication of 2020 (which
# then serves 2020 in the TIME dimension).
LATER, LATER_PERIOD, REPUB = "coast-later", "2041/2060", "coast-v2"


@pytest.fixture(scope="module")
def app_settings(tmp_path_factory: pytest.TempPathFactory, cube: Path) -> Settings:
    releases = [(KEY, "2020"), (LATER, LATER_PERIOD), (REPUB, "2020")]
    return served_catalog(cube, tmp_path_factory.mktemp("tms"), releases)


@pytest.fixture(scope="module")
def live(app_settings: Settings) -> Iterator[str]:
    """The app served by uvicorn on a free port, in a thread."""
    with uvicorn_thread(create_app(app_settings)) as base:
        yield base


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
    assert tilemap.srs in ("EPSG:900913", "EPSG:3857") and tilemap.profile == "none"
    tile = _data_tile(live, 9)
    tms_y = 2**9 - 1 - tile.y
    got = service.gettile(tile.x, tms_y, 9, id=href)
    xyz = urllib.request.urlopen(f"{live}/tiles/{LAYER}/WebMercatorQuad/9/{tile.x}/{tile.y}.png")
    assert got.read() == xyz.read()


def test_tile_map_document(live: str) -> None:
    profiles = [
        ("WebMercatorQuad", "none"),
        ("WGS1984Quad", "none"),
        ("EuropeanETRS89_LAEAQuad", "local"),
    ]
    for name, profile in profiles:
        doc = ET.fromstring(urllib.request.urlopen(f"{live}/tms/1.0.0/{LAYER}/{name}").read())
        assert doc.tag == "TileMap" and doc.attrib["version"] == "1.0.0"
        sets = doc.find("TileSets")
        assert sets is not None and sets.attrib["profile"] == profile
        orders = [int(t.attrib["order"]) for t in sets.findall("TileSet")]
        assert orders == list(range(0, orders[-1] + 1))  # from 0: GDAL expects it
        upp = [float(t.attrib["units-per-pixel"]) for t in sets.findall("TileSet")]
        assert all(a > b for a, b in itertools.pairwise(upp))
        assert doc.find("Origin") is not None and doc.find("TileFormat") is not None


def test_gdal_opens_the_tile_map_url(live: str) -> None:
    """GDAL reads a TileMap by its URL (issue 22: it refused orders not starting at 0):
    the matrix set's georeferencing, and at its deepest order the XYZ tile's pixels."""
    with rasterio.open(f"{live}/tms/1.0.0/{LAYER}/WebMercatorQuad") as ds:
        assert ds.crs.to_epsg() == 3857
        assert ds.transform.c == pytest.approx(-20037508.342789244, abs=1e-3)
        z = round(math.log2(ds.width / 256))  # the deepest order: full resolution
        assert ds.height == ds.width and z >= 9
        tile = _data_tile(live, z)
        got = ds.read(window=Window(tile.x * 256, tile.y * 256, 256, 256))
    png = urllib.request.urlopen(f"{live}/tiles/{LAYER}/WebMercatorQuad/{z}/{tile.x}/{tile.y}.png")
    want = np.asarray(Image.open(io.BytesIO(png.read())).convert("RGBA")).transpose(2, 0, 1)
    # a TileMap declares no band count: GDAL opens it as RGB (the palette's colours)
    assert got.shape[0] in (3, 4) and np.array_equal(got, want[: got.shape[0]])


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


def test_advertised_boxes_hold_everything_a_layer_draws(live: str, app_settings: Settings) -> None:
    """/layers, WMS and GDAL's WMTS extent give the box of every pixel a species layer
    draws (p > 0), not only where it is present (p >= threshold): clients crop to it."""
    from owslib.wms import WebMapService
    from pyproj import Transformer

    from sdmatlas.grid import Grid
    from sdmatlas.testing.releases import release_group
    from sdmatlas.zarr_access import array, sdmatlas_attrs

    g = release_group(app_settings.data_dir / "releases" / KEY)
    grid = Grid.model_validate(sdmatlas_attrs(g)["grid"])
    codes = np.asarray(array(g, "levels/0/probability")[:])
    ids = [int(i) for i in np.asarray(array(g, "species")[:])]
    to_ll = Transformer.from_crs(grid.crs, 4326, always_xy=True)
    wms = WebMapService(f"{live}/wms", version="1.3.0")
    wider = 0
    for row, sid in enumerate(ids):
        r, c = np.nonzero((codes[row] > 0) & (codes[row] != 255))
        if not r.size:
            continue
        # the corners of every drawn pixel, in lon/lat
        xs = grid.x0 + np.concatenate([c, c + 1, c, c + 1]) * grid.res
        ys = grid.y0 - np.concatenate([r, r, r + 1, r + 1]) * grid.res
        lon, lat = to_ll.transform(xs, ys)
        info = json.loads(urllib.request.urlopen(f"{live}/layers/{KEY}:species:{sid}").read())
        w, s_, e, n = info["bbox"]
        eps = 1e-9
        assert w <= lon.min() + eps and e >= lon.max() - eps, sid
        assert s_ <= lat.min() + eps and n >= lat.max() - eps, sid
        if info["presence_bbox"] is not None:
            pw, ps, pe, pn = info["presence_bbox"]
            assert w <= pw and s_ <= ps and pe <= e and pn <= n
            wider += (pw, ps, pe, pn) != (w, s_, e, n)
        ww, ss, ee, nn = wms.contents[f"{KEY}.species.{sid}"].boundingBoxWGS84
        assert (ww, ss, ee, nn) == pytest.approx((w, s_, e, n), abs=1e-6)
    assert wider > 0  # the defect: the presence box alone was too small for these layers
    sid = ids[0]
    src = (f"WMTS:{live}/wmts/1.0.0/WMTSCapabilities.xml,layer={KEY}:species:{sid},"
           "tilematrixset=WebMercatorQuad,style=viridis")  # fmt: skip
    with rasterio.open(src, ZOOM_LEVEL=9) as ds:  # GDAL's extent: the layer's WGS84 box
        to_ll_m = Transformer.from_crs(3857, 4326, always_xy=True)
        _, south = to_ll_m.transform(ds.bounds.left, ds.bounds.bottom)
    r, c = np.nonzero((codes[0] > 0) & (codes[0] != 255))
    _, lowest = to_ll.transform(grid.x0 + (c + 0.5) * grid.res, grid.y0 - (r + 0.5) * grid.res)
    assert south <= lowest.min()


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
        assert WMS_LAYER in wms.contents, version  # WMS names: dots for the ids' colons
        lay = wms.contents[WMS_LAYER]
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
    assert r.headers["X-Cache"] in ("miss", "hit-memory", "hit-disk")  # through the tile path
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

    rel = release_group(Path(app_settings.data_dir) / "releases" / KEY)
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


def _wms_exception(url: str) -> tuple[Any, ET.Element]:
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(url)
    assert 400 <= e.value.code < 500, url
    return e.value, ET.fromstring(e.value.read())


def _data_pixel(settings: Settings) -> tuple[tuple[float, ...], float]:
    """A 3 x 3 EPSG:3035 box centred on a release pixel where species 3 has data, and
    its value there."""
    from sdmatlas.grid import Grid
    from sdmatlas.zarr_access import array, sdmatlas_attrs

    rel = release_group(Path(settings.data_dir) / "releases" / KEY)
    grid = Grid.model_validate(sdmatlas_attrs(rel)["grid"])
    ids = list(np.asarray(array(rel, "species")[:]))
    codes = np.asarray(array(rel, "levels/0/probability")[ids.index(3)])
    row, col = (int(v) for v in np.argwhere(codes != 255)[len(np.argwhere(codes != 255)) // 2])
    x0, y0 = grid.x0 + (col - 1) * grid.res, grid.y0 - (row + 2) * grid.res
    return (x0, y0, x0 + 3 * grid.res, y0 + 3 * grid.res), float(codes[row, col] / 254)


def _feature_info(
    live: str, layer: str, time: str | None = None, box: tuple[float, ...] | None = None
) -> dict[str, Any]:
    """WMS 1.3.0 GetFeatureInfo as JSON at the centre of ``box`` (EPSG:3035) or of a
    box over Istria (CRS:84)."""
    import json

    t = "" if time is None else f"&TIME={time}"
    where = "CRS=CRS:84&BBOX=13.5,45.0,14.0,45.5&WIDTH=11&HEIGHT=11&I=5&J=5"
    if box is not None:  # 1.3.0 EPSG:3035: northing first
        where = f"CRS=EPSG:3035&BBOX={box[1]},{box[0]},{box[3]},{box[2]}&WIDTH=3&HEIGHT=3&I=1&J=1"
    url = (f"{live}/wms?SERVICE=WMS&VERSION=1.3.0&REQUEST=GetFeatureInfo&QUERY_LAYERS={layer}"
           f"&{where}&INFO_FORMAT=application/json{t}")  # fmt: skip
    feature: dict[str, Any] = json.loads(urllib.request.urlopen(url).read())["features"][0]
    return feature


def test_wms_time_dimension_serves_each_period(live: str, app_settings: Settings) -> None:
    """Period layers (``species:3``) carry a TIME dimension listing the periods; TIME picks
    the newest release of that period, and the default is the latest period."""
    from owslib.wms import WebMapService

    for version in ["1.1.1", "1.3.0"]:
        wms = WebMapService(f"{live}/wms", version=version)
        lay = wms.contents["species.3"]
        assert lay.timepositions == ["2020", LATER_PERIOD], version
        assert lay.defaulttimeposition == LATER_PERIOD
        for value in lay.timepositions:  # ISO 8601: years, or an interval of them
            assert all(re.fullmatch(r"\d{4}", end) for end in value.split("/")), value
        assert "viridis" in lay.styles  # inherited from the species group
        assert f"{REPUB}.species.3" in wms.contents and WMS_LAYER in wms.contents
        assert wms.contents[WMS_LAYER].styles.keys() == lay.styles.keys()
    assert _feature_info(live, "species:3", "2020")["release"] == REPUB
    assert _feature_info(live, "species:3", LATER_PERIOD)["release"] == LATER
    assert _feature_info(live, "species:3")["release"] == LATER
    assert _feature_info(live, "indicator:richness", "2020")["release"] == REPUB
    box, value = _data_pixel(app_settings)
    assert _feature_info(live, LAYER, box=box)["value"] == pytest.approx(value, abs=1e-4)
    assert _feature_info(live, "species:3", "2020", box=box)["value"] == pytest.approx(
        value, abs=1e-4
    )
    common = {"VERSION": "1.3.0", "STYLES": "", "CRS": "CRS:84", "BBOX": "13.0,44.8,14.5,45.6",
              "WIDTH": "300", "HEIGHT": "160", "FORMAT": "image/png"}  # fmt: skip
    by_time = _getmap(live, LAYERS="species:3", TIME="2020", **common).read()
    assert by_time == _getmap(live, LAYERS=f"{REPUB}:species:3", **common).read()
    wms = WebMapService(f"{live}/wms", version="1.3.0")
    img = wms.getmap(layers=["species:3"], styles=[""], srs="CRS:84", bbox=(13.0, 44.8, 14.5, 45.6),
                     size=(300, 160), format="image/png", time="2020")  # fmt: skip
    assert img.read() == by_time
    # TIME=current (WMS 1.3.0 Annex C.2) is the default: the latest period
    latest = _getmap(live, LAYERS=f"{LATER}:species:3", **common).read()
    assert _getmap(live, LAYERS="species:3", TIME="current", **common).read() == latest
    assert _getmap(live, LAYERS="species:3", **common).read() == latest
    q = "&".join(f"{k}={v}" for k, v in common.items())
    for when in ["1999", "2020,2041", "2041-2060"]:
        _, doc = _wms_exception(f"{live}/wms?SERVICE=WMS&REQUEST=GetMap&LAYERS=species:3&{q}"
                                f"&TIME={when}")  # fmt: skip
        exc = doc.find("{http://www.opengis.net/ogc}ServiceException")
        assert exc is not None and exc.attrib["code"] == "InvalidDimensionValue", when
        assert "2020" in (exc.text or "") and LATER_PERIOD in (exc.text or "")
    _, doc = _wms_exception(f"{live}/wms?SERVICE=WMS&REQUEST=GetMap&LAYERS=species:99999&{q}")
    exc = doc.find("{http://www.opengis.net/ogc}ServiceException")
    assert exc is not None and exc.attrib["code"] == "LayerNotDefined"


# The capabilities documents' structure, element by element, as the schemas define it
# (WMS 1.3.0: capabilities_1_3_0.xsd; WMS 1.1.1: its DTD; WMTS: wmtsGetCapabilities_response
# .xsd with OWS 1.1): no pip package ships these schemas for offline validation, so each
# element's content model is written out here as a regular expression over child names.
WMS130 = {
    "WMS_Capabilities": "Service Capability",
    "Service": "Name Title Abstract? KeywordList? OnlineResource ContactInformation? Fees? "
    "AccessConstraints? LayerLimit? MaxWidth? MaxHeight?",
    "Capability": "Request Exception Layer?",
    "Request": "GetCapabilities GetMap GetFeatureInfo? sld:GetLegendGraphic?",
    "sld:GetLegendGraphic": "Format+ DCPType+",
    "GetCapabilities": "Format+ DCPType+",
    "GetMap": "Format+ DCPType+",
    "GetFeatureInfo": "Format+ DCPType+",
    "DCPType": "HTTP",
    "HTTP": "Get Post?",
    "Get": "OnlineResource",
    "Exception": "Format+",
    "Layer": "Name? Title Abstract? KeywordList? CRS* EX_GeographicBoundingBox? BoundingBox* "
    "Dimension* Attribution? AuthorityURL* Identifier* MetadataURL* DataURL* FeatureListURL* "
    "Style* MinScaleDenominator? MaxScaleDenominator? Layer*",
    "EX_GeographicBoundingBox": "westBoundLongitude eastBoundLongitude southBoundLatitude "
    "northBoundLatitude",
    "Style": "Name Title Abstract? LegendURL* StyleSheetURL? StyleURL?",
    "LegendURL": "Format OnlineResource",
}
WMS111 = {
    **WMS130,
    "WMT_MS_Capabilities": "Service Capability",
    "Service": "Name Title Abstract? KeywordList? OnlineResource ContactInformation? Fees? "
    "AccessConstraints?",
    "Capability": "Request Exception VendorSpecificCapabilities? UserDefinedSymbolization? Layer?",
    "Request": "GetCapabilities GetMap GetFeatureInfo? DescribeLayer? GetLegendGraphic? "
    "GetStyles? PutStyles?",
    "GetLegendGraphic": "Format+ DCPType+",
    "Layer": "Name? Title Abstract? KeywordList? SRS* LatLonBoundingBox? BoundingBox* Dimension* "
    "Extent* Attribution? AuthorityURL* Identifier* MetadataURL* DataURL* FeatureListURL* "
    "Style* ScaleHint? Layer*",
}
WMTS_XSD = {
    "Capabilities": "ows:ServiceIdentification? ows:ServiceProvider? ows:OperationsMetadata? "
    "Contents? Themes* WSDL* ServiceMetadataURL*",
    "ows:ServiceIdentification": "ows:Title* ows:Abstract* ows:Keywords* ows:ServiceType "
    "ows:ServiceTypeVersion+ ows:Profile* ows:Fees? ows:AccessConstraints*",
    "ows:OperationsMetadata": "ows:Operation+ ows:Parameter* ows:Constraint*",
    "ows:Operation": "ows:DCP+ ows:Parameter* ows:Constraint* ows:Metadata*",
    "ows:DCP": "ows:HTTP",
    "ows:HTTP": "ows:Get|ows:Post+",
    "ows:Get": "ows:Constraint*",
    "Contents": "Layer* TileMatrixSet*",
    "Layer": "ows:Title* ows:Abstract* ows:Keywords* ows:WGS84BoundingBox* ows:Identifier "
    "ows:BoundingBox* ows:Metadata* Style+ Format+ InfoFormat* Dimension* TileMatrixSetLink+ "
    "ResourceURL*",
    "ows:WGS84BoundingBox": "ows:LowerCorner ows:UpperCorner",
    "Style": "ows:Title* ows:Abstract* ows:Keywords* ows:Identifier LegendURL*",
    "TileMatrixSetLink": "TileMatrixSet TileMatrixSetLimits?",
    "TileMatrixSetLink/TileMatrixSet": "",  # the link's text, not a TileMatrixSet
    "TileMatrixSet": "ows:Title* ows:Abstract* ows:Keywords* ows:Identifier ows:BoundingBox? "
    "ows:SupportedCRS WellKnownScaleSet? TileMatrix+",
    "TileMatrix": "ows:Title* ows:Abstract* ows:Keywords* ows:Identifier ScaleDenominator "
    "TopLeftCorner TileWidth TileHeight MatrixWidth MatrixHeight",
}
REQUIRED_ATTRIBUTES = {
    "BoundingBox": {"minx", "miny", "maxx", "maxy"},
    "Dimension": {"name", "units"},
    "Extent": {"name"},
    "LatLonBoundingBox": {"minx", "miny", "maxx", "maxy"},
    "ows:Operation": {"name"},
    "ResourceURL": {"format", "resourceType", "template"},
    "LegendURL": set(),
}


def _check_structure(root: ET.Element, models: dict[str, str], names: dict[str | None, str]) -> int:
    """Every element with a content model has children in its order; returns how many
    elements were checked. ``names`` maps namespaces to the prefixes used in ``models``
    (None: elements without a namespace are expected)."""
    import re

    def local(tag: str) -> str:
        if tag.startswith("{"):
            ns, name = tag[1:].split("}")
            assert ns in names, f"unexpected namespace {ns}"
            return f"{names[ns]}{name}"
        assert None in names, f"<{tag}> has no namespace"
        return tag

    checked = 0
    parent_of = {child: parent for parent in root.iter() for child in parent}
    for el in root.iter():
        name = local(el.tag)
        for attr in REQUIRED_ATTRIBUTES.get(name, set()):
            assert attr in el.attrib, (name, attr, el.attrib)
        up = parent_of.get(el)
        model = models.get(f"{local(up.tag)}/{name}" if up is not None else "", models.get(name))
        if model is None:
            continue
        children = "".join(local(c.tag) + " " for c in el)
        parts = []
        for token in model.split():  # "A", "A?", "A*", "A+", "A|B+" (a choice)
            base, q = (token[:-1], token[-1]) if token[-1] in "?*+" else (token, "")
            choice = "|".join(f"{re.escape(b)} " for b in base.split("|"))
            parts.append(f"(?:{choice}){q}")
        pattern = "".join(parts)
        assert re.fullmatch(pattern, children), f"<{name}> holds {children!r}; schema: {model}"
        checked += 1
    return checked


def test_capabilities_follow_the_schemas(live: str) -> None:
    """Well-formed, and every element's children in the order the schemas give."""
    wms = "http://www.opengis.net/wms"
    r13 = urllib.request.urlopen(f"{live}/wms?SERVICE=WMS&REQUEST=GetCapabilities&VERSION=1.3.0")
    assert r13.headers["Content-Type"].startswith("text/xml")
    doc13 = ET.fromstring(r13.read())
    assert doc13.tag == f"{{{wms}}}WMS_Capabilities" and doc13.attrib["version"] == "1.3.0"
    assert _check_structure(doc13, WMS130, {wms: "", "http://www.opengis.net/sld": "sld:"}) > 100
    named = [lay for lay in doc13.iter(f"{{{wms}}}Layer") if lay.find(f"{{{wms}}}Name") is not None]
    assert len(named) > 10
    for lay in named:  # stated on each named layer (1.3.0 7.2.4.6.6 allows inheriting it)
        assert lay.find(f"{{{wms}}}EX_GeographicBoundingBox") is not None
    r11 = urllib.request.urlopen(f"{live}/wms?SERVICE=WMS&REQUEST=GetCapabilities&VERSION=1.1.1")
    assert r11.headers["Content-Type"].startswith("application/vnd.ogc.wms_xml")
    doc11 = ET.fromstring(r11.read())
    assert doc11.tag == "WMT_MS_Capabilities" and doc11.attrib["version"] == "1.1.1"
    assert _check_structure(doc11, WMS111, {None: "", "http://www.w3.org/1999/xlink": "x:"}) > 100
    wmts = ET.fromstring(urllib.request.urlopen(f"{live}/wmts/1.0.0/WMTSCapabilities.xml").read())
    assert wmts.attrib["version"] == "1.0.0"
    names: dict[str | None, str] = {"http://www.opengis.net/wmts/1.0": "",
             "http://www.opengis.net/ows/1.1": "ows:",
             "http://www.w3.org/1999/xlink": "xlink:"}  # fmt: skip
    assert _check_structure(wmts, WMTS_XSD, names) > 100
    # a broken order is caught: the checker is not vacuous
    bad = ET.fromstring(b"<Style><Title>t</Title><Name>n</Name></Style>")
    with pytest.raises(AssertionError):
        _check_structure(bad, WMS111, {None: ""})


def test_wms_111_errors_use_the_111_format(live: str) -> None:
    base = {"VERSION": "1.1.1", "LAYERS": LAYER, "STYLES": "", "SRS": "EPSG:3857",
            "BBOX": "1500000,5600000,1600000,5700000", "WIDTH": "64", "HEIGHT": "64",
            "FORMAT": "image/png"}  # fmt: skip
    for change, code, words in [
        ({"SRS": "EPSG:2154"}, "InvalidSRS", "EPSG:2154"),
        ({"LAYERS": "nope"}, "LayerNotDefined", "nope"),
        ({"STYLES": "rainbow"}, "StyleNotDefined", "rainbow"),
        ({"FORMAT": "image/gif"}, "InvalidFormat", "FORMAT"),
        ({"LAYERS": "species:3", "TIME": "1999"}, "InvalidDimensionValue", "1999"),
        ({"BBOX": None}, None, "BBOX"),
        ({"SRS": None}, None, "SRS"),
        ({"HEIGHT": "0"}, None, "HEIGHT"),
    ]:
        params = {k: v for k, v in {**base, **change}.items() if v is not None}
        q = "&".join(f"{k}={v}" for k, v in params.items())
        err, doc = _wms_exception(f"{live}/wms?SERVICE=WMS&REQUEST=GetMap&{q}")
        assert err.headers["Content-Type"].startswith("application/vnd.ogc.se_xml"), change
        assert doc.tag == "ServiceExceptionReport" and doc.attrib["version"] == "1.1.1"
        exc = doc.find("ServiceException")
        assert exc is not None and exc.attrib.get("code") == code, (change, exc.attrib)
        assert words in (exc.text or ""), (change, exc.text)


def test_wms_130_missing_parameters(live: str) -> None:
    base = {"VERSION": "1.3.0", "LAYERS": LAYER, "STYLES": "", "CRS": "EPSG:3857",
            "BBOX": "1500000,5600000,1600000,5700000", "WIDTH": "64", "HEIGHT": "64",
            "FORMAT": "image/png"}  # fmt: skip
    for missing in ["LAYERS", "CRS", "BBOX", "WIDTH", "HEIGHT", "FORMAT"]:
        q = "&".join(f"{k}={v}" for k, v in base.items() if k != missing)
        err, doc = _wms_exception(f"{live}/wms?SERVICE=WMS&REQUEST=GetMap&{q}")
        assert err.headers["Content-Type"].startswith("text/xml")
        exc = doc.find("{http://www.opengis.net/ogc}ServiceException")
        assert exc is not None and exc.attrib["code"] == "MissingParameterValue", missing
        assert missing in (exc.text or "")
    for change in [{"WIDTH": "4097"}, {"HEIGHT": "-1"}, {"WIDTH": "abc"}, {"BBOX": "1,2,3"},
                   {"BBOX": "1,2,3,nan"}, {"BBOX": "5,5,5,6"}, {"BGCOLOR": "red"}]:  # fmt: skip
        q = "&".join(f"{k}={v}" for k, v in {**base, **change}.items())
        err, doc = _wms_exception(f"{live}/wms?SERVICE=WMS&REQUEST=GetMap&{q}")
        assert doc.find("{http://www.opengis.net/ogc}ServiceException") is not None, change


def test_wmts_getfeatureinfo_kvp_and_rest(live: str, app_settings: Settings) -> None:
    """The value at pixel (I, J) of a tile is the release's value under that pixel's centre."""
    import json

    from pyproj import Transformer

    from sdmatlas.grid import Grid
    from sdmatlas.zarr_access import array, sdmatlas_attrs

    rel = release_group(Path(app_settings.data_dir) / "releases" / KEY)
    grid = Grid.model_validate(sdmatlas_attrs(rel)["grid"])
    ids = list(np.asarray(array(rel, "species")[:]))
    codes = np.asarray(array(rel, "levels/0/probability")[ids.index(3)])
    tms = morecantile.tms.get("WebMercatorQuad")
    tile = _data_tile(live, 11)
    b = tms.xy_bounds(tile)
    to_grid = Transformer.from_crs("EPSG:3857", grid.crs, always_xy=True)
    seen = 0
    for i, j in [(10, 20), (128, 128), (200, 47), (255, 0)]:
        x = b.left + (i + 0.5) * (b.right - b.left) / 256
        y = b.top - (j + 0.5) * (b.top - b.bottom) / 256
        row, col = (int(v) for v in grid.rowcol(*to_grid.transform(x, y)))
        want = None
        if grid.contains(row, col) and codes[row, col] != 255:
            want = round(codes[row, col] / 254, 4)
        kvp = (
            f"{live}/wmts?SERVICE=WMTS&REQUEST=GetFeatureInfo&VERSION=1.0.0&LAYER={LAYER}"
            f"&STYLE=default&FORMAT=image/png&TILEMATRIXSET=WebMercatorQuad&TILEMATRIX=11"
            f"&TILEROW={tile.y}&TILECOL={tile.x}&J={j}&I={i}&INFOFORMAT=application/json"
        )
        got = json.loads(urllib.request.urlopen(kvp).read())["features"][0]
        assert got["value"] == want and got["layer"] == LAYER, (i, j)
        rest = (
            f"{live}/wmts/1.0.0/{LAYER}/default/WebMercatorQuad/11/{tile.y}/{tile.x}/{j}/{i}.json"
        )
        assert json.loads(urllib.request.urlopen(rest).read())["features"][0] == got
        seen += want is not None
    assert seen >= 1
    caps = WebMapTileService(f"{live}/wmts", version="1.0.0")
    urls = [r for r in caps.contents[LAYER].resourceURLs if r["resourceType"] == "FeatureInfo"]
    assert {r["format"] for r in urls} == {"application/json", "text/plain", "text/html"}
    for query, code in [
        ("&J=0&I=256&INFOFORMAT=application/json", "PointIJOutOfRange"),
        ("&J=0&I=0&INFOFORMAT=application/xml", INVALID),
        ("&J=0&INFOFORMAT=application/json", "MissingParameterValue"),
    ]:
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(
                f"{live}/wmts?SERVICE=WMTS&REQUEST=GetFeatureInfo&LAYER={LAYER}&STYLE=default"
                f"&FORMAT=image/png&TILEMATRIXSET=WebMercatorQuad&TILEMATRIX=11&TILEROW={tile.y}"
                f"&TILECOL={tile.x}{query}"
            )
        exc = ET.fromstring(e.value.read()).find("{http://www.opengis.net/ows/1.1}Exception")
        assert exc is not None and exc.attrib["exceptionCode"] == code, query


def test_getmap_background_formats_and_layer_stacking(live: str) -> None:
    """TRANSPARENT=FALSE fills no-data with BGCOLOR; JPEG and WebP carry the same
    picture; a second layer is drawn over the first where it has data."""
    rich = f"{KEY}:indicator:richness"
    common = {"VERSION": "1.3.0", "STYLES": "", "CRS": "CRS:84", "BBOX": "13.0,44.8,14.5,45.6",
              "WIDTH": "300", "HEIGHT": "160"}  # fmt: skip

    def rgba(**kw: str) -> np.ndarray:
        r = _getmap(live, **{**common, **kw})
        return np.asarray(Image.open(io.BytesIO(r.read())).convert("RGBA")).astype(int)

    clear = rgba(LAYERS=LAYER, FORMAT="image/png", TRANSPARENT="TRUE")
    hole = clear[..., 3] == 0
    assert hole.any() and (~hole).any()
    assert ((clear[..., 3] > 0) & (clear[..., 3] < 255)).any()  # species maps fade in
    red = rgba(LAYERS=LAYER, FORMAT="image/png", BGCOLOR="0xFF0000")
    assert (red[hole] == [255, 0, 0, 255]).all() and (red[..., 3] == 255).all()
    a = clear[..., 3:] / 255  # the transparent map composited over the background colour
    assert np.abs(red[..., :3] - (clear[..., :3] * a + [255, 0, 0] * (1 - a))).max() <= 1
    webp = rgba(LAYERS=LAYER, FORMAT="image/webp", TRANSPARENT="TRUE")
    assert (webp[..., 3] == clear[..., 3]).all() and (webp[~hole] == clear[~hole]).all()
    jpeg = rgba(LAYERS=LAYER, FORMAT="image/jpeg", BGCOLOR="0xFF0000")
    assert np.abs(jpeg - red).mean() < 3  # lossy, but the same picture
    top = rgba(LAYERS=rich, FORMAT="image/png", TRANSPARENT="TRUE")
    both = rgba(LAYERS=f"{LAYER},{rich}", FORMAT="image/png", TRANSPARENT="TRUE")
    over = top[..., 3] > 0
    assert (both[over] == top[over]).all() and (both[~over] == clear[~over]).all()
