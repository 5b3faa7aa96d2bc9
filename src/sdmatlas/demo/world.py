"""A plausible synthetic environment, defined at every projected coordinate.

Fields are functions of EPSG:3035 coordinates, not of an array's extent: any
window of the demo world can be generated alone and equals the same window
cut from the full demo. Noise is value noise on a global lattice whose values
come from an integer hash, summed over octaves (fractal terrain).

Hand-written rather than a noise library: it is 40 lines of numpy, vectorised
over whole grids, and extent-independent by construction.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
Fields = dict[str, npt.NDArray[Any]]
"""Covariate name -> values at a set of points (float64, or uint8 for land cover)."""

LANDCOVER_CLASSES: dict[int, str] = {
    1: "cropland",
    2: "grassland",
    3: "broadleaf forest",
    4: "coniferous forest",
    5: "shrubland",
    6: "bare rock and ice",
    7: "urban",
    8: "wetland",
}

COVARIATES: dict[str, dict[str, str]] = {
    "elevation": {"units": "m", "kind": "continuous"},
    "temperature": {"units": "degC (annual mean)", "kind": "continuous"},
    "precipitation": {"units": "mm/year", "kind": "continuous"},
    "landcover": {"units": "class", "kind": "categorical"},
}

_M = np.uint64(0xFFFFFFFFFFFFFFFF)


def _hash01(ix: npt.NDArray[np.int64], iy: npt.NDArray[np.int64], seed: int) -> F64:
    """Uniform [0, 1) values from integer lattice coordinates (splitmix64 mix)."""
    with np.errstate(over="ignore"):
        h = ix.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        h ^= iy.astype(np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F)
        h ^= np.uint64(seed) * np.uint64(0x165667B19E3779F9)
        h ^= h >> np.uint64(30)
        h *= np.uint64(0xBF58476D1CE4E5B9)
        h ^= h >> np.uint64(27)
        h *= np.uint64(0x94D049BB133111EB)
        h ^= h >> np.uint64(31)
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def value_noise(x: F64, y: F64, wavelength: float, seed: int) -> F64:
    """Smooth noise in [-1, 1] with features about ``wavelength`` metres across."""
    gx, gy = x / wavelength, y / wavelength
    ix, iy = np.floor(gx).astype(np.int64), np.floor(gy).astype(np.int64)
    fx, fy = gx - ix, gy - iy
    sx, sy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)
    v00, v10 = _hash01(ix, iy, seed), _hash01(ix + 1, iy, seed)
    v01, v11 = _hash01(ix, iy + 1, seed), _hash01(ix + 1, iy + 1, seed)
    top = v00 + (v10 - v00) * sx
    bottom = v01 + (v11 - v01) * sx
    return 2.0 * (top + (bottom - top) * sy) - 1.0


def fractal(x: F64, y: F64, base: float, octaves: int, gain: float, seed: int) -> F64:
    """Sum of octaves of value noise, normalised to about [-1, 1]."""
    total, norm, amp, wl = np.zeros_like(x), 0.0, 1.0, base
    for k in range(octaves):
        total += amp * value_noise(x, y, wl, seed * 101 + k)
        norm += amp
        amp *= gain
        wl /= 2.0
    return total / norm


def elevation(x: F64, y: F64) -> F64:
    """Metres. Alpine relief rising to the north, hills and plains to the south."""
    alps = 1900.0 / (1.0 + np.exp(-(y - 2_585_000.0) / 22_000.0))
    hills = 450.0 * (0.5 + 0.5 * fractal(x, y, 120_000.0, 3, 0.5, seed=7))
    relief = fractal(x, y, 60_000.0, 6, 0.55, seed=11)
    ridges = 1.0 - np.abs(fractal(x, y, 30_000.0, 4, 0.5, seed=13))
    z = alps * (0.55 + 0.45 * relief + 0.35 * ridges) + hills * (0.6 + 0.6 * relief)
    return np.maximum(z, 0.0)


def temperature(x: F64, y: F64, z: F64) -> F64:
    """Annual mean air temperature, degC: falls 6.5 K per km of altitude and northwards."""
    lat_term = -0.75 * (y - 2_500_000.0) / 111_000.0
    maritime = 0.8 * np.clip((4_700_000.0 - x) / 200_000.0, -1, 1)
    return 14.0 - 6.5 * z / 1000.0 + lat_term + maritime + 0.6 * fractal(x, y, 40_000.0, 3, 0.5, 17)


def precipitation(x: F64, y: F64, z: F64) -> F64:
    """Annual precipitation, mm: wetter uphill and to the north-east (orographic lift)."""
    base = 900.0 + 250.0 * (y - 2_450_000.0) / 200_000.0 + 150.0 * (x - 4_600_000.0) / 200_000.0
    noise = 180.0 * fractal(x, y, 50_000.0, 4, 0.5, seed=19)
    return np.maximum(base + 0.75 * z + noise, 250.0)


def landcover(x: F64, y: F64, z: F64, t: F64, p: F64) -> npt.NDArray[np.uint8]:
    """Land-cover class (see LANDCOVER_CLASSES) from altitude, climate and patchiness."""
    u = 0.5 + 0.5 * fractal(x, y, 15_000.0, 4, 0.6, seed=23)
    v = 0.5 + 0.5 * fractal(x, y, 6_000.0, 3, 0.5, seed=29)
    lc = np.full(x.shape, 2, dtype=np.uint8)  # grassland
    lc[(z < 400) & (u < 0.55)] = 1  # cropland in the lowlands
    lc[(z >= 250) & (z < 1300) & (u >= 0.45)] = 3  # broadleaf forest
    lc[(z >= 900) & (z < 2000) & (u >= 0.35)] = 4  # conifers
    lc[(t > 11.5) & (p < 1000) & (u < 0.3) & (z > 100)] = 5  # dry shrubland
    lc[(z >= 1950) | (t < 0.0)] = 6  # bare rock and ice
    lc[(z < 300) & (v > 0.78)] = 7  # towns
    lc[(z < 150) & (v < 0.2)] = 8  # wetlands
    return lc


def covariate_fields(x: F64, y: F64) -> Fields:
    """All four covariates at projected points."""
    z = elevation(x, y)
    t = temperature(x, y, z)
    p = precipitation(x, y, z)
    return {
        "elevation": z,
        "temperature": t,
        "precipitation": p,
        "landcover": landcover(x, y, z, t, p),
    }
