"""Prometheus metrics of the API, in one place.

With several worker processes, ``sdmatlas serve`` sets ``PROMETHEUS_MULTIPROC_DIR``
before the workers start, and ``/metrics`` sums every process's samples
(prometheus_client's multiprocess mode); with one process the default registry is
read. Gauges say how they combine across processes.
"""

from __future__ import annotations

import os
import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

REQUESTS = Counter(
    "sdmatlas_http_requests", "HTTP requests by route template, method and status.",
    ["route", "method", "status"],
)  # fmt: skip
LATENCY = Histogram(
    "sdmatlas_http_request_duration_seconds", "Time to the last response byte, by route.",
    ["route"], buckets=_SECONDS,
)  # fmt: skip
CACHE = Counter(
    "sdmatlas_tile_cache_requests", "Tile cache lookups by backend and result (hit, miss, "
    "error).", ["backend", "result"],
)  # fmt: skip
CACHE_UP = Gauge(
    "sdmatlas_tile_cache_up", "1 while a tile cache backend works, 0 while it is skipped "
    "(the lowest over processes).", ["backend"], multiprocess_mode="livemin",
)  # fmt: skip
EVICTIONS = Counter(
    "sdmatlas_tile_cache_evictions", "Tiles removed from a cache backend, by reason (size: "
    "over the cap, least recently used first; ttl: an unversioned tile past its TTL).",
    ["backend", "reason"],
)  # fmt: skip
RENDERS = Counter("sdmatlas_tile_renders", "Tiles rendered (cache misses and uncached tiles).")
STAGE = Histogram(
    "sdmatlas_tile_stage_seconds", "Time per tile rendering stage (index, read, render, "
    "encode).", ["stage"], buckets=_SECONDS,
)  # fmt: skip
TILE_BYTES = Histogram(
    "sdmatlas_tile_bytes", "Size of the tiles served (bytes).",
    buckets=(128, 512, 2048, 8192, 32768, 131072, 524288, 2097152),
)  # fmt: skip
DB_POOL = Gauge(
    "sdmatlas_db_pool_connections", "Catalog database connections by state (summed over "
    "processes).", ["state"], multiprocess_mode="livesum",
)  # fmt: skip

_pool_seen = [0.0]


def observe_pool(pool: object) -> None:
    """Record the pool's checked-out and idle connections, at most once a second."""
    now = time.monotonic()
    if now - _pool_seen[0] < 1.0:
        return
    _pool_seen[0] = now
    checkedout = getattr(pool, "checkedout", None)
    checkedin = getattr(pool, "checkedin", None)
    if callable(checkedout) and callable(checkedin):
        DB_POOL.labels("in_use").set(float(checkedout()))
        DB_POOL.labels("idle").set(float(checkedin()))


def exposition() -> tuple[bytes, str]:
    """The metrics text of every process (multiprocess mode) or of this one."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
