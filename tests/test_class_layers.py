"""Class layers end to end (the worst IUCN status in the species set): XYZ tiles, WMS
through OWSLib, WMTS through OWSLib, point, GetFeatureInfo, area report, and the COG
read by GDAL, all on a live server against the release's own level-0 classes."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
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
from PIL import Image
from pyproj import Transformer

from conftest import served_catalog, uvicorn_thread
from sdmatlas.grid import Grid
from sdmatlas.publish.categorical import WORST_STATUS
from sdmatlas.serve.app import create_app
from sdmatlas.settings import Settings
from sdmatlas.testing.releases import release_group
from sdmatlas.zarr_access import array, sdmatlas_attrs

pytestmark = pytest.mark.slow

KEY = "coast-cls"
NAME = "set_worst_status"
LAYER = f"{KEY}:classes:{NAME}"
WMS_LAYER = f"{KEY}.classes.{NAME}"
COLOURS = {c.value: tuple(int(c.color[i : i + 2], 16) for i in (1, 3, 5))
           for c in WORST_STATUS.classes}  # fmt: skip
VALUES = set(COLOURS)


@pytest.fixture(scope="module")
def app_settings(tmp_path_factory: pytest.TempPathFactory, cube: Path) -> Settings:
    return served_catalog(cube, tmp_path_factory.mktemp("cls"), [(KEY, "2020")], iucn=True)


@pytest.fixture(scope="module")
def live(app_settings: Settings) -> Iterator[str]:
    with uvicorn_thread(create_app(app_settings)) as base:
        yield base


@pytest.fixture(scope="module")
def level0(app_settings: Settings) -> tuple[Grid, np.ndarray, np.ndarray]:
    """The release grid, its level-0 classes and its territory."""
    g = release_group(Path(app_settings.data_dir) / "releases" / KEY)
    grid = Grid.model_validate(sdmatlas_attrs(g)["grid"])
    return grid, np.asarray(array(g, f"levels/0/{NAME}")[:]), np.asarray(array(g, "territory")[:])


def _get(url: str) -> tuple[bytes, Any]:
    r = urllib.request.urlopen(url)
    return r.read(), r.headers


def _error(url: str) -> tuple[int, bytes]:
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(url)
    return e.value.code, e.value.read()


def _centre(grid: Grid, row: int, col: int) -> tuple[float, float]:
    """A release pixel's centre in lon/lat."""
    x, y = grid.x0 + (col + 0.5) * grid.res, grid.y0 - (row + 0.5) * grid.res
    lon, lat = Transformer.from_crs(grid.crs, 4326, always_xy=True).transform(x, y)
    return float(lon), float(lat)


def _only_class_colours(rgba: np.ndarray) -> None:
    """Every drawn pixel has exactly one class's colour: classes are never blended."""
    drawn = rgba[..., 3] > 0
    assert drawn.any()
    assert (rgba[drawn, 3] == 255).all()
    seen = {tuple(int(v) for v in px) for px in rgba[drawn, :3]}
    assert seen <= set(COLOURS.values()), seen - set(COLOURS.values())


def test_the_release_has_several_classes(level0: tuple[Grid, np.ndarray, np.ndarray]) -> None:
    _, classes, terr = level0
    present = set(np.unique(classes[terr == 1]).tolist())
    assert len(present & VALUES) >= 3 and present <= VALUES | {255}


