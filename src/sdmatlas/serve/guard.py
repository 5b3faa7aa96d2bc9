"""The outermost checks of every request, before any route runs.

* **Headers**: more than ``SDMATLAS_MAX_HEADER_BYTES`` in all is a 431.
* **Host**: without ``SDMATLAS_PUBLIC_URL``, a Host header outside
  ``SDMATLAS_ALLOWED_HOSTS`` is a 400, so no response is ever built from a host a
  client made up (serve/urls.py says why).
* **Body**: a declared ``Content-Length`` over ``SDMATLAS_MAX_BODY_BYTES`` is a 413 at
  once; a body without one is counted as it arrives and cut off at the budget, so no
  route ever holds more than the budget in memory.
* **Deadline**: the request's work runs under ``SDMATLAS_REQUEST_DEADLINE_SECONDS``
  (:mod:`sdmatlas.budget`); long loops stop with a 503 once it has passed.

A plain ASGI middleware: it adds nothing to the path of a request that passes.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sdmatlas import budget
from sdmatlas.serve.urls import host_allowed
from sdmatlas.settings import Settings


class BodyTooLargeError(Exception):
    """Raised into the app by the counting ``receive`` once the budget is passed."""


class GuardMiddleware:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        s = self.settings
        headers = scope.get("headers") or []
        size = sum(len(k) + len(v) + 4 for k, v in headers)
        if size > s.max_header_bytes:
            await _refuse(send, 431, "BudgetExceededError",
                          f"request headers: {size:,} bytes, over the budget of "
                          f"{s.max_header_bytes:,} (SDMATLAS_MAX_HEADER_BYTES)")  # fmt: skip
            return
        if not s.public_url:
            host = next((v for k, v in headers if k == b"host"), b"").decode("latin-1")
            if not host_allowed(host, s.allowed_hosts):
                await _refuse(send, 400, "InvalidInputError",
                              f"Host {host[:100]!r} is not served here: set "
                              "SDMATLAS_PUBLIC_URL, or add the host to "
                              "SDMATLAS_ALLOWED_HOSTS")  # fmt: skip
                return
        declared = next((v for k, v in headers if k == b"content-length"), None)
        limit = s.max_body_bytes
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await _refuse(send, 413, "BudgetExceededError", _body_message(declared, limit))
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLargeError
            return message

        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            with budget.deadline(s.request_deadline_seconds):
                await self.app(scope, counted, tracked)
        except BodyTooLargeError:
            if not started:
                await _refuse(send, 413, "BudgetExceededError",
                              _body_message(f"more than {limit:,}".encode(), limit))  # fmt: skip


def _body_message(declared: bytes, limit: int) -> str:
    got = declared.decode("latin-1")[:40]
    return (
        f"request body: {got} bytes, over the budget of {limit:,} (SDMATLAS_MAX_BODY_BYTES): "
        "simplify the polygon, or ask for a territory of the catalog (GET /report?territory=)"
    )


async def _refuse(send: Send, status: int, error: str, detail: str) -> None:
    body = json.dumps({"detail": detail, "error": error}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
