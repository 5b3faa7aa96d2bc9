"""The API: tiles against a GDAL reference, point and area answers against the cube,
caching headers, and bad input (never a 500).

The release is the demo model's cube over the coast window, published with small
pyramid levels (so that several levels are exercised), catalogued in SQLite.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import morecantile
import numpy as np
import pytest
import rasterio
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from pyproj import Transformer
from rasterio.io import MemoryFile
from rasterio.transform import from_bounds
from rasterio.vrt import WarpedVRT
from rasterio.warp import Resampling
from shapely.geometry import Point, Polygon, mapping

from conftest import ROOT
from sdmatlas.catalog.db import Catalog
from sdmatlas.catalog.imports import import_territories
from sdmatlas.catalog.register import register_release
from sdmatlas.chunks import local_reader
from sdmatlas.grid import Grid
from sdmatlas.predict.cube import open_cube
from sdmatlas.publish.indicators import INDICATORS, SpeciesInfo
from sdmatlas.publish.release import PublishOptions, publish
from sdmatlas.quantize import NODATA, SCALE
from sdmatlas.serve.app import create_app
from sdmatlas.serve.tiles.tiling import TMS_NAMES, exact_grid_xy, level_grid, tile_index
from sdmatlas.settings import Settings
from sdmatlas.storage import open_release
from sdmatlas.testing.releases import release_group
from sdmatlas.zarr_access import array, sdmatlas_attrs

TERRITORIES = ROOT / "src" / "sdmatlas" / "demo" / "territories.geojson"
KEY = "coast-2"


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory, cube: Path) -> Path:
    ids = np.asarray(open_cube(cube).species_ids, np.int64)
    n = len(ids)
    info = SpeciesInfo(
        ids=ids,
        protected=np.arange(n) % 5 == 0,
        invasive=np.arange(n) % 7 == 0,
        endemic=np.arange(n) % 3 == 0,
        genus=np.array(["Alpha" if i % 4 == 0 else "Beta" for i in range(n)], dtype=object),
        family=np.array(["Fam"] * n, dtype=object),
    )
    root = tmp_path_factory.mktemp("served")
    opts = PublishOptions(threshold=0.4, min_level_size=16)
    return Path(publish(cube, root, KEY, info, opts))


@pytest.fixture(scope="module")
def client(release: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    tmp = tmp_path_factory.mktemp("api")
    # uncached: these tests check what the renderer makes (tests/test_cache.py: the cache)
    s = Settings(data_dir=tmp, database_url=f"sqlite:///{tmp / 'catalog.sqlite'}", tile_cache=[])
    catalog = Catalog.from_settings(s)
    catalog.upgrade()
    import_territories(catalog, TERRITORIES)
    register_release(catalog, open_release(release), str(release), "2020")
    with TestClient(create_app(s, catalog)) as c:
        yield c
    catalog.dispose()


@pytest.fixture(scope="module")
def slow_client(client: TestClient) -> Iterator[TestClient]:
    """The same app without the tile fast path: every tile through FastAPI's router."""
    s = client.app.state.settings.model_copy(update={"tile_fast_path": False})  # type: ignore[attr-defined]
    with TestClient(create_app(s, client.app.state.catalog)) as c:  # type: ignore[attr-defined]
        yield c


@pytest.fixture(scope="module")
def grid(release: Path) -> Grid:
    return Grid.model_validate(sdmatlas_attrs(release_group(release))["grid"])


def level_array(release: Path, k: int, var: str, species: int | None = None) -> np.ndarray:
    """A level of an indicator, or of one species (by id)."""
    group = release_group(release)
    a = array(group, f"levels/{k}/{var}")
    if species is None:
        return np.asarray(a[:])
    row = list(np.asarray(array(group, "species")[:])).index(species)
    return np.asarray(a[row])


def npy(resp: Any) -> np.ndarray:
    assert resp.status_code == 200, resp.text
    return np.load(io.BytesIO(resp.content), allow_pickle=False)


def tiles_over(grid: Grid, tms: morecantile.TileMatrixSet, z: int) -> list[morecantile.Tile]:
    t = Transformer.from_crs(grid.crs, 4326, always_xy=True)
    left, bottom, right, top = grid.bounds
    w, s, e, n = t.transform_bounds(left, bottom, right, top)
    return list(tms.tiles(w, s, e, n, [z]))


def reference_tile(
    src: np.ndarray, g: Grid, tms: morecantile.TileMatrixSet, tile: morecantile.Tile, nodata: Any
) -> np.ndarray:
    """GDAL's nearest-neighbour warp of a level array into the tile.

    Through a WarpedVRT with a 1e-6 pixel transformer tolerance: rasterio 1.4's
    ``reproject`` always uses GDAL's approximate transformer (0.125 pixel; its
    ``tolerance`` argument is honoured from rasterio 1.5.1, rasterio#3586), which moves
    about 1 % of the pixels near a row edge to the next row."""
    b = tms.xy_bounds(tile)
    profile = {
        "driver": "GTiff", "width": src.shape[1], "height": src.shape[0], "count": 1,
        "dtype": src.dtype.name, "crs": g.crs, "transform": g.transform, "nodata": nodata,
    }  # fmt: skip
    with MemoryFile() as mf:
        with mf.open(**profile) as ds:
            ds.write(src, 1)
        with (
            mf.open() as ds,
            WarpedVRT(
                ds,
                crs=f"EPSG:{tms.crs.to_epsg()}",
                transform=from_bounds(b.left, b.bottom, b.right, b.top, 256, 256),
                width=256,
                height=256,
                resampling=Resampling.nearest,
                tolerance=1e-6,
                nodata=nodata,
            ) as vrt,
        ):
            return np.asarray(vrt.read(1))


# -- tiles --------------------------------------------------------------------------------------


