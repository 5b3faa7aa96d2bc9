"""Benchmark: a mixed, partly hostile load against `sdmatlas serve`, and what survives.

    .venv/bin/python bench/robustness.py [--seconds 120] [--concurrency 16]

* Data: the demo release (`sdmatlas demo run`, run first if missing), served by
  `sdmatlas serve` with 2 worker processes and the default settings (budgets, deadline,
  executor, memory + disk tile cache in a fresh directory).
* Phase 1, tiles alone: XYZ tiles of 20 species at zooms 6-10 over the demo region,
  at the same concurrency, for a quarter of the time: the tile p99 baseline.
* Phase 2, the mix, for ``--seconds``: tiles (60 %), points (10 %), small area
  reports (8 %), WMS GetMaps of 4096 x 4096 (4 %), oversized bodies (a 9 MB body and
  a 150,000-vertex polygon: 4 %), OGC requests with junk parameters (8 %), and 404s
  and bad tiles (6 %). A prober thread asks /health every 100 ms throughout. Large
  GetMaps are heavy requests (SDMATLAS_HEAVY_REQUESTS, one at a time per process):
  those that wait past SDMATLAS_HEAVY_WAIT_SECONDS get 429, counted apart.
* Worker deaths: the worker PIDs (children of the server) at the start and at the
  end; a dead worker is replaced by uvicorn under a new PID.
* Memory: the workers' summed RSS after the warm-up (the mix for a quarter of the
  time: the bounded caches fill) and at the end.

Goals (issue 21): 0 worker deaths, 0 5xx, tile p99 in the mix <= 3x tiles alone,
/health p99 <= 100 ms, RSS at the end <= 1.2x after the warm-up. The machine has 2
cores shared by the server and this load generator: the figures are ratios.
"""

from __future__ import annotations

import http.client
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import morecantile
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
from tiles import BIN, ROOT, Server

DATA = ROOT / "data"


def build_parser() -> Any:
    ap = common.parser(__doc__)
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--port", type=int, default=8811)
    return ap


def output_path(args: Any) -> Path:
    return common.results_file(args.results, "robustness")


def ensure_demo() -> None:
    if not (DATA / "catalog.sqlite").exists():
        subprocess.run([str(BIN / "sdmatlas"), "demo", "run"], check=True, cwd=ROOT)


def demo_layers(base: str) -> tuple[str, list[str], tuple[float, float, float, float]]:
    with urllib_get(base + "/releases/latest") as r:
        release = json.loads(r.read())["key"]
    with urllib_get(base + f"/layers?release={release}&kind=species&limit=20") as r:
        layers = json.loads(r.read())
    box = layers[0]["bbox"]
    return release, [x["id"] for x in layers], tuple(box)


def urllib_get(url: str) -> Any:
    import urllib.request

    return urllib.request.urlopen(url, timeout=60)


