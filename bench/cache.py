"""Benchmark: cached tiles through the API against nginx serving the same bytes from
disk; seeding against gdal2tiles.

    .venv/bin/python bench/cache.py [--requests 4000] [--concurrency 8]

* Data: the synthetic 10,000-species release of bench/tiles.py, its widest species.
* Cached tiles: that layer's WebMercatorQuad tiles at zooms 5 to 10 are seeded into a
  disk cache, and the same bytes written as files ``{z}/{x}/{y}.png`` for nginx
  (Debian's nginx-light, installed with apt by this script where missing, 2 worker
  processes, sendfile, access log off). sdmatlas serves them with 2 workers and its
  memory + disk cache, warmed by one pass. The load: ``--requests`` random URLs from
  that set, through bench/loadgen.py at concurrency 8. nginx is the practical limit
  of serving bytes from disk on this machine.
* Seeding: PNG tiles of one dense layer (the densest species, drawn, p > 0, on the most
  pixels: the worst case for writing tiles from the plan), twice: of that release at
  zooms 5 to 11 (its native zoom 7 and the 4 a seed may go past it: ~1,700 tiles, where
  start-up weighs much), and of a 250 m slice of 64 species on the same square
  (bench/tiles.py ``ensure_fine_release``) at zooms 5 to 13 (~15,700 tiles), viridis,
  2 processes each, ``--seed-runs`` times (3) each, alternately, each run into a new
  folder, none deleted before the end (common.Scratch says why); medians:
  ``sdmatlas seed`` into an empty disk cache, against ``gdal2tiles.py
  --processes=2 --exclude`` (Debian's gdal-bin) on the layer exported as a COG and
  coloured with the API's own palette beforehand into an RGBA GeoTIFF (not timed, which
  favours gdal2tiles; bench/seed.py's ``colour``). tiles/s counts the tiles with
  something to see (not fully transparent) that each side wrote.

Results go to bench/results/cache-<date>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
from tiles import (
    BIN,
    KEY,
    ROOT,
    WORK,
    Server,
    catalog_url,
    densest_species,
    ensure_fine_release,
    ensure_release,
    run_load,
    widest_species,
)

OUT = WORK / "cache"
SEEDED = re.compile(
    r"seeded (\d+) tiles: (\d+) rendered, (\d+) empty or uniform written from the plan, "
    r"(\d+) already cached, (\d+) empty"
)
ZOOMS = "5-11"  # native 7 + 4 (seed refuses more): ~1,700 tiles, start-up weighs much
FINE_ZOOMS = "5-13"  # the 250 m slice: native 9 + 4, ~27,000 tiles


def apt(packages: dict[str, str]) -> None:
    """Install Debian packages whose program (value) is missing."""
    missing = [p for p, program in packages.items() if shutil.which(program) is None]
    if missing:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
                       check=True, env=env, capture_output=True)  # fmt: skip


def env_for(db: str, cache_dir: Path, cache: str) -> dict[str, str]:
    return {"SDMATLAS_DATABASE_URL": db, "SDMATLAS_DATA_DIR": str(WORK / "tiles"),
            "SDMATLAS_TILE_CACHE": cache, "SDMATLAS_TILE_CACHE_DIR": str(cache_dir),
            "SDMATLAS_LOG_FORMAT": "text"}  # fmt: skip


def seed(layer: str, zooms: str, env: dict[str, str]) -> dict[str, Any]:
    t = time.perf_counter()
    out = subprocess.run([str(BIN / "sdmatlas"), "seed", layer, "--zoom", zooms, "--processes",
                          "2"], env={**os.environ, **env, "COLUMNS": "200"},
                         capture_output=True, text=True, check=True)  # fmt: skip
    wall = time.perf_counter() - t
    m = SEEDED.search(" ".join(out.stderr.split()))
    assert m, out.stderr
    planned, rendered, written, _, empty = (int(v) for v in m.groups())
    made = rendered + written  # written: empty or uniform tiles from the planner, unrendered
    rate = round((made - empty) / wall, 1)
    return {"planned": planned, "rendered": rendered, "from_plan": written, "empty": empty,
            "wall_s": round(wall, 2), "non_empty_tiles_per_s": rate}  # fmt: skip


def cached_vs_nginx(db: str, layer: str, n: int, conc: int) -> dict[str, Any]:
    cache_dir = OUT / "served-cache"
    shutil.rmtree(cache_dir, ignore_errors=True)
    env = env_for(db, cache_dir, '["memory", "disk"]')
    seeded = seed(layer, "5-10", env)
    www = OUT / "www"
    shutil.rmtree(www, ignore_errors=True)
    port = 8831
    base = f"http://127.0.0.1:{port}"
    srv = Server([str(BIN / "sdmatlas"), "serve", "--port", str(port), "--workers", "2"], env,
                 f"{base}/health", ROOT)  # fmt: skip
    try:
        # the tiles with data, as files for nginx (the same bytes the API serves)
        import morecantile

        paths = []
        tms_url = f"/tiles/{layer}/WebMercatorQuad"
        box = widest_species(WORK / "tiles" / "releases" / KEY, 1)[1]
        tms = morecantile.tms.get("WebMercatorQuad")
        for t in tms.tiles(*box, list(range(5, 11))):
            paths.append(f"{t.z}/{t.x}/{t.y}.png")
        kept = []
        for rel in paths:
            with urllib.request.urlopen(f"{base}{tms_url}/{rel}") as r:
                if r.headers.get("X-Tile-Empty") == "true":
                    continue
                f = www / rel
                f.parent.mkdir(parents=True, exist_ok=True)
                f.write_bytes(r.read())
                kept.append(rel)
        rng = random.Random(5)
        sample = [rng.choice(kept) for _ in range(n)]
        ours = run_load([f"{base}{tms_url}/{r}" for r in sample], conc)
    finally:
        srv.stop()
    conf = OUT / "nginx.conf"
    conf.write_text(f"""worker_processes 2;