@pytest.mark.parametrize("tms_name", TMS_NAMES)
def test_tiles_equal_a_gdal_warp_of_the_level_they_use(
    client: TestClient, release: Path, grid: Grid, tms_name: str
) -> None:
    tms = morecantile.tms.get(tms_name)
    tj = client.get(f"/layers/{KEY}:species:3/tilejson.json", params={"tms": tms_name}).json()
    maxz = tj["maxzoom"]
    n_levels = int(sdmatlas_attrs(release_group(release))["levels"])
    seen_levels: set[int] = set()
    same = total = 0
    for z in (maxz + 1, maxz, maxz - 1, maxz - 2):
        for tile in tiles_over(grid, tms, z)[:12]:
            url = f"/tiles/{KEY}:species:3/{tms_name}/{z}/{tile.x}/{tile.y}.npy"
            r = client.get(url)
            got = npy(r)
            k = int(r.headers.get("x-pyramid-level", 0))
            seen_levels.add(k)
            # the level fits the zoom: the coarsest whose pixels are no larger than the tile's
            b = tms.xy_bounds(tile)
            to_grid = Transformer.from_crs(f"EPSG:{tms.crs.to_epsg()}", grid.crs, always_xy=True)
            cx, cy, step = (b.left + b.right) / 2, (b.bottom + b.top) / 2, (b.right - b.left) / 256
            (x0, x1), (y0, y1) = to_grid.transform([cx, cx + step], [cy, cy])
            size = float(np.hypot(x1 - x0, y1 - y0))
            assert k == 0 or grid.res * 2**k <= size * 1.01, (z, k, size)
            assert k == n_levels - 1 or grid.res * 2 ** (k + 1) > size * 0.99, (z, k, size)
            g = level_grid(grid, k)
            ref = reference_tile(level_array(release, k, "probability", 3), g, tms, tile, NODATA)
            data = (got != NODATA) | (ref != NODATA)
            same += int(((got == ref) & data).sum())
            total += int(data.sum())
    assert total > 10_000
    assert same / total >= 0.999, f"{same}/{total} pixels equal GDAL's"
    assert len(seen_levels) >= 2 and seen_levels <= set(range(n_levels))


def assert_exact_map(tms: morecantile.TileMatrixSet, tile: morecantile.Tile, grid: Grid) -> None:
    """The tile's index map is the exact transform of every pixel centre (PROJ)."""
    idx = tile_index(tms, tile.z, tile.x, tile.y, grid, 4)
    gx, gy = exact_grid_xy(tms, tile.z, tile.x, tile.y, grid.crs)
    g = level_grid(grid, idx.level)
    with np.errstate(invalid="ignore"):
        c, r = np.floor((gx - g.x0) / g.res), np.floor((g.y0 - gy) / g.res)
    ok = (c >= 0) & (c < g.width) & (r >= 0) & (r < g.height)
    assert np.array_equal(np.where(ok, r, -1), idx.rows), (tms.id, tile)
    assert np.array_equal(np.where(ok, c, -1), idx.cols), (tms.id, tile)


def test_the_fast_index_equals_the_full_transform(grid: Grid) -> None:
    for name in TMS_NAMES:
        tms = morecantile.tms.get(name)
        for z in range(4, 14):
            for tile in tiles_over(grid, tms, z)[:3]:
                assert_exact_map(tms, tile, grid)


