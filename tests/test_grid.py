from __future__ import annotations

import numpy as np
import pytest
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st

from sdmatlas.errors import GridError
from sdmatlas.grid import Grid

GRID = Grid(
    crs="EPSG:3035", res=500.0, x0=4_433_000.0, y0=2_657_000.0, width=800, height=600, chunk=256
)


def test_from_bounds_aligns_outwards_to_the_resolution() -> None:
    g = Grid.from_bounds(1010.0, 2020.0, 5990.0, 9001.0, res=1000.0)
    assert (g.x0, g.y0) == (1000.0, 10000.0)
    assert g.bounds == (1000.0, 2000.0, 6000.0, 10000.0)
    assert g.shape == (8, 5)


def test_from_bounds_rejects_empty_bounds() -> None:
    with pytest.raises(GridError, match="right > left"):
        Grid.from_bounds(10, 0, 0, 10, res=1)


def test_unknown_crs_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown CRS"):
        Grid(crs="EPSG:999999", res=1, x0=0, y0=0, width=1, height=1)


def test_chunks_tile_the_grid_exactly() -> None:
    cover = np.zeros(GRID.shape, dtype=int)
    for w in GRID.chunks():
        cover[w.row0 : w.row1, w.col0 : w.col1] += 1
    assert (cover == 1).all()
    assert GRID.chunk_shape == (3, 4)
    last = GRID.chunk_window(2, 3)
    assert last.shape == (600 - 512, 800 - 768)
    with pytest.raises(GridError):
        GRID.chunk_window(3, 0)


@given(st.integers(0, 599), st.integers(0, 799))
def test_rowcol_inverts_xy(row: int, col: int) -> None:
    x, y = GRID.xy(row, col)
    r, c = GRID.rowcol(x, y)
    assert (int(r), int(c)) == (row, col)


# No deadline: the first example pays PROJ's cold start (hundreds of ms when the test
# runs alone), which is not what this test is about.
@settings(deadline=None)
@given(st.integers(0, 599), st.integers(0, 799))
def test_lonlat_round_trip(row: int, col: int) -> None:
    lon, lat = GRID.lonlat(row, col)
    assert 9 < lon < 17 and 43 < lat < 48
    r, c = GRID.rowcol_from_lonlat(lon, lat)
    assert (int(r), int(c)) == (row, col)


def test_offset_in_accepts_a_larger_aligned_raster() -> None:
    t = Affine(500.0, 0, GRID.x0 - 8 * 500, 0, -500.0, GRID.y0 + 3 * 500)
    assert GRID.offset_in(t) == (3, 8)


@pytest.mark.parametrize(
    ("transform", "message"),
    [
        (Affine(1000.0, 0, 4_433_000.0, 0, -1000.0, 2_657_000.0), "resolution"),
        (Affine(500.0, 0, 4_433_100.0, 0, -500.0, 2_657_000.0), "not aligned"),
        (Affine(500.0, 1.0, 4_433_000.0, 0, -500.0, 2_657_000.0), "rotated"),
    ],
)
def test_offset_in_refuses_other_lattices(transform: Affine, message: str) -> None:
    with pytest.raises(GridError, match=message):
        GRID.offset_in(transform)


def test_grid_serialises() -> None:
    assert Grid.model_validate_json(GRID.model_dump_json()) == GRID
