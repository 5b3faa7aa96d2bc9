"""ETag and Server-Timing for every response that does not set its own.

Tiles, legends and downloads set a strong ETag from the layer version themselves
(and answer 304 before rendering). Metadata, point and report responses get one here
from the SHA-256 of their body, with the 304 round trip, and every response gets a
``Server-Timing: app;dur=...`` if it has none. A plain ASGI middleware (not
Starlette's BaseHTTPMiddleware) so that responses that already carry an ETag pass
through with no buffering.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class ETagTimingMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        headers_in = dict(scope.get("headers") or [])
        if_none_match = headers_in.get(b"if-none-match", b"").decode("latin-1")
        is_get = scope.get("method") in ("GET", "HEAD")
        start: dict[str, Any] = {}
        body: list[bytes] = []

        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                extra = []
                if b"server-timing" not in names:
                    dur = (time.perf_counter() - t0) * 1000
                    extra.append((b"server-timing", f"app;dur={dur:.2f}".encode()))
                message = {**message, "headers": [*message.get("headers", []), *extra]}
                if b"etag" in names or not is_get or message["status"] != 200:
                    start["passthrough"] = True
                    await send(message)
                    return
                start["message"] = message
                return
            if start.get("passthrough"):
                await send(message)
                return
            body.append(message.get("body", b""))
            if message.get("more_body"):
                return
            data = b"".join(body)
            tag = f'"{hashlib.sha256(data).hexdigest()[:32]}"'
            head = start["message"]
            headers = [(k, v) for k, v in head["headers"] if k.lower() != b"content-length"]
            headers.append((b"etag", tag.encode()))
            if tag in {t.strip().removeprefix("W/") for t in if_none_match.split(",")}:
                await send({**head, "status": 304, "headers": headers})
                await send({"type": "http.response.body", "body": b""})
                return
            headers.append((b"content-length", str(len(data)).encode()))
            await send({**head, "headers": headers})
            await send({"type": "http.response.body", "body": data})

        await self.app(scope, receive, wrapped)
