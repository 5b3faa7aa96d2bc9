"""The one place where sdmatlas errors become HTTP responses."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from sdmatlas.errors import DatabaseUnavailableError, SdmAtlasError


async def _sdmatlas_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, SdmAtlasError)
    headers = {"Retry-After": "5"} if isinstance(exc, DatabaseUnavailableError) else None
    return JSONResponse(
        {"detail": str(exc), "error": type(exc).__name__},
        status_code=exc.http_status,
        headers=headers,
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(SdmAtlasError, _sdmatlas_error)
