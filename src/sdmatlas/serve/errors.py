"""The one place where sdmatlas errors become HTTP responses."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
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


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's parameter validation, as a 400 with one readable sentence per problem."""
    assert isinstance(exc, RequestValidationError)
    problems = []
    for e in exc.errors():
        where = " ".join(str(p) for p in e.get("loc", ()))
        got = e.get("input")
        shown = f" (got {str(got)[:80]!r})" if got is not None and not isinstance(got, dict) else ""
        problems.append(f"{where}: {e.get('msg', 'invalid')}{shown}")
    return JSONResponse(
        {
            "detail": "; ".join(problems),
            "error": "InvalidInputError",
            "problems": [
                {"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", ""))}
                for e in exc.errors()
            ],
        },
        status_code=400,
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(SdmAtlasError, _sdmatlas_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
