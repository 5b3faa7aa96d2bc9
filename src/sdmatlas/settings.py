"""Settings in one place, read from ``SDMATLAS_*`` environment variables.

Settings are built by the caller (the CLI, an app factory, a test) and passed
down; nothing in sdmatlas reads the environment at import time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Runtime settings. Every field can be set as ``SDMATLAS_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="SDMATLAS_", extra="ignore")

    data_dir: Path = Field(
        default=Path("data"), description="Where demo inputs and releases are written."
    )
    chunk_size: int = Field(
        default=256, ge=16, le=4096, description="Spatial chunk edge of cubes (pixels)."
    )
    batch_size: int = Field(
        default=4096, ge=1, le=1_000_000, description="Pixels per model call during prediction."
    )
    workers: int = Field(
        default=2,
        ge=0,
        le=512,
        description="Dask LocalCluster workers for prediction; 0 runs tasks in-process.",
    )
    threads_per_worker: int = Field(
        default=1, ge=1, le=64, description="Inference threads in each prediction worker."
    )
    cluster_profiles: Path | None = Field(
        default=None,
        description="YAML file of named cluster profiles for --cluster NAME (docs/cluster.md).",
    )
    scheduler: str | None = Field(
        default=None, description="Address of an existing Dask scheduler (tcp://host:8786)."
    )
    database_url: str | None = Field(
        default=None,
        description=(
            "Catalog database (SQLAlchemy URL): postgresql+psycopg://user@host/db in "
            "production; unset, an embedded SQLite file <data_dir>/catalog.sqlite."
        ),
    )
    database_pool_size: int = Field(
        default=5, ge=1, le=100, description="Connections kept open per process (PostgreSQL)."
    )
    database_timeout: float = Field(
        default=3.0,
        gt=0,
        le=60,
        description="Seconds to wait for a database connection before answering 503.",
    )
    host: str = Field(default="127.0.0.1", description="Address `sdmatlas serve` listens on.")
    port: int = Field(default=8000, ge=1, le=65535, description="Port of `sdmatlas serve`.")
    serve_workers: int = Field(
        default=2, ge=1, le=256, description="API worker processes of `sdmatlas serve`."
    )
    storage_options: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "fsspec options for releases on object stores, as JSON (for s3fs: "
            '{"endpoint_url": ..., "retries": 2}); credentials come from the usual '
            "AWS_* variables or instance roles."
        ),
    )
    chunk_cache_mb: int = Field(
        default=512,
        ge=1,
        le=1_000_000,
        description="Decoded release chunks kept in memory per API process (MB).",
    )
    tile_index_cache: int = Field(
        default=512,
        ge=16,
        le=100_000,
        description="Tile-to-grid index maps kept per API process (0.5 MB each).",
    )
    layer_cache_seconds: float = Field(
        default=5.0,
        ge=0,
        le=3600,
        description="How long a process reuses a layer's catalog entry (a retired or "
        "republished release is seen within this delay).",
    )
    tile_fast_path: bool = Field(
        default=True,
        description="Answer tile URLs before FastAPI's router (same responses, less overhead).",
    )
    cors_origins: list[str] = Field(
        default=["*"], description="Origins allowed by CORS (JSON list; [] disables CORS)."
    )
    tile_cache: list[Literal["memory", "disk", "redis"]] = Field(
        default=["memory", "disk"],
        description="Tile cache backends, fastest first (JSON list): memory (per process), "
        "disk (the embedded default), redis (shared by replicas); [] turns caching off.",
    )
    tile_cache_dir: Path | None = Field(
        default=None, description="Disk tile cache directory; unset, <data_dir>/tile-cache."
    )
    export_cache_mb: int = Field(
        default=2_048,
        ge=1,
        le=100_000_000,
        description="Size cap of the disk cache of COG downloads (MB), under "
        "<data_dir>/export-cache: past it, the least recently used files are evicted.",
    )
    tile_cache_disk_mb: int = Field(
        default=10_240,
        ge=1,
        le=100_000_000,
        description="Size cap of the disk tile cache (MB): past it, the least recently used "
        "tiles are evicted down to 90 %.",
    )
    tile_cache_unversioned_ttl_hours: float = Field(
        default=24.0,
        gt=0,
        le=87_600,
        description="Tiles first asked for without ?v=<layer version> (anonymous style "
        "variants) are dropped from the disk cache after this; versioned ones stay (LRU).",
    )
    tile_cache_memory_mb: int = Field(
        default=64, ge=1, le=1_000_000, description="In-process tile cache size per process."
    )
    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0", description="Redis of the shared tile cache."
    )
    tile_cache_redis_ttl_days: float = Field(
        default=30.0, ge=0, le=3650, description="Expiry of tiles in Redis (0: never)."
    )
    tile_cache_retry_seconds: float = Field(
        default=5.0,
        gt=0,
        le=3600,
        description="How long a failed cache backend is skipped before it is tried again.",
    )
    log_format: Literal["json", "text"] = Field(
        default="json", description="Access and application logs of `sdmatlas serve`."
    )
    public_url: str | None = Field(
        default=None,
        description="The service's public base URL (https://maps.example.org/api): every "
        "absolute URL in capabilities, TileJSON and styles is built from it, never from the "
        "request's Host header.",
    )
    allowed_hosts: list[str] = Field(
        default=["localhost", "127.0.0.1", "[::1]"],
        description="Without public_url, the Host headers accepted (JSON list; '*.example.org' "
        "for subdomains, ['*'] for any: only behind a proxy that sets Host). Others get a 400.",
    )
    executor_threads: int = Field(
        default=8,
        ge=1,
        le=256,
        description="The one bounded thread pool of an API process: catalog queries, cache "
        "I/O and locks, GetMap, capabilities, reports and exports run there, off the event loop.",
    )
    heavy_requests: int = Field(
        default=1,
        ge=1,
        le=256,
        description="Heavy requests (GetMaps over 1 M pixels, COG exports) run at once per "
        "process; others wait up to heavy_wait_seconds, then get 429 with Retry-After.",
    )
    heavy_wait_seconds: float = Field(
        default=5.0,
        ge=0,
        le=600,
        description="How long a heavy request waits for its turn before a 429.",
    )
    request_deadline_seconds: float = Field(
        default=20.0,
        gt=0,
        le=3600,
        description="A request still working after this is stopped: 503 with Retry-After "
        "(or an OGC exception report).",
    )
    max_body_bytes: int = Field(
        default=8 * 2**20,
        ge=1024,
        le=2**31,
        description="Budget: request body bytes (a GeoJSON polygon), refused with 413 before "
        "it is read whole.",
    )
    max_header_bytes: int = Field(
        default=16 * 1024,
        ge=1024,
        le=2**20,
        description="Budget: bytes of all request headers together (431 beyond).",
    )
    max_map_side: int = Field(
        default=4096, ge=256, le=65536, description="Budget: WIDTH and HEIGHT of a GetMap."
    )
    max_map_pixels: int = Field(
        default=4096 * 4096,
        ge=65536,
        le=2**34,
        description="Budget: pixels drawn by one GetMap, WIDTH x HEIGHT x layers.",
    )
    max_map_layers: int = Field(
        default=8, ge=1, le=256, description="Budget: layers in one GetMap (LAYERS)."
    )
    max_polygon_vertices: int = Field(
        default=100_000, ge=4, le=10_000_000, description="Budget: vertices of a report polygon."
    )
    max_polygon_parts: int = Field(
        default=10_000,
        ge=1,
        le=10_000_000,
        description="Budget: polygons and rings of a report MultiPolygon.",
    )
    max_report_boundary_pixels: int = Field(
        default=50_000_000,
        ge=1,
        le=10**12,
        description="Budget: pixels along an area report's outline (64 x 64 blocks it "
        "crosses x 4,096), rasterised one block at a time; the area inside is free.",
    )
    max_report_values: int = Field(
        default=2_000_000_000,
        ge=1,
        le=10**13,
        description="Budget: values an area report reads along its outline (8 x 8 pixel "
        "chunks it cuts and the aggregates of its 64 x 64 boundary blocks, x 64 x species), "
        "counted from the geometry before reading.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="Where models run: 'auto' takes a GPU when one is present."
    )

    jobs_dir: Path | None = Field(
        default=None,
        description="Where on-demand jobs write their cubes and releases; unset, <data_dir>/jobs.",
    )
    jobs_runner: bool = Field(
        default=True,
        description="Run on-demand jobs in each API process (a thread that claims jobs from "
        "the catalog); false leaves them to other processes.",
    )
    jobs_workers: int = Field(
        default=0,
        ge=0,
        le=512,
        description="Dask LocalCluster workers of a job's chunk tasks; 0 runs them in the "
        "runner's process.",
    )
    jobs_scheduler: str | None = Field(
        default=None,
        description="A running Dask scheduler for jobs' chunk tasks (overrides jobs_workers).",
    )
    jobs_max_area_km2: float = Field(
        default=2_500.0, gt=0, le=1e8, description="Limit: area of one job (413 beyond)."
    )
    jobs_max_active: int = Field(
        default=8, ge=1, le=10_000, description="Limit: jobs queued or running in total (429)."
    )
    jobs_max_active_per_key: int = Field(
        default=2, ge=1, le=10_000, description="Limit: jobs queued or running per key (429)."
    )
    jobs_requests_per_minute: int = Field(
        default=30,
        ge=1,
        le=100_000,
        description="Limit: job requests (POST and DELETE) per API key and minute, per API "
        "process (429 with Retry-After).",
    )
    jobs_ttl_hours: float = Field(
        default=24.0, gt=0, le=24 * 365, description="How long a job's release is kept."
    )
    jobs_stale_seconds: float = Field(
        default=60.0,
        gt=0,
        le=86_400,
        description="A running job whose heartbeat is older than this was interrupted (its "
        "process died): another runner resumes it.",
    )
    jobs_max_attempts: int = Field(
        default=3, ge=1, le=100, description="Claims of one job before it is failed."
    )
    jobs_poll_seconds: float = Field(
        default=1.0, gt=0, le=3600, description="How often an idle runner looks for jobs."
    )
    live_cache_mb: float = Field(
        default=32.0,
        ge=0,
        le=100_000,
        description="Live point predictions kept per API process (MB; one answer is one byte "
        "per species), by model digest, covariates and pixel.",
    )

    @property
    def jobs_path(self) -> Path:
        return self.jobs_dir or self.data_dir / "jobs"

    @property
    def tile_cache_path(self) -> Path:
        return self.tile_cache_dir or self.data_dir / "tile-cache"

    @property
    def catalog_url(self) -> str:
        """The database URL in use: ``database_url``, or the embedded SQLite file."""
        return self.database_url or f"sqlite:///{self.data_dir / 'catalog.sqlite'}"