def test_xyz_tiles_show_the_classes(live: str, level0: tuple[Grid, np.ndarray, np.ndarray]) -> None:
    grid, classes, _ = level0
    doc = json.loads(_get(f"{live}/layers/{LAYER}/tilejson.json")[0])
    assert [c["code"] for c in doc["classes"]] == ["LC", "NT", "VU", "EN", "CR", "NA"]
    assert doc["nodata"] == {"value": 255, "meaning": "empty species set"}
    tms = morecantile.tms.get("WebMercatorQuad")
    to_grid = Transformer.from_crs(3857, grid.crs, always_xy=True)
    w, s, e, n = doc["bounds"]
    checked = 0
    for z in (doc["maxzoom"] - 3, doc["maxzoom"]):  # a pyramid level (the mode), level 0
        for t in tms.tiles(w, s, e, n, [z]):
            npy, headers = _get(f"{live}/tiles/{LAYER}/WebMercatorQuad/{z}/{t.x}/{t.y}.npy")
            if headers.get("X-Tile-Empty") == "true":
                continue
            assert (int(headers["X-Pyramid-Level"]) > 0) == (z < doc["maxzoom"])
            values = np.load(io.BytesIO(npy))
            assert values.dtype == np.uint8 and headers["X-Nodata"] == "255"
            assert set(np.unique(values).tolist()) <= VALUES | {255}  # the mode invents none
            png = _get(f"{live}/tiles/{LAYER}/WebMercatorQuad/{z}/{t.x}/{t.y}.png")[0]
            rgba = np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"))
            _only_class_colours(rgba)
            for v, rgb in COLOURS.items():
                assert (rgba[values == v, :3] == rgb).all()
            assert (rgba[values == 255, 3] == 0).all()
            if z == doc["maxzoom"]:  # at full resolution: the level-0 class under each pixel
                b = tms.xy_bounds(t)
                ys, xs = np.nonzero(values != 255)
                pick = np.linspace(0, len(ys) - 1, min(len(ys), 40)).astype(int)
                cx = b.left + (xs[pick] + 0.5) * (b.right - b.left) / 256
                cy = b.top - (ys[pick] + 0.5) * (b.top - b.bottom) / 256
                gx, gy = to_grid.transform(cx, cy)
                rows = np.floor((grid.y0 - np.asarray(gy)) / grid.res).astype(int)
                cols = np.floor((np.asarray(gx) - grid.x0) / grid.res).astype(int)
                np.testing.assert_array_equal(values[ys[pick], xs[pick]], classes[rows, cols])
            checked += 1
            if checked % 4 == 0:
                break
    assert checked >= 2


def test_class_layers_refuse_colour_ramps_and_draw_their_legend(live: str) -> None:
    base = f"{live}/tiles/{LAYER}/WebMercatorQuad/9/275/184.png"
    for q in ("colormap=viridis", "rescale=0,3"):
        code, body = _error(f"{base}?{q}")
        assert code == 400 and b"class layer" in body, q
    assert _get(f"{base}?colormap=classes")[0] == _get(base)[0]
    legend = Image.open(io.BytesIO(_get(f"{live}/layers/{LAYER}/legend.png")[0]))
    assert legend.size == (256, 18 + 18 * len(WORST_STATUS.classes) + 2)
    info = json.loads(_get(f"{live}/layers/{LAYER}")[0])
    assert info["kind"] == "classes" and len(info["classes"]) == 6
    listed = json.loads(_get(f"{live}/layers?kind=classes&release={KEY}")[0])
    assert [x["id"] for x in listed] == [LAYER]