def requests_mix(
    release: str, layers: list[str], box: tuple[float, float, float, float], rng: random.Random
) -> list[tuple[str, str, str, bytes | None, str]]:
    """(kind, method, path, body, content type) of the mixed load, shuffled."""
    tms = morecantile.tms.get("WebMercatorQuad")
    tiles = [t for z in range(6, 11) for t in tms.tiles(*box, [z])]
    w, s, e, n = box
    out: list[tuple[str, str, str, bytes | None, str]] = []

    def tile() -> str:
        t = rng.choice(tiles)
        return f"/tiles/{rng.choice(layers)}/WebMercatorQuad/{t.z}/{t.x}/{t.y}.png"

    def square(cx: float, cy: float, d: float) -> dict[str, Any]:
        ring = [[cx, cy], [cx + d, cy], [cx + d, cy + d], [cx, cy + d], [cx, cy]]
        return {"type": "Polygon", "coordinates": [ring]}

    angles = np.linspace(0, 2 * np.pi, 150_000, endpoint=False)
    cx, cy = (w + e) / 2, (s + n) / 2
    ring = np.c_[cx + 0.2 * np.cos(angles), cy + 0.2 * np.sin(angles)].round(6).tolist()
    many = json.dumps({"type": "Polygon", "coordinates": [[*ring, ring[0]]]}).encode()
    huge = b'{"type": "Polygon", "coordinates": [' + b" " * (9 * 2**20) + b"]}"
    getmap = ("/wms?SERVICE=WMS&REQUEST=GetMap&VERSION=1.3.0&STYLES=&CRS=CRS:84"
              f"&BBOX={w},{s},{e},{n}&WIDTH=4096&HEIGHT=4096&FORMAT=image/png&LAYERS=")  # fmt: skip
    junk = ["/wms?SERVICE=WMS&REQUEST=GetMap&BBOX=-1e308,-1e308,1e308,1e308&WIDTH=256"
            "&HEIGHT=256&CRS=EPSG:4326&VERSION=1.3.0&FORMAT=image/png&LAYERS=",
            "/wms?SERVICE=WMS&REQUEST=GetMap&VERSION=1.3.0&CRS=EPSG:3857&BBOX=0,0,1,1"
            "&WIDTH=4096&HEIGHT=4096&FORMAT=image/png&LAYERS=" + ",".join(layers[:10]),
            "/wmts?SERVICE=WMTS&REQUEST=GetTile&LAYER=x&TILEMATRIX=99999999999999999999",
            f"/tiles/{release}:species:9223372036854775808/WebMercatorQuad/8/1/1.png",
            "/species?offset=9223372036854775808", "/wms?REQUEST=Nope",
            "/wmts?SERVICE=WMTS&REQUEST=GetCapabilities"]  # fmt: skip
    for _ in range(6000):
        u = rng.random()
        if u < 0.60:
            out.append(("tile", "GET", tile(), None, ""))
        elif u < 0.70:
            lon, lat = rng.uniform(w, e), rng.uniform(s, n)
            out.append(("point", "GET", f"/point?lon={lon}&lat={lat}", None, ""))
        elif u < 0.78:
            body = json.dumps(square(rng.uniform(w, e - 0.1), rng.uniform(s, n - 0.1), 0.05))
            out.append(("report", "POST", "/report", body.encode(), "application/json"))
        elif u < 0.82:
            out.append(("getmap", "GET", getmap + rng.choice(layers), None, ""))
        elif u < 0.86:
            body = rng.choice([many, huge])
            out.append(("oversized", "POST", "/report", body, "application/json"))
        elif u < 0.94:
            q = rng.choice(junk)
            out.append(
                ("junk", "GET", q + (rng.choice(layers) if q.endswith("=") else ""), None, "")
            )
        else:
            out.append(("bad", "GET", rng.choice(["/nope", tile().replace(".png", ".gif")]),
                        None, ""))  # fmt: skip
    return out


