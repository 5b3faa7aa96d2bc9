"""Benchmark: seeding a realistic slice of an atlas, sdmatlas against gdal2tiles, and the
planner's estimate against the real seed.

    .venv/bin/python bench/seed.py [--species 100] [--zooms Z0-Z1]

* Data: the synthetic 10,000-species release of bench/tiles.py (512 x 512 px at 1 km):
  ``--species`` layers drawn at random (their real mix of wide and narrow ranges) plus
  the 7 indicators, WebMercatorQuad, by default each layer's own zoom range (up to the
  release's native zoom: the first whose pixels are as fine as the release's).
* sdmatlas: ``sdmatlas seed LAYERS --zoom Z --processes 2`` into an empty disk cache
  (the planner first: empty and uniform tiles written without rendering).
* gdal2tiles (Debian's gdal-bin): for each layer, ``gdal2tiles.py --processes=2
  --exclude -r near --xyz`` on the layer exported as a COG and coloured with the API's
  own palette beforehand, as an RGBA GeoTIFF (export and colouring not timed, which
  favours gdal2tiles); layer after layer, its wall times summed.
* Both leave out fully transparent tiles; tiles/s counts the tiles each writes. Both
  write into new folders, deleted only at the end (common.Scratch says why).
* The planner (``seed --plan``, timed) against the real seed: tiles, bytes, time.

Results go to bench/results/seed-<date>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
from cache import SEEDED, apt, env_for
from tiles import BIN, KEY, WORK, catalog_url, ensure_release

OUT = WORK / "seed"
INDICATORS = ["richness", "richness_thresholded", "rarity_weighted_richness", "shannon",
              "protected_count", "invasive_count", "endemic_count"]  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    ap = common.parser(__doc__)
    ap.add_argument("--species", type=int, default=100)
    ap.add_argument("--zooms", default=None, help="default: the layers' own range")
    return ap


def output_path(args: argparse.Namespace) -> Path:
    return common.results_file(args.results, "seed")


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, **env, "COLUMNS": "200"}
    cmd = [str(BIN / "sdmatlas"), *args]
    return subprocess.run(cmd, env=full, capture_output=True, text=True, check=True)


def ours(layers: list[str], zooms: str | None, db: str, scratch: common.Scratch) -> dict[str, Any]:
    cache_dir = scratch.folder("sdmatlas")
    env = env_for(db, cache_dir, '["disk"]')
    plan_file = scratch.root / "plan.json"
    zoom = ["--zoom", zooms] if zooms else []
    t = time.perf_counter()
    _run(["seed", *layers, *zoom, "--plan", "--plan-json", str(plan_file)], env)
    plan_s = time.perf_counter() - t
    doc = json.loads(plan_file.read_text())
    plan = doc["total"]
    zs = [row["zoom"] for row in doc["layers"]]
    t = time.perf_counter()
    out = _run(["seed", *layers, *zoom, "--processes", "2"], env)
    wall = time.perf_counter() - t
    m = SEEDED.search(" ".join(out.stderr.split()))
    assert m, out.stderr
    planned, rendered, written, _, empty = (int(v) for v in m.groups())
    files = cache_files(cache_dir)
    stored = sum(p.stat().st_size - 2 for p in files)  # less the cache entry's 2-byte header
    clear = sum(_transparent(p.read_bytes()[2:]) for p in files)
    # tiles with something to see: gdal2tiles --exclude leaves out fully transparent tiles
    # (a species at p = 0 on a whole tile fades to clear); the same count on both sides
    made = len(files) - clear
    return {
        "planned": planned,
        "rendered": rendered,
        "written_from_plan": written,
        "empty": empty,
        "uniform": plan["uniform"],
        "dense": plan["dense"],
        "transparent": clear,
        "visible": made,
        "wall_s": round(wall, 2),
        "tiles_per_s": round(made / wall, 1),
        "bytes": stored,
        "zooms": f"{min(zs)}-{max(zs)}",
        "plan": {
            **plan,
            "planner_wall_s": round(plan_s, 2),
            "estimated_wall_s": doc["wall_seconds"],  # start-up and plan + render / 2
            "estimated_overhead_s": doc["overhead_seconds"],
        },
    }


def cache_files(cache_dir: Path) -> list[Path]:
    """The tile entries of a disk cache (not the render locks in .locks/)."""
    return [
        p for p in cache_dir.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(cache_dir).parts)
    ]  # fmt: skip


def visible_in_cache(cache_dir: Path) -> tuple[int, int]:
    """(tiles, fully transparent ones) of a disk cache (entries: 2 header bytes + PNG)."""
    files = cache_files(cache_dir)
    return len(files), sum(_transparent(p.read_bytes()[2:]) for p in files)


def visible_in_folder(folder: Path) -> tuple[int, int]:
    """(tiles, fully transparent ones) of a gdal2tiles output folder."""
    pngs = list(folder.rglob("*.png"))
    return len(pngs), sum(_transparent(p.read_bytes()) for p in pngs)


def _transparent(png: bytes) -> bool:
    import io

    from PIL import Image

    alpha = Image.open(io.BytesIO(png)).convert("RGBA").getextrema()[3]
    return bool(alpha == (0, 0))


def colour(cog: Path, out: Path, kind: str, key: str, rel: Any) -> None:
    """The layer coloured as the API colours it (its default style, viridis), as an RGBA
    GeoTIFF for gdal2tiles: the API's own palette applied with numpy (gdaldem
    color-relief with a code table gave alpha 0 on every pixel of a layer tried, probably
    because it applies the band's 1/254 scale)."""
    import numpy as np
    import rasterio

    from sdmatlas.serve.tiles import render

    with rasterio.open(cog) as src:
        data, profile = src.read(1), src.profile
    if kind == "species":
        style = render.parse_style(None, None, (0.0, 1.0), render.SPECIES_FADE)
        rgba = render.code_palette(style)[data]
    else:
        info = rel.manifest.indicators[key].stats
        lo, hi = float(info.get("min") or 0.0), float(info.get("max") or 1.0)
        style = render.parse_style(None, None, (lo, hi))
        rgba = render.index_palette(style)[render.palette_indices(data.astype(np.float32), style)]
    # alpha="YES" marks band 4 as alpha (ExtraSamples); without it GDAL reads band 4 as
    # undefined, and gdal2tiles drew clear pixels opaque and kept every tile of the extent
    profile.update(driver="GTiff", count=4, dtype="uint8", nodata=None, photometric="RGB",
                   alpha="YES", compress="deflate", tiled=True, blockxsize=256,
                   blockysize=256)  # fmt: skip
    profile.pop("scales", None)
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(np.moveaxis(rgba, -1, 0))
        ci = rasterio.enums.ColorInterp
        dst.colorinterp = [ci.red, ci.green, ci.blue, ci.alpha]