def test_owslib_reads_the_wms_class_layer(
    live: str, level0: tuple[Grid, np.ndarray, np.ndarray]
) -> None:
    from owslib.util import ServiceException
    from owslib.wms import WebMapService

    grid, classes, terr = level0
    left, bottom, right, top = grid.bounds
    for version in ("1.1.1", "1.3.0"):
        wms = WebMapService(f"{live}/wms", version=version)
        lay = wms.contents[WMS_LAYER]
        assert list(lay.styles) == ["classes"], version
        img = wms.getmap(layers=[WMS_LAYER], styles=["classes"], srs="EPSG:3035",
                         bbox=(left, bottom, right, top), size=(240, 180), format="image/png",
                         transparent=True)  # fmt: skip
        _only_class_colours(np.asarray(Image.open(io.BytesIO(img.read())).convert("RGBA")))
        with pytest.raises(ServiceException, match="classes"):
            wms.getmap(layers=[WMS_LAYER], styles=["viridis"], srs="EPSG:3035", size=(24, 18),
                       bbox=(left, bottom, right, top), format="image/png")  # fmt: skip
    # GetFeatureInfo at pixels of each class present, and at an empty set if there is one
    wms = WebMapService(f"{live}/wms", version="1.3.0")
    targets = [np.argwhere(classes == v)[0] for v in VALUES if (classes == v).any()]
    empty = np.argwhere((classes == 255) & (terr == 1))
    targets += [empty[0]] if len(empty) else []
    for row, col in targets:
        x0, y0 = grid.x0 + (col - 1) * grid.res, grid.y0 - (row + 2) * grid.res
        box = (x0, y0, x0 + 3 * grid.res, y0 + 3 * grid.res)
        r = wms.getfeatureinfo(layers=[WMS_LAYER], srs="EPSG:3035", bbox=box, size=(3, 3),
                               format="image/png", query_layers=[WMS_LAYER],
                               info_format="application/json", xy=(1, 1))  # fmt: skip
        feature = json.loads(r.read())["features"][0]
        v = int(classes[row, col])
        entry = WORST_STATUS.by_value(v)
        if entry is None:
            assert feature["class"] == {"value": None, "code": None, "name": "empty species set"}
        else:
            assert feature["class"] == {"value": v, "code": entry.code, "name": entry.name}
            text = wms.getfeatureinfo(layers=[WMS_LAYER], srs="EPSG:3035", bbox=box,
                                      size=(3, 3), format="image/png",
                                      query_layers=[WMS_LAYER], info_format="text/plain",
                                      xy=(1, 1)).read().decode()  # fmt: skip
            assert f"{entry.code} {entry.name} ({v})" in text
    legend = _get(f"{live}/wms?SERVICE=WMS&VERSION=1.3.0&REQUEST=GetLegendGraphic"
                  f"&LAYER={WMS_LAYER}&FORMAT=image/png&STYLE=classes")[0]  # fmt: skip
    assert Image.open(io.BytesIO(legend)).size[1] == 18 + 18 * 6 + 2


def test_owslib_reads_the_wmts_class_layer(live: str) -> None:
    from owslib.wmts import WebMapTileService

    wmts = WebMapTileService(f"{live}/wmts", version="1.0.0")
    lay = wmts.contents[LAYER]
    assert list(lay.styles) == ["classes"]
    tms = morecantile.tms.get("WebMercatorQuad")
    doc = json.loads(_get(f"{live}/layers/{LAYER}/tilejson.json")[0])
    w, s, e, n = doc["bounds"]
    z = doc["maxzoom"] - 2
    for t in tms.tiles(w, s, e, n, [z]):
        xyz, headers = _get(f"{live}/tiles/{LAYER}/WebMercatorQuad/{z}/{t.x}/{t.y}.png")
        if headers.get("X-Tile-Empty") != "true":
            break
    got = wmts.gettile(layer=LAYER, tilematrixset="WebMercatorQuad", tilematrix=str(z),
                       row=t.y, column=t.x, format="image/png", style="classes")  # fmt: skip
    assert got.read() == xyz
    code, body = _error(f"{live}/wmts/1.0.0/{LAYER}/viridis/WebMercatorQuad/{z}/{t.y}/{t.x}.png")
    # WMTS (OWS 1.1) names a bad style InvalidParameterValue, located at Style
    assert code == 400 and b"InvalidParameterValue" in body and b'locator="Style"' in body