def test_zoomed_in_tiles_use_coarser_lattices_and_still_map_exactly(
    grid: Grid, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the grid's resolution a tile's lattice is every 64 or 32 pixels, not 16
    (less PROJ work); the map is still the exact transform of every pixel, inside the
    grid and on its edge; at and below the grid's resolution the lattice stays at 16."""
    from sdmatlas.serve.tiles import tiling

    used: dict[tuple[str, int], set[int]] = {}

    class Spy(tiling._Probe):  # records the spacing of every lattice a map is built on
        def __init__(self, step: int, *rest: Any) -> None:
            used.setdefault((name, zoom), set()).add(step)
            super().__init__(step, *rest)

    monkeypatch.setattr(tiling, "_Probe", Spy)
    for name in TMS_NAMES:
        tms = morecantile.tms.get(name)
        for zoom in range(5, 17):
            tiles = tiles_over(grid, tms, zoom)
            m = tms.matrix(zoom)
            middle = tiles[len(tiles) // 2]
            edge = morecantile.Tile(min(tiles[-1].x + 1, m.matrixWidth - 1), tiles[-1].y, zoom)
            for tile in (tiles[0], middle, tiles[-1], edge):
                assert_exact_map(tms, tile, grid)
    assert all(used[(name, 16)] == {64} for name in TMS_NAMES), used
    assert 32 in set().union(*used.values()), used
    mercator = morecantile.tms.get("WebMercatorQuad")
    for zoom in range(5, 17):
        left, _, right, _ = tiling.tile_bounds(mercator, zoom, 0, 0)
        if (right - left) / 256 * 0.5 > grid.res:  # pixels larger than the grid's, even at 60 N
            assert used[("WebMercatorQuad", zoom)] == {16}, (zoom, used)


def test_the_compiled_index_kernel_equals_the_numpy_reference(
    grid: Grid, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The numba kernels of the index map give the NumPy path's TileIndex, field for
    field (which the tests above hold to the exact transform): every matrix set, zooms
    from tiles wider than the grid to tiles finer than its pixels, tiles half off the
    grid and wholly off it, and odd-sized windows."""
    from sdmatlas.serve.tiles import tiling

    def both(build: Any, *args: Any) -> tuple[Any, Any]:
        out = []
        for compiled in (True, False):
            monkeypatch.setattr(tiling, "COMPILED", compiled)
            out.append(build(*args, grid, 4))
        return out[0], out[1]

    def same(a: Any, b: Any) -> bool:
        return bool(
            a.level == b.level and (a.r0, a.c0, a.h, a.w) == (b.r0, b.c0, b.h, b.w)
            and np.array_equal(a.rows, b.rows) and np.array_equal(a.cols, b.cols)
            and np.array_equal(a.inside, b.inside) and np.array_equal(a.offsets, b.offsets)
            and a.offsets.dtype == b.offsets.dtype and a.rows.dtype == b.rows.dtype
        )  # fmt: skip

    kinds = set()
    for name in TMS_NAMES:
        tms = morecantile.tms.get(name)
        for z in range(2, 15):
            tiles = tiles_over(grid, tms, z)
            m = tms.matrix(z)
            edge = [morecantile.Tile(min(t.x + 1, m.matrixWidth - 1), t.y, z) for t in tiles[-2:]]
            for tile in tiles[:4] + tiles[-2:] + edge:
                a, b = both(tiling.tile_index, tms, tile.z, tile.x, tile.y)
                assert same(a, b), (name, tile)
                kinds.add("full" if a.full else "empty" if a.empty else "part")
    assert kinds == {"full", "empty", "part"}
    rng = np.random.default_rng(3)
    for _ in range(12):
        x0, y0 = grid.x0 + rng.uniform(-0.3, 0.8) * grid.width * grid.res, grid.y0
        box = (x0, y0 - rng.uniform(0.1, 1.2) * grid.height * grid.res,
               x0 + rng.uniform(0.1, 1.2) * grid.width * grid.res, y0)  # fmt: skip
        width, height = (int(v) for v in rng.integers(33, 600, 2))
        a, b = both(tiling.window_index, grid.crs, box, width, height)
        assert same(a, b), (box, width, height)


def test_without_the_compiled_kernels_the_numpy_path_draws_the_maps(
    grid: Grid, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Where numba cannot load the kernels (not installed; no writable cache directory,
    where numba refuses to define a cached function), tiles still get their maps, from
    the NumPy path, and a warning says so."""
    import sys

    from sdmatlas.serve.tiles import tiling

    tms = morecantile.tms.get("WebMercatorQuad")
    tile = tiles_over(grid, tms, 9)[0]
    monkeypatch.setattr(tiling, "COMPILED", False)
    reference = tiling.tile_index(tms, tile.z, tile.x, tile.y, grid, 4)
    monkeypatch.setattr(tiling, "COMPILED", True)
    monkeypatch.setitem(sys.modules, "sdmatlas.serve.tiles.index_kernel", None)  # unimportable
    tiling._kernels.cache_clear()
    try:
        got = tiling.tile_index(tms, tile.z, tile.x, tile.y, grid, 4)
        assert np.array_equal(got.rows, reference.rows)
        assert np.array_equal(got.offsets, reference.offsets)
        assert "using the NumPy path" in caplog.text
    finally:
        tiling._kernels.cache_clear()


def test_the_window_index_of_wms_maps_equals_the_full_transform(grid: Grid) -> None:
    """Any window (odd sizes, not square, any served CRS) maps like the exact transform."""
    from pyproj import Transformer

    from sdmatlas.serve.tiles.tiling import window_index

    to_ll = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True)
    w, s, e, n = to_ll.transform_bounds(*grid.bounds)
    rng = np.random.default_rng(7)
    for crs in ["EPSG:3857", "EPSG:4326", "EPSG:3035"]:
        t = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
        for _ in range(4):
            fx = np.sort(rng.uniform(-0.2, 1.2, 2))
            fy = np.sort(rng.uniform(-0.2, 1.2, 2))
            box = t.transform_bounds(w + fx[0] * (e - w), s + fy[0] * (n - s),
                                     w + fx[1] * (e - w), s + fy[1] * (n - s))  # fmt: skip
            width, height = (int(v) for v in rng.integers(33, 700, 2))
            idx = window_index(crs, box, width, height, grid, 4)
            jj, ii = np.mgrid[0:height, 0:width].astype(np.float64)
            cx = box[0] + (ii + 0.5) * (box[2] - box[0]) / width
            cy = box[3] - (jj + 0.5) * (box[3] - box[1]) / height
            gx, gy = Transformer.from_crs(crs, grid.crs, always_xy=True).transform(cx, cy)
            g = level_grid(grid, idx.level)
            with np.errstate(invalid="ignore"):
                c, r = np.floor((gx - g.x0) / g.res), np.floor((g.y0 - gy) / g.res)
            ok = (c >= 0) & (c < g.width) & (r >= 0) & (r < g.height)
            assert np.array_equal(np.where(ok, r, -1), idx.rows), (crs, box, width, height)
            assert np.array_equal(np.where(ok, c, -1), idx.cols), (crs, box, width, height)


def test_the_direct_chunk_reader_equals_zarr(release: Path) -> None:
    group = release_group(release)
    n_levels = int(sdmatlas_attrs(group)["levels"])
    for k in range(n_levels):
        for var in ["probability", *INDICATORS]:
            reader = local_reader(release / "levels" / str(k) / var)
            assert reader is not None, (k, var)
            a = np.asarray(array(group, f"levels/{k}/{var}")[:])
            ch = reader.inner[-1]
            for cy in range(-(-a.shape[-2] // ch)):
                for cx in range(-(-a.shape[-1] // ch)):
                    ys, xs = slice(cy * ch, (cy + 1) * ch), slice(cx * ch, (cx + 1) * ch)
                    if var == "probability":
                        for s in range(0, a.shape[0], 7):
                            want = a[s, ys, xs]
                            got = reader.chunk((s, cy, cx))[0][: want.shape[0], : want.shape[1]]
                            assert np.array_equal(want, got)
                    else:
                        want = a[ys, xs]
                        got = reader.chunk((cy, cx))[: want.shape[0], : want.shape[1]]
                        assert np.array_equal(want, got, equal_nan=True)


def test_indicator_tiles_equal_the_warp_too(client: TestClient, release: Path, grid: Grid) -> None:
    tms = morecantile.tms.get("WebMercatorQuad")
    maxz = client.get(f"/layers/{KEY}:indicator:richness/tilejson.json").json()["maxzoom"]
    same = total = 0
    for tile in tiles_over(grid, tms, maxz)[:8]:
        r = client.get(
            f"/tiles/{KEY}:indicator:richness/WebMercatorQuad/{tile.z}/{tile.x}/{tile.y}.npy"
        )
        got = npy(r)
        k = int(r.headers.get("x-pyramid-level", 0))
        ref = reference_tile(
            level_array(release, k, "richness"), level_grid(grid, k), tms, tile, np.nan
        )
        data = ~np.isnan(got) | ~np.isnan(ref)
        same += int((np.isclose(got, ref, equal_nan=True) & data).sum())
        total += int(data.sum())
    assert total > 1000 and same / total >= 0.999


def test_png_and_webp_tiles_show_the_codes_through_the_palette(
    client: TestClient, grid: Grid
) -> None:
    from sdmatlas.serve.tiles.render import SPECIES_FADE, code_palette, parse_style

    tms = morecantile.tms.get("WebMercatorQuad")
    maxz = client.get(f"/layers/{KEY}:species:3/tilejson.json").json()["maxzoom"]
    tile = tiles_over(grid, tms, maxz)[0]
    base = f"/tiles/{KEY}:species:3/WebMercatorQuad/{tile.z}/{tile.x}/{tile.y}"
    codes = npy(client.get(base + ".npy"))
    for fmt in ["png", "webp"]:
        for cmap, rescale in [
            (None, None), ("magma", "0,0.5"), ("ffffff,ff0000", None), ("viridis_opaque", None)
        ]:  # fmt: skip
            params = {k: v for k, v in (("colormap", cmap), ("rescale", rescale)) if v}
            r = client.get(f"{base}.{fmt}", params=params)
            assert r.status_code == 200 and r.headers["content-type"] == f"image/{fmt}"
            img = np.asarray(Image.open(io.BytesIO(r.content)).convert("RGBA"))
            lo, hi = (float(v) for v in rescale.split(",")) if rescale else (0.0, 1.0)
            want = code_palette(parse_style(cmap, rescale, (lo, hi), SPECIES_FADE))[codes]
            # lossless WebP may drop the colour of fully transparent pixels: compare alpha
            # everywhere, colour where something shows
            assert np.array_equal(img[..., 3], want[..., 3]), (fmt, cmap)
            shown = want[..., 3] > 0
            assert np.array_equal(img[shown], want[shown]), (fmt, cmap)
            assert (img[codes == NODATA, 3] == 0).all()
            fades = cmap != "viridis_opaque"
            assert (img[codes == 0, 3] == (0 if fades else 255)).all(), (fmt, cmap)


def _pillow_png(indices: np.ndarray, palette: np.ndarray, level: int) -> bytes:
    """The reference: Pillow's palette PNG (as render.encode_indexed wrote it before)."""
    h, w = indices.shape
    img = Image.frombytes("P", (w, h), np.ascontiguousarray(indices).tobytes())
    img.putpalette(palette[:, :3].tobytes(), rawmode="RGB")
    buf = io.BytesIO()
    img.save(buf, "PNG", compress_level=level, transparency=palette[:, 3].tobytes())
    return buf.getvalue()


@settings(max_examples=60, deadline=None)
@given(
    h=st.integers(1, 300),
    w=st.integers(1, 300),
    kind=st.sampled_from(["noise", "steps", "flat"]),
    level=st.sampled_from([1, 6, 9]),
    seed=st.integers(0, 2**32 - 1),
)
def test_palette_pngs_are_pillows_but_for_the_deflate(
    h: int, w: int, kind: str, level: int, seed: int
) -> None:
    """png.palette_png with zlib's deflate writes the bytes Pillow writes (the API's PNGs
    before ISA-L), for any size and content; with ISA-L's (the tiles'), Pillow decodes
    the same indices, palette and alpha."""
    from sdmatlas.serve.tiles.png import palette_png, zlib_deflate

    rng = np.random.default_rng(seed)
    palette = rng.integers(0, 256, (256, 4), dtype=np.uint8)
    if kind == "noise":
        idx = rng.integers(0, 256, (h, w), dtype=np.uint8)
    elif kind == "steps":
        idx = (np.add.outer(np.arange(h), np.arange(w)) // 7 % 255).astype(np.uint8)
    else:
        idx = np.full((h, w), int(rng.integers(0, 256)), np.uint8)
    assert palette_png(idx, palette, zlib_deflate(level)) == _pillow_png(idx, palette, level)
    back = Image.open(io.BytesIO(palette_png(idx, palette)))
    assert back.mode == "P" and np.array_equal(np.asarray(back), idx)
    assert back.getpalette("RGB") == palette[:, :3].ravel().tolist()
    assert back.info["transparency"] == palette[:, 3].tobytes()
    rgba = np.asarray(back.convert("RGBA"))
    assert np.array_equal(rgba, palette[idx])


def test_large_palette_pngs_split_their_data_as_pillow_does() -> None:
    """Wide images (a WMS GetMap) and data past one 64 KiB IDAT chunk: Pillow's chunks,
    and with ISA-L's deflate the same pixels."""
    from sdmatlas.serve.tiles.png import palette_png, zlib_deflate

    rng = np.random.default_rng(7)
    palette = rng.integers(0, 256, (256, 4), dtype=np.uint8)
    for shape in [(512, 512), (40, 20_000), (1024, 700)]:
        idx = rng.integers(0, 256, shape, dtype=np.uint8)
        got = palette_png(idx, palette, zlib_deflate(1))
        assert got.count(b"IDAT") > 1 and got == _pillow_png(idx, palette, 1)
        fast = palette_png(idx, palette)
        assert fast.count(b"IDAT") > 1
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(fast))), idx)


def test_species_maps_fade_in_from_zero_and_indicators_stay_opaque() -> None:
    """Species palettes: alpha 0 at p = 0, rising linearly to opaque at p = 0.2 of the
    range; ``<name>_opaque`` and indicator palettes are opaque; legends show the ramp."""
    from sdmatlas.quantize import SCALE
    from sdmatlas.serve.tiles import render

    fading = render.parse_style(None, None, (0.0, 1.0), render.SPECIES_FADE)
    pal = render.code_palette(fading)
    p = np.arange(255) * SCALE
    assert pal[0, 3] == 0 and pal[NODATA, 3] == 0
    a = pal[:255, 3]
    assert (a[p >= 0.2 - 1e-9] == 255).all()
    ramp = a[(p > 0) & (p < 0.2)].astype(int)
    assert (np.diff(ramp) >= 0).all() and 0 < ramp[0] < ramp[-1] < 255
    np.testing.assert_allclose(ramp, p[(p > 0) & (p < 0.2)] / 0.2 * 255, atol=0.51)
    # a rescale moves the ramp with the colours: opaque from 20 % of 0..0.5, p = 0.1
    half = render.code_palette(render.parse_style(None, "0,0.5", (0.0, 1.0), 0.2))
    assert half[int(np.ceil(0.1 / SCALE)), 3] == 255 and half[1, 3] < 255
    opaque = render.code_palette(render.parse_style("viridis_opaque", None, (0, 1), 0.2))
    assert (opaque[:255, 3] == 255).all()
    assert np.array_equal(opaque[:255, :3], pal[:255, :3])  # the same colours
    assert fading.key() != render.parse_style("viridis_opaque", None, (0, 1), 0.2).key()
    indicator = render.index_palette(render.parse_style(None, None, (0.0, 10.0)))
    assert (indicator[:255, 3] == 255).all()
    # the legend of a fading style shows the checkerboard through its low end
    leg = np.asarray(Image.open(io.BytesIO(render.legend_png(fading, ""))).convert("RGB"))
    low = leg[:20, :3].reshape(-1, 3)
    assert {tuple(c) for c in low} >= {(204, 204, 204), (255, 255, 255)}
    opaque_style = render.parse_style("viridis_opaque", None, (0, 1), 0.2)
    solid = np.asarray(Image.open(io.BytesIO(render.legend_png(opaque_style, ""))).convert("RGB"))
    assert tuple(solid[5, 0]) == tuple(pal[0, :3])  # no checkerboard: opaque


def test_the_fast_path_answers_as_the_documented_route(
    client: TestClient, slow_client: TestClient, grid: Grid
) -> None:
    tms = morecantile.tms.get("WebMercatorQuad")
    tile = tiles_over(grid, tms, 9)[0]
    t = f"WebMercatorQuad/{tile.z}/{tile.x}/{tile.y}"
    urls = [
        f"/tiles/{KEY}:species:3/{t}.png",
        f"/tiles/{KEY}:species:3/{t}.webp?colormap=magma&rescale=0,0.5",
        f"/tiles/{KEY}:species:3/{t}.npy",
        f"/tiles/{KEY}:indicator:shannon/{t}.png?colormap=ff0000,00ff00",
        f"/tiles/{KEY}:group:richness/{t}.png?genus=Alpha",
        f"/tiles/{KEY}:species:3/WebMercatorQuad/6/0/0.png",
        f"/tiles/{KEY}:species:3/{t}.gif",
        f"/tiles/{KEY}:species:3/Nope/{tile.z}/{tile.x}/{tile.y}.png",
        f"/tiles/{KEY}:species:3/{t}.png?rescale=2,1",
        f"/tiles/{KEY}:species:3/{t}.png?unknown=1",
        f"/tiles/{KEY}:species:3/{t}.png?colormap=a&colormap=b",
        f"/tiles/{KEY}:species:999/{t}.png",
        f"/tiles/{KEY}:species:3/WebMercatorQuad/40/0/0.png",
    ]
    for url in urls:
        fast, slow = client.get(url), slow_client.get(url)
        assert fast.status_code == slow.status_code, url
        assert fast.content == slow.content or fast.json() == slow.json(), url
        for h in ["etag", "cache-control", "content-type", "x-tile-empty", "x-pyramid-level"]:
            assert fast.headers.get(h) == slow.headers.get(h), (url, h)


def test_tiles_outside_the_data_are_empty_not_errors(client: TestClient) -> None:
    for fmt in ["png", "webp", "npy"]:
        r = client.get(f"/tiles/{KEY}:species:3/WebMercatorQuad/6/0/0.{fmt}")
        assert r.status_code == 200 and r.headers["x-tile-empty"] == "true"
    img = np.asarray(
        Image.open(
            io.BytesIO(client.get(f"/tiles/{KEY}:species:3/WebMercatorQuad/6/0/0.png").content)
        ).convert("RGBA")
    )
    assert (img[..., 3] == 0).all()
    assert (npy(client.get(f"/tiles/{KEY}:species:3/WebMercatorQuad/6/0/0.npy")) == NODATA).all()


def test_group_tiles_equal_the_sum_of_their_species(
    client: TestClient, release: Path, grid: Grid
) -> None:
    tms = morecantile.tms.get("EuropeanETRS89_LAEAQuad")
    maxz = client.get(f"/layers/{KEY}:species:3/tilejson.json", params={"tms": tms.id}).json()[
        "maxzoom"
    ]
    tile = tiles_over(grid, tms, maxz)[0]
    path = f"EuropeanETRS89_LAEAQuad/{tile.z}/{tile.x}/{tile.y}.npy"
    ids = np.asarray(array(release_group(release), "species")[:])
    alpha = [int(s) for i, s in enumerate(ids) if i % 4 == 0]
    total = np.zeros((256, 256), np.float64)
    for sid in alpha:
        codes = npy(client.get(f"/tiles/{KEY}:species:{sid}/{path}"))
        total += np.where(codes == NODATA, np.nan, codes * SCALE)
    got = npy(client.get(f"/tiles/{KEY}:group:richness/{path}", params={"genus": "alpha"}))
    assert np.allclose(got, total, atol=1e-4, equal_nan=True)
    by_ids = npy(
        client.get(f"/tiles/{KEY}:group:richness/{path}", params={"ids": ",".join(map(str, alpha))})
    )
    assert np.allclose(by_ids, got, equal_nan=True)
    thr = npy(
        client.get(f"/tiles/{KEY}:group:richness_thresholded/{path}", params={"genus": "Alpha"})
    )
    valid = ~np.isnan(total)
    assert np.nanmax(thr) <= len(alpha) and (thr[valid] >= 0).all()


def test_etags_304_and_cache_control(client: TestClient, grid: Grid) -> None:
    tj = client.get(f"/layers/{KEY}:species:3/tilejson.json").json()
    url = tj["tiles"][0].replace("http://testserver", "")
    tile = tiles_over(grid, morecantile.tms.get("WebMercatorQuad"), tj["maxzoom"])[0]
    url = url.replace("{z}", str(tile.z)).replace("{x}", str(tile.x)).replace("{y}", str(tile.y))
    assert f"v={tj['version']}" in url
    r = client.get(url)
    assert r.status_code == 200 and "immutable" in r.headers["cache-control"]
    assert "read;dur=" in r.headers["server-timing"] and "encode;dur=" in r.headers["server-timing"]
    tag = r.headers["etag"]
    assert tag.startswith('"') and not tag.startswith("W/")
    again = client.get(url, headers={"If-None-Match": tag})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == tag
    assert client.get(url, headers={"If-None-Match": '"other"'}).status_code == 200
    unversioned = client.get(url.split("?")[0])
    assert "immutable" not in unversioned.headers["cache-control"]
    other = client.get(url.split("?")[0], params={"colormap": "magma"})
    assert other.headers["etag"] != tag
    cors = client.get(url, headers={"Origin": "https://maps.example.org"})
    assert cors.headers["access-control-allow-origin"] in ("*", "https://maps.example.org")


def test_every_response_has_an_etag_and_timing(client: TestClient) -> None:
    for url in ["/releases", "/species?q=a", f"/layers/{KEY}:species:3", "/tms"]:
        r = client.get(url)
        assert r.status_code == 200 and r.headers["etag"].startswith('"'), url
        assert "dur=" in r.headers["server-timing"]
        again = client.get(url, headers={"If-None-Match": r.headers["etag"]})
        assert again.status_code == 304 and again.content == b""
    bad = client.get("/species/99999")
    assert bad.status_code == 404 and "server-timing" in bad.headers


def test_tilejson_style_and_legend(client: TestClient) -> None:
    for tms_name in TMS_NAMES:
        tj = client.get(f"/layers/{KEY}:indicator:richness/tilejson.json", params={"tms": tms_name})
        doc = tj.json()
        assert doc["tilejson"] == "3.0.0" and doc["minzoom"] <= doc["maxzoom"]
        assert f"/{tms_name}/{{z}}/{{x}}/{{y}}.png" in doc["tiles"][0]
    style = client.get(f"/layers/{KEY}:species:3/style.json", params={"colormap": "greens"}).json()
    assert style["version"] == 8 and "tilejson.json" in style["sources"]["sdmatlas"]["url"]
    assert "colormap=greens" in style["sources"]["sdmatlas"]["url"]
    leg = client.get(f"/layers/{KEY}:species:3/legend.png", params={"colormap": "magma"})
    img = Image.open(io.BytesIO(leg.content))
    assert leg.status_code == 200 and img.size == (256, 48)


# -- point and area -----------------------------------------------------------------------------


def test_point_answers_equal_the_cube(
    client: TestClient, cube: Path, release: Path, grid: Grid
) -> None:
    c = open_cube(cube)
    prob = c.read()
    ids = np.asarray(c.species_ids)
    to_ll = Transformer.from_crs(grid.crs, 4326, always_xy=True)
    rng = np.random.default_rng(3)
    checked = 0
    for _ in range(12):
        r, col = int(rng.integers(grid.height)), int(rng.integers(grid.width))
        x, y = grid.x0 + (col + 0.5) * grid.res, grid.y0 - (r + 0.5) * grid.res
        lon, lat = to_ll.transform(x, y)
        doc = client.get("/point", params={"lon": lon, "lat": lat, "limit": 10_000}).json()
        if prob[0, r, col] == NODATA:
            assert doc["inside"] is False and doc["species"] == []
            continue
        checked += 1
        assert doc["inside"] and (doc["row"], doc["col"]) == (r, col)
        got = {s["id"]: s["probability"] for s in doc["species"]}
        want = {int(i): round(float(prob[k, r, col] * SCALE), 4) for k, i in enumerate(ids)}
        assert got == want
        ps = [s["probability"] for s in doc["species"]]
        assert ps == sorted(ps, reverse=True)
        for name, v in doc["indicators"].items():
            assert v == pytest.approx(float(level_array(release, 0, name)[r, col]), abs=1e-5)
        top = client.get("/point", params={"lon": lon, "lat": lat, "min_probability": 0.5}).json()
        assert all(s["probability"] >= 0.5 for s in top["species"])
        assert top["total"] == sum(1 for v in want.values() if v >= 0.5)
    assert checked >= 3
    sea = client.get("/point", params={"lon": 10.0, "lat": 40.0}).json()
    assert sea["inside"] is False and sea["species"] == [] and sea["indicators"] == {}


def _area_reference(
    cube: Path, release: Path, grid: Grid, poly_ll: Polygon
) -> tuple[dict[int, float], dict[int, float], int]:
    c = open_cube(cube)
    prob = c.read()
    ids = np.asarray(c.species_ids)
    to_ll = Transformer.from_crs(grid.crs, 4326, always_xy=True)
    to_grid = Transformer.from_crs(4326, grid.crs, always_xy=True)
    from shapely.ops import transform

    poly = transform(lambda a, b: to_grid.transform(a, b), poly_ll)
    xs, ys = np.meshgrid(*grid.pixel_centres())
    import shapely

    inside = shapely.contains_xy(poly, xs, ys) & (prob[0] != NODATA)
    n = int(inside.sum())
    p = prob[:, inside].astype(np.float64) * SCALE
    km2 = (grid.res / 1000) ** 2
    mean = {int(i): float(p[k].mean()) for k, i in enumerate(ids)}
    area = {int(i): float(p[k].sum() * km2) for k, i in enumerate(ids)}
    del to_ll
    return mean, area, n


def test_area_reports_equal_the_cube(
    client: TestClient, cube: Path, release: Path, grid: Grid
) -> None:
    to_ll = Transformer.from_crs(grid.crs, 4326, always_xy=True)
    cx, cy = grid.x0 + grid.width * grid.res * 0.55, grid.y0 - grid.height * grid.res * 0.45
    disc = Point(cx, cy).buffer(grid.res * 22, 32)
    poly = Polygon([to_ll.transform(x, y) for x, y in disc.exterior.coords])
    mean, area, n = _area_reference(cube, release, grid, poly)
    assert n > 200
    doc = client.post("/report", json=mapping(poly)).json()
    assert doc["pixels"] == n
    got = {s["id"]: s for s in doc["species"]}
    for sid, m in mean.items():
        if m > 0:
            assert got[sid]["mean_probability"] == pytest.approx(m, abs=1e-6)
            assert got[sid]["expected_area_km2"] == pytest.approx(area[sid], abs=1e-3)
        else:
            assert sid not in got
    present = [s for s in doc["species"] if s["present"]]
    assert doc["species_present"] == len(present)
    assert doc["protected_present"] == sum(s["protected"] for s in present)
    assert doc["endemic_present"] == sum(s["endemic"] for s in present)
    assert set(doc["indicators"]) == set(INDICATORS)
    feature = {"type": "Feature", "properties": {}, "geometry": mapping(poly)}
    assert client.post("/report", json=feature).json()["pixels"] == n
    csv_text = client.post("/report", params={"format": "csv"}, json=mapping(poly)).text
    lines = csv_text.strip().splitlines()
    assert lines[0].startswith("id,name,mean_probability") and len(lines) == len(got) + 1


def test_area_report_of_a_territory(client: TestClient) -> None:
    doc = client.get("/report", params={"territory": "HR"}).json()
    assert doc["territory"] == "HR" and doc["pixels"] > 0
    assert (
        client.get("/report", params={"territory": "HR", "format": "csv"})
        .headers["content-type"]
        .startswith("text/csv")
    )
    r = client.get("/report", params={"territory": "AT"})  # far from the coast window
    assert r.status_code == 400 and "does not overlap" in r.json()["detail"]


def test_cog_download(client: TestClient, release: Path, tmp_path: Path) -> None:
    from rio_cogeo.cogeo import cog_validate

    r = client.get(f"/layers/{KEY}:species:3/cog")
    assert r.status_code == 200
    path = tmp_path / "sp3.tif"
    path.write_bytes(r.content)
    assert cog_validate(str(path))[0]
    with rasterio.open(path) as ds:
        assert np.array_equal(ds.read(1), level_array(release, 0, "probability", 3))
    assert client.get(f"/layers/{KEY}:group:richness/cog").status_code == 400


def test_cog_download_is_exported_once_and_answers_ranges(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sdmatlas.publish.export as export

    calls: list[str] = []
    real = export.export_cog

    def counting(*args: Any, **kwargs: Any) -> Path:
        calls.append(str(args[1]))
        return real(*args, **kwargs)

    monkeypatch.setattr(export, "export_cog", counting)
    url = f"/layers/{KEY}:species:5/cog"
    whole = client.get(url)
    assert whole.status_code == 200 and whole.headers["accept-ranges"] == "bytes"
    tag = whole.headers["etag"]
    assert client.get(url).content == whole.content
    assert calls == ["species/5"]  # the second answer came from the export cache
    part = client.get(url, headers={"Range": "bytes=100-1099"})
    assert part.status_code == 206 and part.content == whole.content[100:1100]
    assert part.headers["content-range"] == f"bytes 100-1099/{len(whole.content)}"
    same = client.get(url, headers={"Range": "bytes=0-9", "If-Range": tag})
    assert same.status_code == 206 and same.content == whole.content[:10]
    stale = client.get(url, headers={"Range": "bytes=0-9", "If-Range": '"other"'})
    assert stale.status_code == 200 and stale.content == whole.content
    clipped = client.get(url, params={"bbox": "13.6,45.4,14.2,45.9"})
    assert clipped.status_code == 200 and clipped.headers["etag"] != tag
    assert calls == ["species/5", "species/5"]  # one more export, for the bbox


def test_gdal_reads_the_cog_url_as_a_remote_cog(client: TestClient, release: Path) -> None:
    """GDAL's /vsicurl/ (HEAD, then ranged GETs) against a real server."""
    from conftest import sdmatlas_server

    s = client.app.state.settings  # type: ignore[attr-defined]
    env = {"SDMATLAS_DATABASE_URL": s.catalog_url, "SDMATLAS_DATA_DIR": str(s.data_dir),
           "SDMATLAS_TILE_CACHE": "[]"}  # fmt: skip
    with (
        sdmatlas_server(env) as base,
        rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR"),
        rasterio.open(f"/vsicurl/{base}/layers/{KEY}:species:3/cog") as ds,
    ):
        assert ds.driver == "GTiff" and ds.count == 1  # opened remotely, by ranges
        got = ds.read(1)
    assert np.array_equal(got, level_array(release, 0, "probability", 3))


# -- metadata -----------------------------------------------------------------------------------


def test_metadata_endpoints(client: TestClient) -> None:
    assert client.get("/releases").json()[0]["key"] == KEY
    layers = client.get("/layers", params={"release": KEY, "kind": "indicator"}).json()
    assert {x["indicator"] for x in layers} == set(INDICATORS)
    one = client.get(f"/layers/{layers[0]['id']}").json()
    assert one["links"]["tilejson"].endswith("/tilejson.json")
    assert client.get("/species/3").json()["layers"][0]["id"] == f"{KEY}:species:3"
    hr = client.get("/territories/HR").json()
    assert hr["type"] == "Feature" and hr["geometry"]["type"] in ("Polygon", "MultiPolygon")
    assert [t["id"] for t in client.get("/tms").json()] == list(TMS_NAMES)
    openapi = client.get("/openapi.json").json()
    for path in ["/tiles/{layer}/{tms}/{z}/{x}/{y}.{format}", "/point", "/report"]:
        assert path in openapi["paths"]


# -- bad input ----------------------------------------------------------------------------------

L = f"/tiles/{KEY}:species:3/WebMercatorQuad"


@pytest.mark.parametrize(
    ("url", "status", "says"),
    [
        (f"/tiles/{KEY}:species:9999/WebMercatorQuad/8/1/1.png", 404, "no layer for species 9999"),
        ("/tiles/nothing/WebMercatorQuad/8/1/1.png", 404, "is not a layer id"),
        ("/tiles/other-9:species:3/WebMercatorQuad/8/1/1.png", 404, "no release 'other-9'"),
        (f"/tiles/{KEY}:species:3/Mercator/8/1/1.png", 404, "WebMercatorQuad, WGS1984Quad"),
        (f"{L}/8/1/1.gif", 400, "png, webp, npy"),
        (f"{L}/2/4/0.png", 404, "outside WebMercatorQuad"),
        (f"{L}/31/0/0.png", 400, "z"),
        (f"{L}/8/1/1.png?colormap=rainbow", 400, "viridis"),
        (f"{L}/8/1/1.png?colormap=ff0000", 400, "2 to 32"),
        (f"{L}/8/1/1.png?rescale=1", 400, "two numbers"),
        (f"{L}/8/1/1.png?rescale=0.5,0.1", 400, "min must be less than max"),
        (f"{L}/8/1/1.png?rescale=nan,1", 400, "finite"),
        (f"{L}/8/1/1.png?genus=Alpha", 400, "group layers"),
        (f"/tiles/{KEY}:group:richness/WebMercatorQuad/8/1/1.png", 400, "exactly one of"),
        (f"/tiles/{KEY}:group:richness/WebMercatorQuad/8/1/1.png?genus=Zeta", 404, "unknown genus"),
        (f"/tiles/{KEY}:group:shannon/WebMercatorQuad/8/1/1.png?genus=Alpha", 404, "richness"),
        (f"/tiles/{KEY}:group:richness/WebMercatorQuad/8/1/1.png?ids=1,x", 400, "integers"),
        ("/point?lon=200&lat=10", 400, "lon"),
        ("/point?lon=10", 400, "lat"),
        ("/point?lon=10&lat=45&release=nope", 404, "no release 'nope'"),
        ("/report?territory=XX", 404, "no territory with code 'XX'"),
        (f"/layers/{KEY}:species:3/cog?bbox=1,2,3", 400, "four numbers"),
        (f"/layers/{KEY}:species:3/tilejson.json?tms=Nope", 404, "WebMercatorQuad"),
        ("/species?mode=exact", 400, "prefix"),
    ],
)
def test_bad_requests_say_what_to_fix(client: TestClient, url: str, status: int, says: str) -> None:
    r = client.get(url)
    assert r.status_code == status, r.text
    assert says in r.json()["detail"], r.json()["detail"]


def test_bad_polygons_say_what_to_fix(client: TestClient, grid: Grid) -> None:
    to_ll = Transformer.from_crs(grid.crs, 4326, always_xy=True)
    cx, cy = grid.x0 + grid.width * grid.res / 2, grid.y0 - grid.height * grid.res / 2
    ring = [
        to_ll.transform(cx + dx, cy + dy)
        for dx, dy in [(0, 0), (5000, 0), (5000, 5000), (0, 5000), (0, 0)]
    ]
    swapped = {"type": "Polygon", "coordinates": [[[lat, lon] for lon, lat in ring]]}
    bowtie = {"type": "Polygon", "coordinates": [[ring[0], ring[2], ring[1], ring[3], ring[0]]]}
    angles = np.linspace(0, 2 * np.pi, 120_000, endpoint=False)
    lon0, lat0 = ring[0]
    huge = Polygon(np.c_[lon0 + 0.1 * np.cos(angles), lat0 + 0.1 * np.sin(angles)])
    far = {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]]}
    unclosed = {"type": "Polygon", "coordinates": [[*ring[:-1], ring[1]]]}
    for body, status, says in [
        (swapped, 400, "axes swapped"),
        (bowtie, 400, "invalid"),
        (mapping(huge), 413, "SDMATLAS_MAX_POLYGON_VERTICES"),
        (far, 400, "does not overlap"),
        ({"type": "Point", "coordinates": [1, 2]}, 400, "Polygon"),
        ({"type": "Polygon", "coordinates": [[[0, 0], [1]]]}, 400, "[longitude, latitude]"),
        (
            {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [2, 2, 2, 2], [0, 0]]]},
            400,
            "[longitude, latitude]",
        ),
        (
            {"type": "Polygon", "coordinates": [[[500, 0], [501, 0], [501, 1], [500, 0]]]},
            400,
            "longitude",
        ),
        ({"type": "Polygon", "coordinates": []}, 400, "non-empty list"),
        (unclosed, 400, "not closed"),
        ([1, 2, 3], 400, "Polygon"),
    ]:
        r = client.post("/report", json=body)
        assert r.status_code == status, (says, r.text)
        assert says in r.json()["detail"], r.json()["detail"]
        assert r.json()["error"] in ("InvalidInputError", "BudgetExceededError")
    r = client.post("/report", content=b"{not json", headers={"content-type": "text/plain"})
    assert r.status_code == 400 and "not JSON (sent as text/plain)" in r.json()["detail"]
    deep = b"[" * 100_000 + b"]" * 100_000  # no RecursionError message leaks out
    r = client.post("/report", content=deep, headers={"content-type": "application/json"})
    assert r.status_code in (400, 413) and "recursion" not in r.text.lower(), r.text
    # JSON sent as text/plain is read as JSON: the same report as application/json
    square = {"type": "Polygon", "coordinates": [ring]}
    as_text = client.post("/report", content=json.dumps(square),
                          headers={"content-type": "text/plain"})  # fmt: skip
    assert (
        as_text.status_code == 200 and as_text.json() == client.post("/report", json=square).json()
    )


# -- nothing a client sends gives a 500 ---------------------------------------------------------

_text = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", "-1", "0", "1e309", "nan", "inf", "%00", "'; drop table species;--",
                     "WebMercatorQuad", f"{KEY}:species:3", f"{KEY}:group:richness", "a" * 300]),
)  # fmt: skip


