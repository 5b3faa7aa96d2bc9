"""Benchmark: area reports from a park to a country, at 10,000 species.

    .venv/bin/python bench/areas.py [--n 5] [--naive-species 50]

Data. The synthetic 10,000-species release of bench/tiles.py (512 x 512 pixels,
realistic sparsity; published once and cached under data/bench/tiles/) is tiled 4 x 4 into a
2048 x 2048 release: its chunk files (level 0, the pixel-major copy, the territory, the
indicators and the edge-8 block aggregates) are hard-linked at their new positions, and
the aggregates of edges 64 and 512 are rebuilt from the tiled edge-8 ones by publish's
own tree pass. Every chunk is a real published chunk, so per-chunk costs are those of a
2048 x 2048 publication; species ranges repeat every 512 pixels (publishing 2048 x 2048
x 10,000 for real takes about 90 minutes on 2 cores, see docs/publish.md).

Shapes (in the grid's CRS):

* disc: 40,000 pixels (radius 113 px), at several places;
* park: a concave outline (two harmonics) of about 500,000 pixels with a hole;
* country: Australia's Natural Earth 1:10m outline (9,455 vertices, world-atlas 2.0.2
  from npm, real), scaled onto the grid (x and y apart) to cover about 57 % of it. The
  European outlines have under 5,000 vertices at 1:10m (France 3,097 for its mainland).

Methods, on the same shapes, in one run:

* hierarchical: sdmatlas today (:func:`sdmatlas.publish.queries.area`);
* flat: the previous method, reproduced below: the polygon's bounding box rasterised,
  8 x 8 aggregates read over the whole box, pixel chunks read through zarr-python for
  the blocks its outline cuts;
* naive: the species-major read of the box (level 0, every species), timed on
  ``--naive-species`` species and scaled to 10,000 (one read per species: linear).

Also: the stored territory report through HTTP (``GET /report?territory=``) from a real
``sdmatlas serve`` on the 512 x 512 release: the first request computes and stores it,
the next ones are answered from the catalog.

Results: bench/results/areas-<date>.json (medians, p90, and ratios).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pyogrio
import shapely
import zarr
from pyproj import Transformer
from shapely.geometry import Point, Polygon, mapping
from shapely.geometry.base import BaseGeometry

from sdmatlas.grid import Grid
from sdmatlas.publish import aggregates, queries
from sdmatlas.publish.cover import cover, pixel_mask
from sdmatlas.quantize import SCALE
from sdmatlas.testing.releases import release_group
from sdmatlas.zarr_access import array, sdmatlas_attrs

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
from tiles import KEY, Server, ensure_release

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def build_parser() -> argparse.ArgumentParser:
    ap = common.parser(__doc__)
    ap.add_argument("--n", type=int, default=5, help="repetitions per shape (hierarchical)")
    ap.add_argument("--naive-species", type=int, default=50,
                    help="species the naive read is timed on (scaled to all)")  # fmt: skip
    ap.add_argument("--tiles", type=int, default=4, help="tiling factor of the 512 release")
    return ap


def output_path(args: argparse.Namespace) -> Path:
    return common.results_file(args.results, "areas")


# -- data ----------------------------------------------------------------------------------------


def _tile_array(src: Path, dst: Path, axes: tuple[int, int], k: int) -> None:
    """Array ``src`` tiled k x k along ``axes`` into ``dst``, chunk files hard-linked."""
    meta = json.loads((src / "zarr.json").read_text())
    shape = list(meta["shape"])
    chunks = meta["chunk_grid"]["configuration"]["chunk_shape"]
    n = [shape[a] // chunks[a] for a in axes]
    if any(shape[a] % chunks[a] for a in axes):
        raise SystemExit(f"{src}: shape {shape} is not a whole number of chunks {chunks}")
    for a in axes:
        shape[a] *= k
    dst.mkdir(parents=True)
    (dst / "zarr.json").write_text(json.dumps({**meta, "shape": shape}))
    for f in (src / "c").rglob("*"):
        if not f.is_file():
            continue
        coords = [int(p) for p in f.relative_to(src / "c").parts]
        for ty in range(k):
            for tx in range(k):
                c = list(coords)
                c[axes[0]] += ty * n[0]
                c[axes[1]] += tx * n[1]
                target = dst / "c" / Path(*map(str, c))
                target.parent.mkdir(parents=True, exist_ok=True)
                os.link(f, target)


def tiled_release(src: Path, k: int) -> Path:
    """The release ``src`` tiled k x k (see the module's docstring); cached."""
    dst = src.parent / f"{src.name}-tiled{k}"
    published = sdmatlas_attrs(release_group(src))["published"]
    if (dst / "zarr.json").exists():
        made = json.loads((dst / "zarr.json").read_text())["attributes"]["sdmatlas"]
        if made.get("tiled_from", {}).get("published") == published:
            return dst
        shutil.rmtree(dst)  # tiled from an older publication: tiled again
    tmp = src.parent / f".{dst.name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    g = release_group(src)
    meta = sdmatlas_attrs(g)
    grid = Grid.model_validate(meta["grid"])
    h, w = grid.height * k, grid.width * k
    names = list(meta["indicator_order"])
    arrays: dict[str, tuple[int, int]] = {
        "pixels": (0, 1), "territory": (0, 1), "levels/0/probability": (1, 2),
        **{f"levels/0/{n}": (0, 1) for n in names},
        **{f"blocks/8/{n}": (0, 1) for n in aggregates.NAMES},
    }  # fmt: skip
    root = zarr.open_group(tmp, mode="w")
    for p in ("levels", "levels/0", "blocks", "blocks/8"):
        root.require_group(p)
    for path, axes in arrays.items():
        _tile_array(src / path, tmp / path, axes, k)
    shutil.copytree(src / "species", tmp / "species")
    aggregates.create(root, h, w, array(g, "species").shape[0], len(names),
                      edges=aggregates.EDGES[1:])  # fmt: skip
    aggregates.build_tree(zarr.open_group(tmp, mode="r+"), h, w)
    tiled_grid = grid.model_copy(update={"width": w, "height": h})
    root = zarr.open_group(tmp, mode="r+")
    root.attrs["sdmatlas"] = {**meta, "grid": tiled_grid.model_dump(), "levels": 1,
                              "release_id": dst.name,
                              "tiled_from": {"release": str(src), "k": k,
                                             "published": published}}  # fmt: skip
    tmp.rename(dst)
    return dst


def australia() -> Polygon:
    """Australia's mainland outline (Natural Earth 1:10m via world-atlas 2.0.2), lon/lat."""
    cached = ROOT / "data" / "bench" / "countries-10m.json"
    if not cached.exists():
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(["npm", "pack", "world-atlas@2.0.2", "--silent"], cwd=tmp,
                           check=True, stdout=subprocess.DEVNULL)  # fmt: skip
            with tarfile.open(Path(tmp) / "world-atlas-2.0.2.tgz") as tar:
                tar.extractall(tmp, filter="data")
            shutil.copy(Path(tmp) / "package" / "countries-10m.json", cached)
    _, _, geoms, (_ids, names) = pyogrio.raw.read(cached, layer="countries")
    for wkb, name in zip(geoms, names, strict=True):
        if name == "Australia":
            g = shapely.from_wkb(wkb)
            return max(g.geoms, key=lambda p: p.area)
    raise SystemExit("Australia is not in countries-10m.json")


def shapes(grid: Grid, rng: np.random.Generator, n: int) -> dict[str, list[BaseGeometry]]:
    res = grid.res
    cx, cy = grid.x0 + grid.width * res / 2, grid.y0 - grid.height * res / 2
    # discs of 40,000 px at random places inside the grid
    discs = []
    for _ in range(n):
        x = grid.x0 + rng.uniform(150, grid.width - 150) * res
        y = grid.y0 - rng.uniform(150, grid.height - 150) * res
        discs.append(Point(x, y).buffer(res * np.sqrt(40_000 / np.pi), quad_segs=32))
    # a concave park with a hole: about 500,000 px
    parks = []
    for _ in range(n):
        x, y = cx + rng.uniform(-400, 400) * res, cy + rng.uniform(-400, 400) * res
        t = np.linspace(0, 2 * np.pi, 720, endpoint=False)
        r = 410 * res * (1 + 0.28 * np.sin(3 * t + rng.uniform(0, 6)) + 0.06 * np.sin(17 * t))
        outer = Polygon(np.column_stack([x + r * np.cos(t), y + r * np.sin(t)]))
        parks.append(outer.difference(Point(x, y).buffer(90 * res)))
    # the country: Australia scaled onto the grid (equal axes), at a few offsets
    land = australia()
    to_eq = Transformer.from_crs(4326, "ESRI:102022", always_xy=True)  # Africa Albers: any
    land = shapely.transform(land, lambda xy: np.column_stack(to_eq.transform(xy[:, 0], xy[:, 1])))
    x0, y0, x1, y1 = land.bounds
    # x and y scaled apart, so that the outline fills the square grid (about 57 % of it)
    sx = 0.97 * grid.width * res / (x1 - x0)
    sy = 0.97 * grid.height * res / (y1 - y0)
    countries = []
    for _ in range(n):
        dx, dy = rng.uniform(-10, 10, 2) * res
        countries.append(shapely.affinity.affine_transform(land, [
            sx, 0, 0, sy, cx + dx - sx * (x0 + x1) / 2, cy + dy - sy * (y0 + y1) / 2,
        ]))  # fmt: skip
    return {"disc": discs, "park": parks, "country": countries}


# -- the methods ---------------------------------------------------------------------------------


def area_flat(release: zarr.Group, geom: BaseGeometry) -> tuple[int, np.ndarray]:
    """The previous sdmatlas method (one level of 8 x 8 aggregates), on today's layout:
    (pixels, summed codes per species)."""
    grid = Grid.model_validate(sdmatlas_attrs(release)["grid"])
    block = 8
    mask, r0, c0 = pixel_mask(grid, geom)
    r1, c1 = r0 + mask.shape[0], c0 + mask.shape[1]
    s = array(release, "species").shape[0]
    br0, bc0 = r0 // block, c0 // block
    br1, bc1 = -(-r1 // block), -(-c1 // block)
    R0, C0 = br0 * block, bc0 * block
    R1, C1 = min(br1 * block, grid.height), min(bc1 * block, grid.width)
    inside = np.zeros((br1 * block - R0, bc1 * block - C0), bool)
    inside[r0 - R0 : r1 - R0, c0 - C0 : c1 - C0] = mask
    valid = np.zeros_like(inside)
    valid[: R1 - R0, : C1 - C0] = np.asarray(array(release, "territory")[R0:R1, C0:C1]) == 1
    sel = inside & valid
    nb_y, nb_x = br1 - br0, bc1 - bc0
    sel_b = sel.reshape(nb_y, block, nb_x, block)
    n_sel = sel_b.sum(axis=(1, 3))
    full = (n_sel > 0) & (n_sel == valid.reshape(nb_y, block, nb_x, block).sum(axis=(1, 3)))
    partial = (n_sel > 0) & ~full
    total = np.zeros(s, np.float64)
    vmax = np.zeros(s, np.int64)
    if full.any():
        bsum = np.asarray(array(release, "blocks/8/sum")[br0:br1, bc0:bc1, :])
        bmax = np.asarray(array(release, "blocks/8/max")[br0:br1, bc0:bc1, :])
        total += bsum[full].sum(axis=0, dtype=np.float64)
        vmax = np.maximum(vmax, bmax[full].max(axis=0))
    pixels = array(release, "pixels")
    for by, bx in zip(*np.nonzero(partial), strict=True):
        y0, x0 = R0 + by * block, C0 + bx * block
        y1, x1 = min(y0 + block, grid.height), min(x0 + block, grid.width)
        codes = np.asarray(pixels[y0:y1, x0:x1, :])
        picked = codes[sel_b[by, : y1 - y0, bx, : x1 - x0]].astype(np.int64)
        total += picked.sum(axis=0)
        vmax = np.maximum(vmax, picked.max(axis=0))
    return int(n_sel.sum()), total


def area_naive(release: zarr.Group, geom: BaseGeometry, n_species: int) -> tuple[float, int]:
    """Seconds to read the box of ``n_species`` species from the species-major level 0
    and sum them over the area; (seconds, pixels)."""
    grid = Grid.model_validate(sdmatlas_attrs(release)["grid"])
    mask, r0, c0 = pixel_mask(grid, geom)
    prob = array(release, "levels/0/probability")
    t = time.perf_counter()
    window = np.asarray(prob[:n_species, r0 : r0 + mask.shape[0], c0 : c0 + mask.shape[1]])
    sel = mask & (window[0] != 255)
    _ = window[:, sel].astype(np.float64).sum(axis=1) * SCALE
    return time.perf_counter() - t, int(sel.sum())


def pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 1)


def measure(release: zarr.Group, geoms: dict[str, list[BaseGeometry]], args: argparse.Namespace,
            n_species: int) -> dict[str, Any]:  # fmt: skip
    grid = Grid.model_validate(sdmatlas_attrs(release)["grid"])
    out: dict[str, Any] = {}
    flat_runs = {"disc": args.n, "park": max(2, args.n // 2), "country": 2}
    for kind, polys in geoms.items():
        hier_ms, flat_ms, naive_ms, info = [], [], [], []
        queries.area(release, polys[0])  # warm the OS page cache, as a served release is
        for geom in polys:
            plan = cover(grid, geom)
            t = time.perf_counter()
            got = queries.area(release, geom)  # timed whole: the cover included
            hier_ms.append((time.perf_counter() - t) * 1000)
            _, cut = plan.fine_counts()
            info.append(
                {
                    "pixels": got.n_pixels,
                    "pixels_exact": got.pixels_exact,
                    "grid_share": round(
                        float(pixel_mask(grid, geom)[0].sum()) / grid.width / grid.height, 3
                    ),
                    "vertices": int(shapely.get_num_coordinates(geom)),
                    "blocks_from_aggregates": {str(e): n for e, n in got.blocks_aggregated.items()},
                    "pixel_chunks_read": got.blocks_read,
                    "cut_8_blocks_by_geometry": cut,
                    "boundary_64_blocks": len(plan.boundary),
                }
            )
        for geom in polys[: flat_runs[kind]]:
            t = time.perf_counter()
            n, total = area_flat(release, geom)
            flat_ms.append((time.perf_counter() - t) * 1000)
            got = queries.area(release, geom)
            assert n == got.n_pixels, (kind, n, got.n_pixels)
            np.testing.assert_allclose(got.mean_probability * n, total * SCALE, rtol=1e-9)
        for geom in polys[:1]:
            secs, n = area_naive(release, geom, args.naive_species)
            naive_ms.append(secs * 1000 * n_species / args.naive_species)
        out[kind] = {
            "hierarchical_ms": {"p50": pct(hier_ms, 50), "p90": pct(hier_ms, 90)},
            "flat_ms": {"p50": pct(flat_ms, 50), "runs": len(flat_ms)},
            "naive_ms_extrapolated": {
                "p50": pct(naive_ms, 50),
                "timed_on_species": args.naive_species,
            },
            "flat_over_hierarchical": round(np.median(flat_ms) / np.median(hier_ms), 1),
            "naive_over_hierarchical": round(np.median(naive_ms) / np.median(hier_ms), 1),
            "shapes": info,
        }
        print(kind, json.dumps(out[kind]["hierarchical_ms"]), "flat",
              out[kind]["flat_ms"]["p50"], file=sys.stderr)  # fmt: skip
    return out


def stored_report_over_http(rel: Path) -> dict[str, Any]:
    """p50 of GET /report?territory= answered from the catalog (real server, real HTTP)."""
    from sdmatlas.catalog.db import Catalog
    from sdmatlas.catalog.imports import import_territories
    from sdmatlas.catalog.register import register_release

    g = release_group(rel)
    grid = Grid.model_validate(sdmatlas_attrs(g)["grid"])
    tmp = Path(tempfile.mkdtemp(prefix="sdm-areas-"))
    db = f"sqlite:///{tmp / 'catalog.sqlite'}"
    catalog = Catalog(db)
    catalog.upgrade()
    to_ll = Transformer.from_crs(grid.crs, 4326, always_xy=True)
    cx, cy = grid.x0 + 256 * grid.res, grid.y0 - 256 * grid.res
    park = Point(cx, cy).buffer(150 * grid.res, quad_segs=64)
    ll = shapely.transform(park, lambda xy: np.column_stack(to_ll.transform(xy[:, 0], xy[:, 1])))
    (tmp / "t.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": mapping(ll),
         "properties": {"code": "PARK", "name": "park", "level": "protected_area"}}]}))  # fmt: skip
    import_territories(catalog, tmp / "t.geojson")
    register_release(catalog, g, str(rel), "2020")
    catalog.dispose()
    port = 8811
    base = f"http://127.0.0.1:{port}"
    env = {"SDMATLAS_DATABASE_URL": db, "SDMATLAS_DATA_DIR": str(tmp), "SDMATLAS_TILE_CACHE": "[]"}
    srv = Server([str(BIN / "sdmatlas"), "serve", "--port", str(port), "--workers", "1"], env,
                 f"{base}/health", ROOT)  # fmt: skip
    try:
        url = f"{base}/report?territory=PARK&release={KEY}"
        t = time.perf_counter()
        with urllib.request.urlopen(url, timeout=300) as r:
            first_ms, first = (time.perf_counter() - t) * 1000, r.headers["X-Report"]
            size = len(r.read())
        ms = []
        for _ in range(40):
            t = time.perf_counter()
            with urllib.request.urlopen(url, timeout=60) as r:
                r.read()
                assert r.headers["X-Report"] == "stored"
            ms.append((time.perf_counter() - t) * 1000)
    finally:
        srv.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return {"first_ms": round(first_ms, 1), "first": first, "stored_p50_ms": pct(ms, 50),
            "stored_p90_ms": pct(ms, 90), "bytes": size}  # fmt: skip


def main() -> None:
    args = build_parser().parse_args()
    out = output_path(args)
    small = ensure_release()
    t = time.perf_counter()
    big = tiled_release(small, args.tiles)
    tile_s = time.perf_counter() - t
    release = release_group(big)
    grid = Grid.model_validate(sdmatlas_attrs(release)["grid"])
    n_species = array(release, "species").shape[0]
    geoms = shapes(grid, np.random.default_rng(3), args.n)
    result: dict[str, Any] = {
        "date": dt.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "release": f"{grid.width} x {grid.height} px, {n_species} species "
        f"(the 512 x 512 synthetic release tiled {args.tiles} x {args.tiles})",
        "territory_pixels": int((np.asarray(array(release, "territory")[:]) == 1).sum()),
        "tiling_s": round(tile_s, 1),
        "shapes": measure(release, geoms, args, n_species),
        "stored_territory_report": stored_report_over_http(small),
    }
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
