"""Request metrics and structured access logs, for every request.

One plain ASGI middleware, outermost, so it times everything (the tile fast path
included) and sees the final status. Each request gets an id: the client's
``X-Request-ID`` when it is a sane token, else a new one; it is sent back in
``X-Request-ID`` and written in the access log line. Routes are labelled by their
template (``/layers/{layer}``), never by the raw path, so the metrics' cardinality
stays bounded.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sdmatlas.serve.observe import metrics

access = logging.getLogger("sdmatlas.access")
_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
TILE_ROUTE = "/tiles/{layer}/{tms}/{z}/{x}/{y}.{format}"


class ObserveMiddleware:
    def __init__(self, app: ASGIApp, pool: object | None = None) -> None:
        self.app = app
        self.pool = pool

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        rid = ""
        for k, v in scope.get("headers") or []:
            if k == b"x-request-id":
                text = v.decode("latin-1")
                rid = text if _ID.match(text) else ""
        rid = rid or uuid.uuid4().hex
        seen: dict[str, Any] = {"status": 500, "bytes": 0, "cache": None}

        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
                for k, v in message.get("headers", []):
                    if k.lower() == b"x-cache":
                        seen["cache"] = v.decode("latin-1")
                message = {
                    **message,
                    "headers": [*message.get("headers", []), (b"x-request-id", rid.encode())],
                }
            elif message["type"] == "http.response.body":
                seen["bytes"] += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, wrapped)
        finally:
            self._record(scope, rid, seen, time.perf_counter() - t0)

    def _record(self, scope: Scope, rid: str, seen: dict[str, Any], seconds: float) -> None:
        route = scope.get("route")
        path = scope.get("path", "")
        if route is not None and hasattr(route, "path"):
            label = str(route.path)
        elif path.startswith("/tiles/"):
            label = TILE_ROUTE
        else:
            label = "unmatched"
        status = int(seen["status"])
        metrics.REQUESTS.labels(label, scope.get("method", ""), str(status)).inc()
        metrics.LATENCY.labels(label).observe(seconds)
        if self.pool is not None:
            metrics.observe_pool(self.pool)
        if access.isEnabledFor(logging.INFO):
            client = scope.get("client")
            access.info(
                "request",
                extra={
                    "request_id": rid,
                    "method": scope.get("method"),
                    "path": path,
                    "query": scope.get("query_string", b"").decode("latin-1")[:500],
                    "route": label,
                    "status": status,
                    "duration_ms": round(seconds * 1000, 2),
                    "bytes": seen["bytes"],
                    "cache": seen["cache"],
                    "client": client[0] if client else None,
                },
            )


_RESERVED = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message"}


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and the record's extras."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        doc |= {k: v for k, v in record.__dict__.items() if k not in _RESERVED}
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def configure_logging(fmt: str) -> None:
    """Logs of ``sdmatlas serve`` on stderr: JSON lines, or plain text."""
    handler = logging.StreamHandler()
    if fmt == "json":
        formatter: logging.Formatter = JSONFormatter()
        formatter.converter = time.gmtime
    else:
        formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    handler.setFormatter(formatter)
    root = logging.getLogger("sdmatlas")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False