pid {OUT}/nginx.pid;
error_log {OUT}/nginx-error.log;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 100000;
  types {{ image/png png; }}
  server {{ listen 127.0.0.1:8832; root {www}; }}
}}
""")
    nginx = subprocess.Popen(["nginx", "-c", str(conf), "-g", "daemon off;"])
    try:
        time.sleep(1.0)
        theirs = run_load([f"http://127.0.0.1:8832/{r}" for r in sample], conc)
    finally:
        nginx.terminate()
        nginx.wait(10)
    ratio = round(ours["tiles_per_s"] / theirs["tiles_per_s"], 2)
    return {"seeded": seeded, "distinct_tiles": len(kept), "sdmatlas": ours, "nginx": theirs,
            "sdmatlas_over_nginx": ratio}  # fmt: skip


def seeding_vs_gdal2tiles(
    db: str, rel: Path, sid: int, zooms: str, runs: int, scratch: common.Scratch
) -> dict[str, Any]:
    """``runs`` seeds of one layer on each side, alternately, each into a new folder
    (:class:`common.Scratch`: none deleted before the benchmark ends); medians."""
    from sdmatlas.publish.export import export_cog
    from sdmatlas.storage import open_release
    from seed import colour, visible_in_cache, visible_in_folder  # (bench/seed.py imports us)

    opened = open_release(rel)
    layer = f"{opened.manifest.release_id}:species:{sid}"
    work = scratch.folder("g2t-input")
    cog = work / "layer.tif"
    export_cog(opened, f"species/{sid}", cog)
    # coloured with the API's own palette (the gdaldem color-relief recipe used before gave
    # alpha 0 on every pixel: it did not match the codes), as bench/seed.py does
    rgba = work / "rgba.tif"
    colour(cog, rgba, "species", str(sid), opened)
    mine: list[dict[str, Any]] = []
    theirs: list[dict[str, Any]] = []
    for _ in range(runs):
        cache_dir = scratch.folder("sdmatlas")
        run = seed(layer, zooms, env_for(db, cache_dir, '["disk"]'))
        # tiles with something to see, on both sides (gdal2tiles --exclude leaves out fully
        # transparent tiles: a species at p = 0 on a whole tile fades to clear)
        n, clear = visible_in_cache(cache_dir)
        mine.append(run | {"tiles": n, "transparent": clear, "visible": n - clear})
        out_dir = scratch.folder("gdal2tiles") / "tiles"
        t = time.perf_counter()
        subprocess.run(["gdal2tiles.py", "--processes=2", "--exclude", "-z", zooms, "-w", "none",
                        "-r", "near", "--xyz", str(rgba), str(out_dir)], check=True,
                       capture_output=True)  # fmt: skip
        wall = time.perf_counter() - t
        n, clear = visible_in_folder(out_dir)
        theirs.append({"tiles": n, "transparent": clear, "visible": n - clear, "wall_s": wall})
    ours_s, theirs_s = (common.median([r["wall_s"] for r in rs]) for rs in (mine, theirs))
    a = mine[-1] | {"wall_s": round(ours_s, 2), "runs_wall_s": [r["wall_s"] for r in mine],
                    "tiles_per_s": round(mine[-1]["visible"] / ours_s, 1)}  # fmt: skip
    b = theirs[-1] | {"wall_s": round(theirs_s, 2),
                      "runs_wall_s": [round(r["wall_s"], 2) for r in theirs],
                      "tiles_per_s": round(theirs[-1]["visible"] / theirs_s, 1)}  # fmt: skip
    return {"layer": layer, "zooms": zooms, "runs": runs, "sdmatlas": a, "gdal2tiles": b,
            "sdmatlas_over_gdal2tiles": round(a["tiles_per_s"] / b["tiles_per_s"], 2)}  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    ap = common.parser(__doc__)
    ap.add_argument("--requests", type=int, default=4000)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--part", choices=["all", "cached", "seeding"], default="all")
    ap.add_argument("--seed-runs", type=int, default=3, help="seeds of each layer, each side")
    return ap


def output_path(args: argparse.Namespace) -> Path:
    return common.results_file(args.results, f"cache-{args.part}")


def main() -> None:
    args = build_parser().parse_args()
    out = output_path(args)
    apt({"nginx-light": "nginx", "gdal-bin": "gdal2tiles.py"})
    OUT.mkdir(parents=True, exist_ok=True)
    rel = ensure_release()
    db = catalog_url(rel)
    sid = widest_species(rel, 1)[0][0]
    layer = f"{KEY}:species:{sid}"
    results: dict[str, Any] = {
        "date": dt.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "layer": layer,
    }
    if args.part in ("all", "cached"):
        results["cached"] = c = cached_vs_nginx(db, layer, args.requests, args.concurrency)
        print(f"cached tiles: sdmatlas {c['sdmatlas']['tiles_per_s']}/s (p50 "
          f"{c['sdmatlas']['p50_ms']} ms), nginx {c['nginx']['tiles_per_s']}/s (p50 "
          f"{c['nginx']['p50_ms']} ms): {c['sdmatlas_over_nginx']} of nginx")  # fmt: skip
    if args.part in ("all", "seeding"):
        fine = ensure_fine_release()
        fine_db = catalog_url(fine, OUT / "fine-catalog.sqlite")
        with common.Scratch(OUT / "seeding") as scratch:
            results["seeding"] = [  # the densest species of each: drawn on ~70 % of the land
                seeding_vs_gdal2tiles(url, r, densest_species(r), zooms, args.seed_runs, scratch)
                for url, r, zooms in ((db, rel, ZOOMS), (fine_db, fine, FINE_ZOOMS))
            ]
        for s in results["seeding"]:
            print(f"seeding {s['layer']} z{s['zooms']}: sdmatlas {s['sdmatlas']['tiles_per_s']} "
                  f"tiles/s, gdal2tiles {s['gdal2tiles']['tiles_per_s']} tiles/s: "
                  f"{s['sdmatlas_over_gdal2tiles']}x")  # fmt: skip
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results in {out}")


if __name__ == "__main__":
    main()
