"""The one place where errors become responses: a table from exception classes to an
HTTP status and OGC exception codes, and the JSON error document of the REST API.

Protocols only choose the document: the REST API and the tile fast path write JSON
(``{"detail", "error"}``), WMS a ServiceExceptionReport, WMTS an OWS ExceptionReport,
all with the status of this table. Server-side faults are 5xx in every protocol, with
``Retry-After`` where retrying may help.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from sdmatlas import errors as e

log = logging.getLogger("sdmatlas.serve")

#: Seconds a client should wait before retrying a 503.
RETRY_AFTER = 5


@dataclass(frozen=True)
class ErrorCode:
    """How one class of errors is answered."""

    status: int
    wms: str | None  # WMS 1.3.0 exception code (None: no code attribute)
    ows: str  # OWS 1.1 exceptionCode (WMTS)

    @property
    def retry(self) -> bool:
        return self.status in (429, 503)


#: Exception class -> answer; the most specific class in an error's MRO wins.
TABLE: dict[type[BaseException], ErrorCode] = {
    e.MissingParameterError: ErrorCode(400, "MissingParameterValue", "MissingParameterValue"),
    e.OperationNotSupportedError: ErrorCode(400, "OperationNotSupported", "OperationNotSupported"),
    e.InvalidCRSError: ErrorCode(400, "InvalidCRS", "InvalidParameterValue"),
    e.InvalidFormatError: ErrorCode(400, "InvalidFormat", "InvalidParameterValue"),
    e.StyleNotDefinedError: ErrorCode(400, "StyleNotDefined", "InvalidParameterValue"),
    e.InvalidDimensionError: ErrorCode(400, "InvalidDimensionValue", "InvalidParameterValue"),
    e.InvalidPointError: ErrorCode(400, "InvalidPoint", "PointIJOutOfRange"),
    e.LayerNotQueryableError: ErrorCode(400, "LayerNotQueryable", "InvalidParameterValue"),
    e.TileOutOfRangeError: ErrorCode(400, None, "TileOutOfRange"),
    e.BudgetExceededError: ErrorCode(413, None, "InvalidParameterValue"),
    e.InvalidInputError: ErrorCode(400, None, "InvalidParameterValue"),
    e.NotFoundError: ErrorCode(404, "LayerNotDefined", "InvalidParameterValue"),
    e.ConflictError: ErrorCode(409, None, "NoApplicableCode"),
    e.BusyError: ErrorCode(429, None, "NoApplicableCode"),
    e.AuthenticationError: ErrorCode(401, None, "NoApplicableCode"),
    e.PermissionDeniedError: ErrorCode(403, None, "NoApplicableCode"),
    e.DatabaseUnavailableError: ErrorCode(503, None, "NoApplicableCode"),
    e.StorageUnavailableError: ErrorCode(503, None, "NoApplicableCode"),
    e.DeadlineExceededError: ErrorCode(503, None, "NoApplicableCode"),
    e.CorruptDataError: ErrorCode(500, None, "NoApplicableCode"),
    e.SdmAtlasError: ErrorCode(500, None, "NoApplicableCode"),
    BaseException: ErrorCode(500, None, "NoApplicableCode"),
}

#: What a client sees of an unexpected error (the details go to the log, not out).
INTERNAL = "internal error: the request could not be completed (it is logged)"


def code_of(exc: BaseException) -> ErrorCode:
    for cls in type(exc).__mro__:
        hit = TABLE.get(cls)
        if hit is not None:
            return hit
    return TABLE[BaseException]  # pragma: no cover (BaseException is in every MRO)


def message_of(exc: BaseException) -> str:
    """The message a client may see: ours say what to fix; others are not shown."""
    return str(exc) if isinstance(exc, e.SdmAtlasError) else INTERNAL


def headers_of(exc: BaseException) -> dict[str, str]:
    if isinstance(exc, e.AuthenticationError):  # RFC 6750: say which scheme is wanted
        return {"WWW-Authenticate": 'Bearer realm="sdmatlas"'}
    if isinstance(exc, e.PermissionDeniedError):
        return {"WWW-Authenticate": 'Bearer realm="sdmatlas", error="insufficient_scope"'}
    return {"Retry-After": str(RETRY_AFTER)} if code_of(exc).retry else {}


def json_body(exc: BaseException) -> bytes:
    name = type(exc).__name__ if isinstance(exc, e.SdmAtlasError) else "InternalError"
    return json.dumps({"detail": message_of(exc), "error": name}).encode()


def log_if_fault(exc: BaseException) -> None:
    """Server faults (5xx other than a retryable outage) are logged with their trace."""
    if code_of(exc).status == 500:
        log.error("request failed: %r", exc, exc_info=exc)


async def _sdmatlas_error(_request: Request, exc: Exception) -> JSONResponse:
    log_if_fault(exc)
    return JSONResponse(
        json.loads(json_body(exc)), status_code=code_of(exc).status, headers=headers_of(exc)
    )


#: Starlette's own 404/405/... become the documented shape, with an error name.
_HTTP_NAMES = {404: "NotFoundError", 405: "MethodNotAllowedError", 400: "InvalidInputError"}


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    detail = exc.detail
    if exc.status_code == 404 and detail == "Not Found":
        detail = "no such URL: see /docs for the API, /wms and /wmts for the OGC services"
    elif exc.status_code == 405:
        detail = f"method not allowed here; allowed: {(exc.headers or {}).get('Allow', 'GET')}"
    return JSONResponse(
        {"detail": detail, "error": _HTTP_NAMES.get(exc.status_code, "HTTPError")},
        status_code=exc.status_code,
        headers=exc.headers,
    )


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's parameter validation, as a 400 with one readable sentence per problem."""
    assert isinstance(exc, RequestValidationError)
    problems = []
    for err in exc.errors():
        where = " ".join(str(p) for p in err.get("loc", ()))
        got = err.get("input")
        shown = f" (got {str(got)[:80]!r})" if got is not None and not isinstance(got, dict) else ""
        problems.append(f"{where}: {err.get('msg', 'invalid')}{shown}")
    return JSONResponse(
        {
            "detail": "; ".join(problems),
            "error": "InvalidInputError",
            "problems": [
                {"loc": [str(p) for p in err.get("loc", ())], "msg": str(err.get("msg", ""))}
                for err in exc.errors()
            ],
        },
        status_code=400,
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(e.SdmAtlasError, _sdmatlas_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
