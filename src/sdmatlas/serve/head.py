"""HEAD wherever GET is answered (RFC 9110 §9.1: every server supports GET and HEAD).

GDAL's ``/vsicurl/`` asks HEAD before ranged GETs, and caches and link checkers use it
too. FastAPI declares GET routes only, so a HEAD used to be a 405. This ASGI
middleware runs a HEAD request as the GET it mirrors and sends the same status and
headers (Content-Length included) with no body, so the two can never disagree.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class HeadMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "HEAD":
            await self.app(scope, receive, send)
            return

        async def bodiless(message: Message) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body"):
                    return  # drop the body, keep the stream going
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, bodiless)
