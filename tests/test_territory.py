from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sdmatlas.errors import NotFoundError, TerritoryError
from sdmatlas.grid import Grid
from sdmatlas.territory import (
    Territory,
    load_territory,
    territory_from_mask_raster,
    write_mask_raster,
)


def feature_collection(*coords: list[list[float]]) -> dict[str, object]:
    return {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "properties": {},
                "geometry": {"type": "Polygon", "coordinates": [c]},
            }
            for c in coords
        ],
    }


def test_geojson_square_rasterises_by_pixel_centre(tmp_path: Path) -> None:
    # a 10 km x 6 km rectangle given in EPSG:3035 through the legacy crs member
    doc = feature_collection(
        [
            [4_600_000, 2_500_000],
            [4_610_000, 2_500_000],
            [4_610_000, 2_506_000],
            [4_600_000, 2_506_000],
            [4_600_000, 2_500_000],
        ]
    )
    doc["crs"] = {"type": "name", "properties": {"name": "EPSG:3035"}}
    p = tmp_path / "t.geojson"
    p.write_text(json.dumps(doc))
    t = load_territory(p, res=500.0)
    assert t.grid.shape == (12, 20) and t.grid.bounds == (
        4_600_000,
        2_500_000,
        4_610_000,
        2_506_000,
    )
    assert t.mask.all() and t.n_pixels == 240


def test_geojson_in_wgs84_is_reprojected(tmp_path: Path) -> None:
    p = tmp_path / "t.geojson"
    p.write_text(
        json.dumps(
            feature_collection(
                [[13.5, 45.5], [14.0, 45.5], [14.0, 45.8], [13.5, 45.8], [13.5, 45.5]]
            )
        )
    )
    t = load_territory(p, res=1000.0)
    assert t.grid.crs == "EPSG:3035"
    assert 1000 < t.n_pixels < 1500  # about 39 km x 33 km
    lon, lat = t.grid.lonlat(*np.argwhere(t.mask).T)
    assert lon.min() > 13.49 and lat.max() < 45.81


def test_self_intersecting_polygon_is_refused_with_its_feature_named(tmp_path: Path) -> None:
    bowtie = [[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]
    square = [[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]
    p = tmp_path / "t.geojson"
    p.write_text(json.dumps(feature_collection(square, bowtie)))
    with pytest.raises(TerritoryError, match=r"feature 1 .* invalid polygon .*Self-intersection"):
        load_territory(p, res=1000.0)


def test_non_polygons_and_bad_files(tmp_path: Path) -> None:
    p = tmp_path / "t.geojson"
    p.write_text(json.dumps({"type": "Point", "coordinates": [0, 0]}))
    with pytest.raises(TerritoryError, match="is a Point, not a polygon"):
        load_territory(p, res=1000.0)
    p.write_text("{not json")
    with pytest.raises(TerritoryError, match="not valid GeoJSON"):
        load_territory(p, res=1000.0)
    with pytest.raises(TerritoryError, match="needs a grid resolution"):
        load_territory(p)
    with pytest.raises(NotFoundError):
        load_territory(tmp_path / "missing.tif")


def test_too_many_vertices(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sdmatlas.territory as territory

    monkeypatch.setattr(territory, "MAX_VERTICES", 4)
    p = tmp_path / "t.geojson"
    p.write_text(
        json.dumps(
            feature_collection(
                [[13.5, 45.5], [14.0, 45.5], [14.0, 45.8], [13.5, 45.8], [13.5, 45.5]]
            )
        )
    )
    with pytest.raises(TerritoryError, match="5 vertices; the limit is 4"):
        load_territory(p, res=1000.0)


def test_mask_raster_round_trip(tmp_path: Path) -> None:
    g = Grid(crs="EPSG:3035", res=100.0, x0=0, y0=1000, width=7, height=5, chunk=4)
    mask = np.zeros(g.shape, bool)
    mask[1:4, 2:6] = True
    write_mask_raster(Territory(g, mask), tmp_path / "m.tif")
    back = territory_from_mask_raster(tmp_path / "m.tif", chunk=4)
    assert back.grid == g and np.array_equal(back.mask, mask)


def test_empty_territory_is_refused() -> None:
    g = Grid(crs="EPSG:3035", res=100.0, x0=0, y0=1000, width=7, height=5)
    with pytest.raises(TerritoryError, match="no pixel"):
        Territory(g, np.zeros(g.shape, bool))


def test_masks_are_read_by_windows_the_same_as_whole(tmp_path: Path) -> None:
    """A GeoJSON territory rasterised window by window, and a mask raster read window by
    window, equal the whole-grid rasterisation; the digest does not depend on the source."""
    from shapely.geometry import Polygon

    from sdmatlas.territory import GeometryMask, RasterMask, mask_from_geometry

    g = Grid(crs="EPSG:3035", res=100.0, x0=0, y0=5000, width=53, height=41, chunk=12)
    poly = Polygon([(130, 4900), (5000, 4600), (2650, 2600), (4200, 1000), (300, 950)])
    whole = mask_from_geometry(g, poly)
    assert 0.2 < whole.mean() < 0.8
    by_windows = Territory(g, source=GeometryMask(poly))
    assert np.array_equal(by_windows.mask, whole)
    write_mask_raster(by_windows, tmp_path / "m.tif")
    from_raster = Territory(g, source=RasterMask(tmp_path / "m.tif"))
    in_memory = Territory(g, whole)
    for w in g.chunks():
        want = whole[w.row0 : w.row1, w.col0 : w.col1]
        assert np.array_equal(from_raster.chunk_mask(w), want)
        assert np.array_equal(by_windows.chunk_mask(w), want)
    assert from_raster.digest() == in_memory.digest() == by_windows.digest()
    assert from_raster.n_pixels == int(whole.sum())