def theirs(layers: list[str], zooms: str, scratch: common.Scratch) -> dict[str, Any]:
    from sdmatlas.publish.export import export_cog
    from sdmatlas.storage import open_release

    rel = open_release(WORK / "tiles" / "releases" / KEY)
    work = scratch.folder("g2t")
    total_wall, tiles, clear = 0.0, 0, 0
    for lid in layers:
        kind, key = lid.split(":")[1:]
        cog = work / f"{key}.tif"
        export_cog(rel, f"{kind}/{key}", cog)
        rgba = work / f"{key}-rgba.tif"
        colour(cog, rgba, kind, key, rel)
        out_dir = work / f"{key}-tiles"
        t = time.perf_counter()
        subprocess.run(["gdal2tiles.py", "--processes=2", "--exclude", "-z", zooms, "-w", "none",
                        "-r", "near", "--xyz", str(rgba), str(out_dir)], check=True,
                       capture_output=True)  # fmt: skip
        total_wall += time.perf_counter() - t
        n, c = visible_in_folder(out_dir)
        tiles, clear = tiles + n, clear + c  # the tiles stay until the end (common.Scratch)
    return {
        "tiles": tiles,
        "transparent": clear,  # left in despite --exclude (none expected)
        "visible": tiles - clear,
        "wall_s": round(total_wall, 2),
        "tiles_per_s": round((tiles - clear) / total_wall, 1),
    }


def main() -> None:
    args = build_parser().parse_args()
    out = output_path(args)
    apt({"gdal-bin": "gdal2tiles.py"})
    with common.Scratch(OUT) as scratch:
        results = run(args, scratch)
    print(json.dumps({k: results[k] for k in ("sdmatlas_over_gdal2tiles", "plan_over_real")}))
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


def run(args: argparse.Namespace, scratch: common.Scratch) -> dict[str, Any]:
    rel = ensure_release()
    db = catalog_url(rel)
    ids = random.Random(20).sample(range(1, 10_001), args.species)
    layers = [f"{KEY}:species:{i}" for i in sorted(ids)] + [
        f"{KEY}:indicator:{n}" for n in INDICATORS
    ]
    a = ours(layers, args.zooms, db, scratch)
    print("sdmatlas", json.dumps(a))
    b = theirs(layers, args.zooms or a["zooms"], scratch)
    print("gdal2tiles", json.dumps(b))
    results = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "layers": len(layers), "zooms": args.zooms or a["zooms"], "sdmatlas": a, "gdal2tiles": b,
        "sdmatlas_over_gdal2tiles": round(a["tiles_per_s"] / b["tiles_per_s"], 2),
        "plan_over_real": {
            "tiles": round(a["plan"]["tiles"] / a["planned"], 3),
            "bytes": round(a["plan"]["bytes"] / max(1, a["bytes"]), 3),
            "wall_s": round(a["plan"]["estimated_wall_s"] / a["wall_s"], 3),
        },
    }  # fmt: skip
    return results


if __name__ == "__main__":
    main()