def _fill(path: str, values: dict[str, str]) -> str:
    for k, v in values.items():
        path = path.replace("{" + k + "}", quote(v, safe="") or "x")
    return path


@pytest.mark.slow
@settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_no_request_gives_a_500(client: TestClient, data: st.DataObject) -> None:
    openapi = client.get("/openapi.json").json()
    gets = sorted(p for p, ops in openapi["paths"].items() if "get" in ops)
    path = data.draw(st.sampled_from(gets))
    op = openapi["paths"][path]["get"]
    params = op.get("parameters", [])
    path_values = {p["name"]: data.draw(_text) for p in params if p["in"] == "path"}
    query = {
        p["name"]: data.draw(st.one_of(_text, st.integers(-10, 10**6).map(str)))
        for p in params
        if p["in"] == "query" and data.draw(st.booleans())
    }
    r = client.get(_fill(path, path_values), params=query)
    assert r.status_code < 500, (path, path_values, query, r.text[:300])


_keys = st.sampled_from(["type", "coordinates", "geometry", "x"])
_json = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=10),
    lambda kids: st.lists(kids, max_size=5) | st.dictionaries(_keys, kids, max_size=4),
    max_leaves=30,
)


@pytest.mark.slow
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    body=st.one_of(
        _json,
        st.fixed_dictionaries(
            {"type": st.sampled_from(["Polygon", "MultiPolygon"]), "coordinates": _json}
        ),
    )
)
def test_no_report_body_gives_a_500(client: TestClient, body: Any) -> None:
    r = client.post(
        "/report",
        content=json.dumps(body, allow_nan=True),
        headers={"content-type": "application/json"},
    )
    assert r.status_code < 500, (body, r.text[:300])
