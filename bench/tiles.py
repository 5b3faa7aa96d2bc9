"""Benchmark: uncached map tiles from sdmatlas, TiTiler and Terracotta; point and area
queries through HTTP at 10,000 species.

    .venv/bin/python bench/tiles.py [--tiles 400] [--concurrency 8] [--skip-peers]

* Data: the synthetic 10,000-species release of bench/queries.py (512 x 512 px at
  1 km, EPSG:3035), published again here if it predates layer statistics, and
  catalogued in a SQLite catalog of its own. The 10 species with the widest ranges
  are the layers served; each is exported as a COG (with overviews) for the peers.
* Peers: TiTiler (titiler.application under uvicorn) and Terracotta (under
  gunicorn), each installed by this script into its own virtual environment under
  data/bench/venvs/ (from the package registry).
* Same for all: 2 worker processes, the viridis colormap over p = 0..1 (codes
  0..254), PNG, the same list of requests: 400 WebMercatorQuad tiles at zooms 5 to
  11 over the layers, for each of the 10 species, shuffled, each requested once by
  bench/loadgen.py in a separate process at concurrency 8. Each server is started
  fresh and warmed on zoom-4 tiles outside the list, so every listed tile is
  rendered, not served from a tile cache.
* Then, on sdmatlas only: the same list again (the in-process chunk and index caches
  warm), and /point and /report p50 over HTTP at 10,000 species.

The machine has 2 cores, shared by the servers and the load generator; the figures
are ratios on the same machine, not absolute capacities. Results go to
bench/results/tiles-<date>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import morecantile
import numpy as np
from pyproj import Transformer

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "data" / "bench"
BIN = Path(sys.executable).parent
KEY = "bench-tiles"
FINE_KEY = "bench-fine"
PEERS = {
    "titiler": ["titiler.application", "uvicorn"],
    "terracotta": ["terracotta", "gunicorn"],
}


def _current(rel: Path) -> bool:
    from sdmatlas.release import FORMAT_VERSION

    try:
        meta = json.loads((rel / "zarr.json").read_text())["attributes"]["sdmatlas"]
    except (OSError, KeyError, ValueError):
        return False
    return bool(meta.get("format_version") == FORMAT_VERSION)


def ensure_release() -> Path:
    """The synthetic 512 x 512 x 10,000 release, published once (again after a format
    change); bench/ogc.py, bench/cache.py and bench/areas.py use it too."""
    from sdmatlas.predict.cube import is_cube, open_cube
    from sdmatlas.publish.release import publish
    from sdmatlas.publish.species_csv import species_info_from_csv
    from sdmatlas.testing.synthetic import write_synthetic_cube

    cube = WORK / "synthetic-10000x512" / "cube.zarr"
    if not is_cube(cube):
        shutil.rmtree(cube, ignore_errors=True)
        write_synthetic_cube(cube, n_species=10_000, size=512)
    rel = WORK / "tiles" / "releases" / KEY
    if not _current(rel):  # missing, or published by an sdmatlas of another format
        shutil.rmtree(rel, ignore_errors=True)
        print("publishing the 10,000-species release (about 6 minutes on 2 cores)")
        ids = open_cube(cube).species_ids
        publish(cube, rel.parent, KEY, species_info_from_csv(None, ids))
    return rel


def ensure_fine_release() -> Path:
    """A finer slice: 64 synthetic species on the same 512 km square at 250 m (2048 x 2048
    px, native WebMercatorQuad zoom 9), published once; bench/cache.py seeds a dense
    layer of it, a seed large enough (z5-13: ~27,000 tiles) for start-up not to dominate."""
    from sdmatlas.predict.cube import is_cube, open_cube
    from sdmatlas.publish.release import publish
    from sdmatlas.publish.species_csv import species_info_from_csv
    from sdmatlas.testing.synthetic import write_synthetic_cube

    cube = WORK / "synthetic-64x2048" / "cube.zarr"
    if not is_cube(cube):
        shutil.rmtree(cube, ignore_errors=True)
        write_synthetic_cube(cube, n_species=64, size=2048, res=250.0)
    rel = WORK / "fine" / "releases" / FINE_KEY
    if not _current(rel):
        shutil.rmtree(rel, ignore_errors=True)
        print("publishing the 64-species 250 m release (about a minute on 2 cores)")
        ids = open_cube(cube).species_ids
        publish(cube, rel.parent, FINE_KEY, species_info_from_csv(None, ids))
    return rel


def catalog_url(rel: Path, db: Path | None = None) -> str:
    """A new SQLite catalog (``db``, default the tiles benchmark's) with ``rel`` in it."""
    from sdmatlas.catalog.db import Catalog
    from sdmatlas.catalog.register import register_release
    from sdmatlas.storage import open_release

    db = db or WORK / "tiles" / "catalog.sqlite"
    db.unlink(missing_ok=True)
    url = f"sqlite:///{db}"
    c = Catalog(url)
    c.upgrade()
    register_release(c, open_release(rel), str(rel), "2020")  # an ISO 8601 period
    c.dispose()
    return url


def widest_species(rel: Path, n: int) -> tuple[list[int], tuple[float, float, float, float]]:
    """The ``n`` species present on the largest boxes, and the widest box in lon/lat."""
    from sdmatlas.grid import Grid
    from sdmatlas.testing.releases import release_group
    from sdmatlas.zarr_access import array, sdmatlas_attrs

    g = release_group(rel)
    pres = np.asarray(array(g, "stats/presence")[:])
    area = (pres[:, 2] - pres[:, 0]) * (pres[:, 3] - pres[:, 1])
    order = np.argsort(-area, kind="stable")[:n]
    i = int(order[0])
    ids = np.asarray(array(g, "species")[:])
    sids = [int(ids[j]) for j in order]
    grid = Grid.model_validate(sdmatlas_attrs(g)["grid"])
    r0, c0, r1, c1 = (int(v) for v in pres[i])
    t = Transformer.from_crs(grid.crs, 4326, always_xy=True)
    box = t.transform_bounds(
        grid.x0 + c0 * grid.res, grid.y0 - r1 * grid.res,
        grid.x0 + c1 * grid.res, grid.y0 - r0 * grid.res,
    )  # fmt: skip
    return sids, box


def densest_species(rel: Path) -> int:
    """The species drawn on the most pixels (p > 0: codes 1-254 of its histogram), the
    dense layer a seed handles worst (few tiles it can write without rendering)."""
    from sdmatlas.testing.releases import release_group
    from sdmatlas.zarr_access import array

    g = release_group(rel)
    hist = np.asarray(array(g, "stats/histogram")[:])
    ids = np.asarray(array(g, "species")[:])
    return int(ids[int(np.argmax(hist[:, 1:255].sum(axis=1)))])


def export(rel: Path, sids: list[int]) -> Path:
    """One COG per species for the peers, in one directory: sp<id>.tif (Terracotta's
    keys are alphanumeric)."""
    from sdmatlas.publish.export import export_cog
    from sdmatlas.storage import open_release

    folder = WORK / "tiles" / "cogs"
    folder.mkdir(parents=True, exist_ok=True)
    for sid in sids:
        out = folder / f"sp{sid}.tif"
        if not out.exists():
            export_cog(open_release(rel), f"species/{sid}", out)
    return folder


Job = tuple[int, morecantile.Tile]  # (species id, tile)


def tile_list(box: tuple[float, float, float, float], n: int, sids: list[int]) -> list[Job]:
    """``n`` tiles at zooms 5 to 11 over the box, each for every species, shuffled: every
    (species, tile) pair is requested once, so every response is rendered."""
    tms = morecantile.tms.get("WebMercatorQuad")
    tiles = list(tms.tiles(*box, list(range(5, 12))))
    random.Random(7).shuffle(tiles)
    jobs = [(sid, t) for t in tiles[:n] for sid in sids]
    random.Random(8).shuffle(jobs)
    return jobs


def venv(name: str) -> Path:
    """A virtual environment with the peer installed (once)."""
    path = WORK / "venvs" / name
    marker = path / ".installed"
    if not marker.exists():
        shutil.rmtree(path, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
        print(f"installing {name} into {path}")
        subprocess.run([str(path / "bin" / "pip"), "install", "--quiet", *PEERS[name]], check=True)
        marker.touch()
    return path


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    t = time.time()
    while time.time() - t < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer in {timeout} s")


def run_load(urls: list[str], concurrency: int) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as fh:
        fh.write("\n".join(urls))
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "loadgen.py"), fh.name, "--concurrency",
         str(concurrency)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    os.unlink(fh.name)
    r = json.loads(out.stdout)
    lat = np.asarray(r["latencies_ms"])
    return {
        "tiles_per_s": round(r["requests"] / r["wall_s"], 1),
        "p50_ms": round(float(np.median(lat)), 2),
        "p99_ms": round(float(np.percentile(lat, 99)), 2),
        "statuses": r["statuses"],
        "mean_bytes": round(r["bytes"] / max(1, r["requests"])),
    }


class Server:
    def __init__(self, cmd: list[str], env: dict[str, str], ready: str, cwd: Path) -> None:
        # stderr (access logs included) to a file: an undrained pipe fills and blocks
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 (closed with the server)
        self.proc = subprocess.Popen(
            cmd, env={**os.environ, **env}, cwd=cwd, start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=self.log,
        )  # fmt: skip
        try:
            wait_ready(ready, self.proc)
        except RuntimeError:
            self.log.seek(0)
            err = self.log.read().decode(errors="replace")[-2000:]
            self.stop()
            raise RuntimeError(f"{cmd[0]} failed to start: {err}") from None

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.log.close()


def warm(base: str, paths: list[str]) -> None:
    for p in paths:
        with contextlib.suppress(OSError):
            urllib.request.urlopen(base + p, timeout=30).read()


def bench_sdmatlas(
    db: str, jobs: list[Job], warmups: list[Job], conc: int, rel: Path, colormap: str = "viridis"
) -> dict[str, Any]:
    port = 8801
    base = f"http://127.0.0.1:{port}"
    # rendering measured, so no tile cache (bench/cache.py measures the cache)
    env = {"SDMATLAS_DATABASE_URL": db, "SDMATLAS_DATA_DIR": str(WORK / "tiles"),
           "SDMATLAS_TILE_CACHE": "[]"}  # fmt: skip
    srv = Server([str(BIN / "sdmatlas"), "serve", "--port", str(port), "--workers", "2"], env,
                 f"{base}/health", ROOT)  # fmt: skip
    try:
        path = (
            f"/tiles/{KEY}:species:{{s}}/WebMercatorQuad/{{z}}/{{x}}/{{y}}.png?colormap={colormap}"
        )
        warm(base, [path.format(s=s, z=t.z, x=t.x, y=t.y) for s, t in warmups])
        urls = [base + path.format(s=s, z=t.z, x=t.x, y=t.y) for s, t in jobs]
        out: dict[str, Any] = {"uncached": run_load(urls, conc), "warm": run_load(urls, conc)}
        out["point_p50_ms"], out["report_p50_ms"] = queries_over_http(base, rel)
        return out
    finally:
        srv.stop()


def queries_over_http(base: str, rel: Path) -> tuple[float, float]:
    from shapely.geometry import Point, mapping

    from sdmatlas.grid import Grid
    from sdmatlas.testing.releases import release_group
    from sdmatlas.zarr_access import array, sdmatlas_attrs

    g = release_group(rel)
    grid = Grid.model_validate(sdmatlas_attrs(g)["grid"])
    terr = np.asarray(array(g, "territory")[:]) == 1
    rows, cols = np.nonzero(terr)
    rng = np.random.default_rng(1)
    to_ll = Transformer.from_crs(grid.crs, 4326, always_xy=True)
    point_ms = []
    for k in rng.choice(len(rows), 40, replace=False):
        lon, lat = to_ll.transform(*grid.xy(rows[k], cols[k]))
        t = time.perf_counter()
        urllib.request.urlopen(f"{base}/point?lon={lon}&lat={lat}&limit=100").read()
        point_ms.append((time.perf_counter() - t) * 1000)
    report_ms = []
    for k in rng.choice(len(rows), 6, replace=False):
        x, y = grid.xy(rows[k], cols[k])
        disc = Point(float(x), float(y)).buffer(113 * grid.res, 64)  # about 40,000 pixels
        ll = [to_ll.transform(a, b) for a, b in disc.exterior.coords]
        body = json.dumps(mapping(type(disc)(ll))).encode()
        req = urllib.request.Request(
            f"{base}/report", data=body, headers={"content-type": "application/json"}
        )
        t = time.perf_counter()
        try:
            urllib.request.urlopen(req, timeout=120).read()
        except OSError:
            continue  # a disc off the territory's edge: refused, not timed
        report_ms.append((time.perf_counter() - t) * 1000)
    return round(float(np.median(point_ms)), 2), round(float(np.median(report_ms)), 1)


def bench_titiler(cogs: Path, jobs: list[Job], warmups: list[Job], conc: int) -> dict[str, Any]:
    env_path = venv("titiler")
    port = 8802
    base = f"http://127.0.0.1:{port}"
    srv = Server([str(env_path / "bin" / "uvicorn"), "titiler.application.main:app",
                  "--port", str(port), "--workers", "2", "--log-level", "warning"], {},
                 f"{base}/healthz", ROOT)  # fmt: skip
    try:
        path = (f"/cog/tiles/WebMercatorQuad/{{z}}/{{x}}/{{y}}.png?url={cogs}/sp{{s}}.tif"
                "&colormap_name=viridis&rescale=0,254")  # fmt: skip
        warm(base, [path.format(s=s, z=t.z, x=t.x, y=t.y) for s, t in warmups])
        urls = [base + path.format(s=s, z=t.z, x=t.x, y=t.y) for s, t in jobs]
        return {"uncached": run_load(urls, conc)}
    finally:
        srv.stop()


def bench_terracotta(cogs: Path, jobs: list[Job], warmups: list[Job], conc: int) -> dict[str, Any]:
    env_path = venv("terracotta")
    db = WORK / "tiles" / "terracotta.sqlite"
    db.unlink(missing_ok=True)
    subprocess.run([str(env_path / "bin" / "terracotta"), "ingest", f"{cogs}/{{name}}.tif",
                    "-o", str(db)], check=True, capture_output=True)  # fmt: skip
    port = 8803
    base = f"http://127.0.0.1:{port}"
    srv = Server([str(env_path / "bin" / "gunicorn"), "-w", "2", "-b", f"127.0.0.1:{port}",
                  "terracotta.server:create_app()"], {"TC_DRIVER_PATH": str(db)},
                 f"{base}/keys", ROOT)  # fmt: skip
    try:
        path = "/singleband/sp{s}/{z}/{x}/{y}.png?colormap=viridis&stretch_range=[0,254]"
        warm(base, [path.format(s=s, z=t.z, x=t.x, y=t.y) for s, t in warmups])
        urls = [base + path.format(s=s, z=t.z, x=t.x, y=t.y) for s, t in jobs]
        return {"uncached": run_load(urls, conc)}
    finally:
        srv.stop()


def build_parser() -> argparse.ArgumentParser:
    ap = common.parser(__doc__)
    ap.add_argument("--tiles", type=int, default=400)
    ap.add_argument("--species", type=int, default=10, help="species layers served")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--skip-peers", action="store_true")
    ap.add_argument(
        "--opaque",
        action="store_true",
        help="also measure sdmatlas with viridis_opaque (species maps fade in by default)",
    )
    return ap


def output_path(args: argparse.Namespace) -> Path:
    return common.results_file(args.results, "tiles")


def main() -> None:
    args = build_parser().parse_args()
    out = output_path(args)

    rel = ensure_release()
    db = catalog_url(rel)
    sids, box = widest_species(rel, args.species)
    cogs = export(rel, sids)
    jobs = tile_list(box, args.tiles, sids)
    # warm-ups: tiles at zoom 4, outside the list, for every species
    tms = morecantile.tms.get("WebMercatorQuad")
    warmups = [(s, t) for s in sids for t in list(tms.tiles(*box, [4]))[:2]]
    results: dict[str, Any] = {
        "date": dt.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "layers": [f"{KEY}:species:{s}" for s in sids],
        "requests": len(jobs),
        "zooms": sorted({t.z for _, t in jobs}),
        "concurrency": args.concurrency,
        "servers": {},
    }
    results["servers"]["sdmatlas"] = bench_sdmatlas(db, jobs, warmups, args.concurrency, rel)
    if args.opaque:
        results["servers"]["sdmatlas-opaque"] = bench_sdmatlas(
            db, jobs, warmups, args.concurrency, rel, "viridis_opaque"
        )
    if not args.skip_peers:
        for name, fn in [("titiler", bench_titiler), ("terracotta", bench_terracotta)]:
            try:
                results["servers"][name] = fn(cogs, jobs, warmups, args.concurrency)
            except (RuntimeError, subprocess.CalledProcessError) as exc:
                results["servers"][name] = {"error": str(exc)[-500:]}
                print(f"{name}: {exc}")
    ours = results["servers"]["sdmatlas"]["uncached"]["tiles_per_s"]
    for name, r in results["servers"].items():
        if "uncached" in r:
            u = r["uncached"]
            r["sdmatlas_ratio"] = round(ours / u["tiles_per_s"], 1) if u["tiles_per_s"] else None
            print(f"{name:11s} uncached {u['tiles_per_s']:8.1f} tiles/s  p50 {u['p50_ms']:8.2f} ms"
                  f"  p99 {u['p99_ms']:8.2f} ms  statuses {u['statuses']}  "
                  f"sdmatlas x{r['sdmatlas_ratio']}")  # fmt: skip
    s = results["servers"]["sdmatlas"]
    print(f"sdmatlas warm {s['warm']['tiles_per_s']} tiles/s; point p50 {s['point_p50_ms']} ms; "
          f"area report (40,000 px) p50 {s['report_p50_ms']} ms at 10,000 species")  # fmt: skip
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results in {out}")


if __name__ == "__main__":
    main()
