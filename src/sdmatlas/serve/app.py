"""The FastAPI application factory.

The app starts without touching the database: while the catalog is unreachable, routes
that need it answer 503 with a message (``/health`` stays 200, ``/ready`` says why it
is not ready), and they recover by themselves once the database is back (pooled
connections are checked before use).
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from sdmatlas.catalog.db import Catalog
from sdmatlas.serve import (
    catalog_routes,
    errors,
    fastpath,
    query_routes,
    tile_routes,
    tms_routes,
    viewer_routes,
    wms_routes,
    wmts_routes,
)
from sdmatlas.serve.middleware import ETagTimingMiddleware
from sdmatlas.serve.services import Services
from sdmatlas.settings import Settings


def create_app(settings: Settings | None = None, catalog: Catalog | None = None) -> FastAPI:
    settings = settings or Settings()
    app = FastAPI(
        title="sdmatlas",
        summary="Species distribution maps: metadata, tiles, point and area queries.",
        version="0.1.0",
    )
    app.state.settings = settings
    app.state.catalog = catalog or Catalog.from_settings(settings)
    app.state.services = Services.build(settings, app.state.catalog)
    errors.install(app)
    if settings.tile_fast_path:
        fastpath.install(app, app.state.services)  # innermost: inside ETag and CORS
    app.add_middleware(ETagTimingMiddleware)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "HEAD", "OPTIONS"],
            allow_headers=["*"],
            expose_headers=[
                "ETag",
                "Server-Timing",
                "X-Tile-Empty",
                "X-Scale",
                "X-Nodata",
                "X-Pyramid-Level",
            ],
        )

    @app.get("/health", tags=["service"], summary="Liveness: the process answers.")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready", tags=["service"], summary="Readiness: the catalog database answers.")
    def ready() -> dict[str, str]:
        app.state.catalog.ping()
        return {"status": "ready"}

    app.include_router(catalog_routes.router)
    app.include_router(tile_routes.router)
    app.include_router(query_routes.router)
    app.include_router(tms_routes.router)
    app.include_router(wmts_routes.router)
    app.include_router(wms_routes.router)
    viewer_routes.install(app)
    return app


def app_from_env() -> FastAPI:
    """The app with settings from the environment (uvicorn's factory, one per worker)."""
    return create_app(Settings())