def run_load(
    port: int, reqs: list[tuple[str, str, str, bytes | None, str]], conc: int, seconds: float
) -> list[tuple[str, int, float]]:
    """Threads cycling through ``reqs`` for ``seconds``: (kind, status, ms) of each."""
    stop = time.monotonic() + seconds
    out: list[tuple[str, int, float]] = []
    lock = threading.Lock()
    counter = [0]

    def worker() -> None:
        conn: http.client.HTTPConnection | None = None
        while time.monotonic() < stop:
            with lock:
                kind, method, path, body, ctype = reqs[counter[0] % len(reqs)]
                counter[0] += 1
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            t = time.perf_counter()
            try:
                headers = {"content-type": ctype} if ctype else {}
                conn.request(method, path, body=body, headers=headers)
                resp = conn.getresponse()
                resp.read()
                status = resp.status
                if resp.getheader("connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException):
                if conn is not None:
                    conn.close()
                conn, status = None, 0  # refused early: the server closed the upload
            with lock:
                out.append((kind, status, (time.perf_counter() - t) * 1000))
        if conn is not None:
            conn.close()

    threads = [threading.Thread(target=worker) for _ in range(conc)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def probe_health(port: int, stop: threading.Event, out: list[float]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    while not stop.is_set():
        t = time.perf_counter()
        try:
            conn.request("GET", "/health")
            conn.getresponse().read()
            out.append((time.perf_counter() - t) * 1000)
        except (OSError, http.client.HTTPException):
            out.append(float("inf"))
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        time.sleep(0.1)
    conn.close()


def workers_of(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    kids = [int(p) for p in out.split()]
    # uvicorn's supervisor (the serve process) -> its worker processes
    grand = subprocess.run(["pgrep", "-P", ",".join(map(str, kids)) or "0"],
                           capture_output=True, text=True).stdout  # fmt: skip
    return sorted(kids + [int(p) for p in grand.split()])


def rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return round(total / 1024, 1)


def pct(v: list[float], q: float) -> float:
    return round(float(np.percentile(v, q)), 2) if v else float("nan")


def main() -> None:
    args = build_parser().parse_args()
    out = output_path(args)
    ensure_demo()
    cache = Path(tempfile.mkdtemp(prefix="robust-cache-"))
    env = {"SDMATLAS_DATA_DIR": str(DATA), "SDMATLAS_TILE_CACHE_DIR": str(cache),
           "SDMATLAS_LOG_FORMAT": "json"}  # fmt: skip
    port = args.port
    srv = Server([str(BIN / "sdmatlas"), "serve", "--port", str(port), "--workers", "2"], env,
                 f"http://127.0.0.1:{port}/health", ROOT)  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        release, layers, box = demo_layers(base)
        rng = random.Random(21)
        mix = requests_mix(release, layers, box, rng)
        tiles_only = [r for r in mix if r[0] == "tile"]
        # warm-up: the mix itself for a quarter of the time, so that the chunk, index and
        # tile caches fill (they are bounded) before the memory baseline is taken
        run_load(port, mix, args.concurrency, args.seconds / 4)
        pids0 = workers_of(srv.proc.pid)
        rss0 = rss_mb(pids0)
        alone = run_load(port, tiles_only, args.concurrency, args.seconds / 4)
        health: list[float] = []
        stop = threading.Event()
        prober = threading.Thread(target=probe_health, args=(port, stop, health))
        prober.start()
        mixed = run_load(port, mix, args.concurrency, args.seconds)
        stop.set()
        prober.join()
        pids1 = workers_of(srv.proc.pid)
        rss1 = rss_mb(pids1)
    finally:
        srv.stop()
    by_kind: dict[str, dict[str, int]] = {}
    for kind, status, _ in mixed:
        by_kind.setdefault(kind, {}).setdefault(str(status), 0)
        by_kind[kind][str(status)] += 1
    five = sum(1 for _, s, _ in mixed if s >= 500)
    shed = sum(1 for _, s, _ in mixed if s == 429)
    tile_alone = [ms for _, s, ms in alone if s == 200]
    tile_mixed = [ms for k, s, ms in mixed if k == "tile"]
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "seconds": args.seconds,
        "concurrency": args.concurrency,
        "requests": len(mixed),
        "statuses_by_kind": by_kind,
        "5xx": five,
        "429_shed": shed,
        "worker_pids": {"start": pids0, "end": pids1},
        "worker_deaths": len(set(pids0) - set(pids1)),
        "tile_p99_ms": {"alone": pct(tile_alone, 99), "mixed": pct(tile_mixed, 99)},
        "tile_p50_ms": {"alone": pct(tile_alone, 50), "mixed": pct(tile_mixed, 50)},
        "tile_p99_ratio": round(pct(tile_mixed, 99) / pct(tile_alone, 99), 2),
        "health_ms": {
            "p50": pct(health, 50),
            "p99": pct(health, 99),
            "max": max(health),
            "probes": len(health),
        },
        "rss_mb": {"after_warmup": rss0, "end": rss1, "ratio": round(rss1 / rss0, 2)},
        "getmap_p50_ms": statistics.median(
            [ms for k, s, ms in mixed if k == "getmap" and s == 200] or [float("nan")]
        ),
    }
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "worker_pids"}, indent=2))
    print(f"results in {out}")


if __name__ == "__main__":
    main()
