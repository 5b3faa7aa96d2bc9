"""The FastAPI application factory.

The app starts without touching the database: while the catalog is unreachable, routes
that need it answer 503 with a message (``/health`` stays 200, ``/ready`` says why it
is not ready), and they recover by themselves once the database is back (pooled
connections are checked before use).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Response
from fastapi.middleware.cors import CORSMiddleware

from sdmatlas.catalog.db import Catalog
from sdmatlas.serve import errors, process
from sdmatlas.serve.api import catalog as catalog_routes
from sdmatlas.serve.api import fastpath
from sdmatlas.serve.api import jobs as job_routes
from sdmatlas.serve.api import queries as query_routes
from sdmatlas.serve.api import tiles as tile_routes
from sdmatlas.serve.api import viewer as viewer_routes
from sdmatlas.serve.guard import GuardMiddleware
from sdmatlas.serve.head import HeadMiddleware
from sdmatlas.serve.observe import metrics
from sdmatlas.serve.observe.logs import ObserveMiddleware, configure_logging
from sdmatlas.serve.observe.timing import ETagTimingMiddleware
from sdmatlas.serve.offload import size_executor
from sdmatlas.serve.ogc import tms as tms_routes
from sdmatlas.serve.ogc import wms as wms_routes
from sdmatlas.serve.ogc import wmts as wmts_routes
from sdmatlas.serve.services import Services
from sdmatlas.settings import Settings

log = logging.getLogger("sdmatlas.serve")


def create_app(settings: Settings | None = None, catalog: Catalog | None = None) -> FastAPI:
    settings = settings or Settings()
    process.tune()  # one BLAS thread, the metrics directory: however the app is started

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        size_executor(settings.executor_threads)  # the one concurrency budget
        runner = None
        if settings.jobs_runner:  # on-demand jobs run in a thread of each API process
            from sdmatlas.jobs.runner import JobRunner

            runner = JobRunner(settings, app.state.catalog)
            runner.start()
        app.state.job_runner = runner
        yield
        if runner is not None:
            runner.stop()

    app = FastAPI(
        title="sdmatlas",
        summary="Species distribution maps: metadata, tiles, point and area queries.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.catalog = catalog or Catalog.from_settings(settings)
    app.state.services = Services.build(settings, app.state.catalog)
    errors.install(app)
    if settings.tile_fast_path:
        fastpath.install(app, app.state.services)  # innermost: inside ETag and CORS
    app.add_middleware(ETagTimingMiddleware)
    app.add_middleware(GuardMiddleware, settings=settings)  # sizes, Host, deadline
    app.add_middleware(HeadMiddleware)  # HEAD answered as the GET it mirrors, bodiless
    app.add_middleware(ObserveMiddleware, pool=getattr(app.state.catalog.engine, "pool", None))
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE", "HEAD", "OPTIONS"],
            allow_headers=["*"],
            expose_headers=[
                "ETag",
                "Server-Timing",
                "X-Tile-Empty",
                "X-Scale",
                "X-Nodata",
                "X-Pyramid-Level",
                "X-Cache",
                "X-Request-ID",
            ],
        )

    @app.get("/health", tags=["service"], summary="Liveness: the process answers.")
    async def health() -> dict[str, str]:  # on the event loop: it measures the loop
        return {"status": "ok"}

    @app.get(
        "/ready", tags=["service"], summary="Readiness: the catalog and release storage answer."
    )
    def ready() -> dict[str, str]:
        app.state.catalog.ping()
        check_storage(app.state.catalog, settings.storage_options)
        return {"status": "ready"}

    @app.get("/metrics", tags=["service"], summary="Prometheus metrics of every worker process.")
    def metrics_route() -> Response:
        body, media = metrics.exposition()
        return Response(body, media_type=media, headers={"Cache-Control": "no-store"})

    app.include_router(catalog_routes.router)
    app.include_router(tile_routes.router)
    app.include_router(query_routes.router)
    app.include_router(job_routes.router)
    app.include_router(tms_routes.router)
    app.include_router(wmts_routes.router)
    app.include_router(wms_routes.router)
    viewer_routes.install(app)
    return app


def check_storage(catalog: Catalog, storage_options: dict[str, Any] | None = None) -> None:
    """Every published release's storage answers (the newest 20): 503 if one does not."""
    from sdmatlas.catalog import queries
    from sdmatlas.errors import StorageUnavailableError
    from sdmatlas.storage import release_store, split_location

    with catalog.session() as s:
        releases = queries.list_releases(s)[:20]
    for r in releases:
        parent, key = split_location(r.storage_uri)
        try:
            ok = release_store(parent, storage_options).exists(key)
        except StorageUnavailableError:
            log.warning("storage of release %s at %s does not answer", r.key, r.storage_uri)
            raise
        except OSError as exc:
            # the location goes to the log, not to the client (no server paths out)
            log.warning("storage of release %s at %s fails: %s", r.key, r.storage_uri, exc)
            raise StorageUnavailableError(f"the storage of release {r.key} fails") from exc
        if not ok:
            log.warning("release %s is not at %s", r.key, r.storage_uri)
            raise StorageUnavailableError(
                f"release {r.key} is not in its storage (unmounted or moved? see the log)"
            )


def app_from_env() -> FastAPI:
    """The app with settings from the environment (uvicorn's factory, one per worker)."""
    settings = Settings()
    configure_logging(settings.log_format)
    return create_app(settings)
