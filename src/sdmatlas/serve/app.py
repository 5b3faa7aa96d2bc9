"""The FastAPI application factory.

The app starts without touching the database: while the catalog is unreachable, routes
that need it answer 503 with a message (``/health`` stays 200, ``/ready`` says why it
is not ready), and they recover by themselves once the database is back (pooled
connections are checked before use).
"""

from __future__ import annotations

from fastapi import FastAPI

from sdmatlas.catalog.db import Catalog
from sdmatlas.serve import catalog_routes, errors
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
    errors.install(app)

    @app.get("/health", tags=["service"], summary="Liveness: the process answers.")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready", tags=["service"], summary="Readiness: the catalog database answers.")
    def ready() -> dict[str, str]:
        app.state.catalog.ping()
        return {"status": "ready"}

    app.include_router(catalog_routes.router)
    return app
