"""A small HTTP load generator, run in its own process by the benchmarks.

    python bench/loadgen.py URLS_FILE --concurrency 8 > results.json

Each URL is requested once, by ``concurrency`` threads with one keep-alive
connection each (http.client: little client-side CPU, which matters on a 2-core
machine shared with the servers). Prints a JSON object: the wall time, the number of
requests, the statuses and every latency in milliseconds.
"""

from __future__ import annotations

import argparse
import http.client
import json
import queue
import threading
import time
from urllib.parse import urlsplit


def worker(jobs: queue.Queue[str], out: list[tuple[float, int, int]]) -> None:
    conn: http.client.HTTPConnection | None = None
    while True:
        try:
            url = jobs.get_nowait()
        except queue.Empty:
            break
        u = urlsplit(url)
        if conn is None:
            conn = http.client.HTTPConnection(u.hostname or "127.0.0.1", u.port or 80, timeout=60)
        path = u.path + (f"?{u.query}" if u.query else "")
        t = time.perf_counter()
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            body = resp.read()
            status = resp.status
        except (OSError, http.client.HTTPException):
            conn.close()
            conn, body, status = None, b"", 0
        out.append(((time.perf_counter() - t) * 1000, status, len(body)))
    if conn is not None:
        conn.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("urls")
    ap.add_argument("--concurrency", type=int, default=8)
    args = ap.parse_args()
    with open(args.urls) as fh:
        urls = [line.strip() for line in fh if line.strip()]
    jobs: queue.Queue[str] = queue.Queue()
    for u in urls:
        jobs.put(u)
    results: list[tuple[float, int, int]] = []
    threads = [
        threading.Thread(target=worker, args=(jobs, results)) for _ in range(args.concurrency)
    ]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    statuses: dict[str, int] = {}
    for _, s, _ in results:
        statuses[str(s)] = statuses.get(str(s), 0) + 1
    print(
        json.dumps(
            {
                "wall_s": wall,
                "requests": len(results),
                "statuses": statuses,
                "latencies_ms": [r[0] for r in results],
                "bytes": sum(r[2] for r in results),
            }
        )
    )


if __name__ == "__main__":
    main()