def test_point_and_area_report_give_the_classes(
    live: str, level0: tuple[Grid, np.ndarray, np.ndarray]
) -> None:
    grid, classes, terr = level0
    for v in sorted(VALUES):
        hits = np.argwhere(classes == v)
        if not len(hits):
            continue
        row, col = hits[len(hits) // 2]
        lon, lat = _centre(grid, int(row), int(col))
        body = json.loads(_get(f"{live}/point?lon={lon}&lat={lat}&release={KEY}")[0])
        assert body["classes"][NAME]["value"] == v
        assert body["classes"][NAME]["code"] == WORST_STATUS.by_value(v).code  # type: ignore[union-attr]
    # the whole grid: every territory pixel, counted class by class
    left, bottom, right, top = grid.bounds
    to_ll = Transformer.from_crs(grid.crs, 4326, always_xy=True)
    w, s, e, n = to_ll.transform_bounds(left - 1e4, bottom - 1e4, right + 1e4, top + 1e4)
    poly = {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]}
    req = urllib.request.Request(f"{live}/report?release={KEY}", data=json.dumps(poly).encode(),
                                 headers={"Content-Type": "application/geo+json"})  # fmt: skip
    report = json.loads(urllib.request.urlopen(req).read())
    got = report["classes"][NAME]
    on = terr == 1
    assert report["pixels"] == int(on.sum())
    pixel_km2 = (grid.res / 1000) ** 2
    for row in got["classes"]:
        want = int((classes[on] == row["value"]).sum())
        assert row["pixels"] == want and row["area_km2"] == pytest.approx(want * pixel_km2)
        assert row["share"] == pytest.approx(want / on.sum(), abs=1e-6)
    assert got["no_class"]["pixels"] == int((classes[on] == 255).sum())
    total = sum(r["share"] for r in got["classes"]) + got["no_class"]["share"]
    assert total == pytest.approx(1.0, abs=1e-5)


def test_the_cog_has_a_colour_table_and_category_names(
    live: str, tmp_path: Path, app_settings: Settings, level0: tuple[Grid, np.ndarray, np.ndarray]
) -> None:
    from sdmatlas.publish.export import export_cog
    from sdmatlas.storage import open_release

    _, classes, _ = level0
    tif = tmp_path / "served.tif"
    tif.write_bytes(_get(f"{live}/layers/{LAYER}/cog")[0])
    with rasterio.open(tif) as ds:
        assert ds.dtypes[0] == "uint8" and ds.nodata == 255
        np.testing.assert_array_equal(ds.read(1), classes)
        cmap = ds.colormap(1)
        for v, rgb in COLOURS.items():
            assert cmap[v] == (*rgb, 255)
        assert ds.tags(1)["class_4"] == "CR Critically Endangered"
        for factor in ds.overviews(1):  # GDAL's mode overviews: no value outside the classes
            ov = ds.read(1, out_shape=(ds.height // factor, ds.width // factor))
            assert set(np.unique(ov).tolist()) <= VALUES | {255}
    # the command-line export writes GDAL's sidecar with the category names too
    out = export_cog(open_release(str(Path(app_settings.data_dir) / "releases" / KEY)),
                     f"classes/{NAME}", tmp_path / "cli.tif")  # fmt: skip
    gdalinfo = shutil.which("gdalinfo")
    assert gdalinfo, "gdal-bin is installed by scripts/install-system-packages.sh"
    info = json.loads(subprocess.run([gdalinfo, "-json", str(out)], capture_output=True,
                                     check=True, text=True).stdout)  # fmt: skip
    band = info["bands"][0]
    assert band["categories"][:6] == [f"{c.code} {c.name}" for c in WORST_STATUS.classes]
    assert band["colorTable"]["entries"][4][:3] == list(COLOURS[4])
    ET.fromstring(Path(str(out) + ".aux.xml").read_text())  # well-formed PAM
    rows = list(csv.DictReader(out.with_suffix(".classes.csv").open()))
    assert [(int(r["value"]), r["code"], r["name"]) for r in rows] == [
        (c.value, c.code, c.name) for c in WORST_STATUS.classes
    ]
    # a GIS client reading the served COG over HTTP (/vsicurl/) finds the sidecar beside
    # it and lists the classes by name too
    remote = json.loads(subprocess.run(
        [gdalinfo, "-json", f"/vsicurl/{live}/layers/{LAYER}/cog"], capture_output=True,
        check=True, text=True).stdout)  # fmt: skip
    assert remote["bands"][0]["categories"][:6] == band["categories"][:6]
    code, _ = _error(f"{live}/layers/{KEY}:indicator:richness/cog.aux.xml")
    assert code == 404
