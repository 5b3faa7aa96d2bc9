"""Benchmark: WMS GetMap (512 x 512, EPSG:3857 and EPSG:4326) against the XYZ tile path
over the same areas, at 10,000 species.

    .venv/bin/python bench/ogc.py [--windows 100] [--concurrency 8]

* Data and layers: those of bench/tiles.py (the synthetic 10,000-species release,
  the 10 species with the widest ranges), catalogued in their own SQLite catalog.
* Areas: ``--windows`` blocks of 2 x 2 WebMercatorQuad tiles at zooms 6 to 11 over
  the layers, each for every species, shuffled. Each block is asked for three ways,
  each on a freshly started server (2 workers, nothing cached):
  - XYZ: its four 256 x 256 tiles (PNG, viridis);
  - WMS 1.3.0 GetMap in EPSG:3857, the block's bbox at 512 x 512 (PNG, viridis);
  - WMS 1.3.0 GetMap in EPSG:4326, the block's lon/lat box (lat/lon axis order) at
    512 x 512, which is a different, reprojected image of the same area.
* Reported: requests/s, megapixels/s, p50 and p99 per request, and the XYZ path's
  megapixels/s over each GetMap's (the factor GetMap is behind the tiles).

The load generator (bench/loadgen.py) shares the 2 cores with the server. Results go to
bench/results/ogc-<date>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import sys
from pathlib import Path
from typing import Any

import morecantile

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
from tiles import (
    BIN,
    KEY,
    ROOT,
    WORK,
    Server,
    catalog_url,
    ensure_release,
    run_load,
    warm,
    widest_species,
)

Window = tuple[int, int, int, int]  # species, z, x, y of the block's top-left tile


def windows(box: tuple[float, float, float, float], n: int, sids: list[int]) -> list[Window]:
    tms = morecantile.tms.get("WebMercatorQuad")
    tops = [t for t in tms.tiles(*box, list(range(6, 12))) if t.x % 2 == 0 and t.y % 2 == 0]
    random.Random(11).shuffle(tops)
    jobs = [(s, t.z, t.x, t.y) for t in tops[:n] for s in sids]
    random.Random(12).shuffle(jobs)
    return jobs


def urls(base: str, jobs: list[Window], mode: str) -> list[str]:
    tms = morecantile.tms.get("WebMercatorQuad")
    out = []
    for s, z, x, y in jobs:
        layer = f"{KEY}:species:{s}"
        if mode == "xyz":
            out += [f"{base}/tiles/{layer}/WebMercatorQuad/{z}/{x + dx}/{y + dy}.png"
                    "?colormap=viridis" for dy in (0, 1) for dx in (0, 1)]  # fmt: skip
            continue
        tl = morecantile.Tile(x, y, z)
        br = morecantile.Tile(x + 1, y + 1, z)
        if mode == "wms3857":
            a, b = tms.xy_bounds(tl), tms.xy_bounds(br)
            crs, bbox = "EPSG:3857", (a.left, b.bottom, b.right, a.top)
        else:
            a, b = tms.bounds(tl), tms.bounds(br)
            crs, bbox = "EPSG:4326", (b.bottom, a.left, a.top, b.right)  # lat/lon in 1.3.0
        out.append(f"{base}/wms?SERVICE=WMS&VERSION=1.3.0&REQUEST=GetMap&LAYERS={layer}"
                   f"&STYLES=viridis&CRS={crs}&BBOX={','.join(map(repr, bbox))}&WIDTH=512"
                   "&HEIGHT=512&FORMAT=image/png&TRANSPARENT=TRUE")  # fmt: skip
    return out


def run(db: str, jobs: list[Window], warmups: list[Window], mode: str, conc: int) -> dict[str, Any]:
    port = 8811
    base = f"http://127.0.0.1:{port}"
    # rendering measured: no tile cache (a disk cache would keep tiles between runs)
    env = {"SDMATLAS_DATABASE_URL": db, "SDMATLAS_DATA_DIR": str(WORK / "tiles"),
           "SDMATLAS_TILE_CACHE": "[]"}  # fmt: skip
    srv = Server([str(BIN / "sdmatlas"), "serve", "--port", str(port), "--workers", "2"], env,
                 f"{base}/health", ROOT)  # fmt: skip
    try:
        warm("", urls(base, warmups, mode))
        r = run_load(urls(base, jobs, mode), conc)
    finally:
        srv.stop()
    px = 256 * 256 if mode == "xyz" else 512 * 512
    r["requests_per_s"] = r.pop("tiles_per_s")
    r["megapixels_per_s"] = round(r["requests_per_s"] * px / 1e6, 2)
    return r


def build_parser() -> argparse.ArgumentParser:
    ap = common.parser(__doc__)
    ap.add_argument("--windows", type=int, default=100)
    ap.add_argument("--species", type=int, default=10)
    ap.add_argument("--concurrency", type=int, default=8)
    return ap


def output_path(args: argparse.Namespace) -> Path:
    return common.results_file(args.results, "ogc")


def main() -> None:
    args = build_parser().parse_args()
    out = output_path(args)
    rel = ensure_release()
    db = catalog_url(rel)
    sids, box = widest_species(rel, args.species)
    jobs = windows(box, args.windows, sids)
    tms = morecantile.tms.get("WebMercatorQuad")
    warmups = [(s, 4, t.x, t.y) for s in sids[:2] for t in list(tms.tiles(*box, [4]))[:1]]
    results: dict[str, Any] = {
        "date": dt.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "windows": len(jobs),
        "concurrency": args.concurrency,
        "modes": {},
    }
    for mode in ["xyz", "wms3857", "wms4326"]:
        results["modes"][mode] = r = run(db, jobs, warmups, mode, args.concurrency)
        print(
            f"{mode:8s} {r['requests_per_s']:8.1f} req/s  {r['megapixels_per_s']:6.2f} Mpx/s"
            f"  p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms  {r['statuses']}"
        )
    xyz = results["modes"]["xyz"]["megapixels_per_s"]
    for mode in ["wms3857", "wms4326"]:
        m = results["modes"][mode]
        m["xyz_over_this"] = (
            round(xyz / m["megapixels_per_s"], 2) if m["megapixels_per_s"] else None
        )
        print(f"XYZ moves {m['xyz_over_this']}x the pixels/s of {mode}")
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results in {out}")


if __name__ == "__main__":
    main()
