"""HTTP details shared by the routes: ETags, caching headers, Server-Timing."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from contextlib import contextmanager

from fastapi import Request, Response

#: Versioned URLs (with ``?v=<layer version>``) never change: cache for a year.
IMMUTABLE = "public, max-age=31536000, immutable"
#: Unversioned URLs may change when a release is republished or retired.
SHORT = "public, max-age=60"


def etag(*parts: object) -> str:
    """A strong ETag from the layer version and every parameter that shapes the bytes."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()
    return f'"{digest[:32]}"'


def tag_matches(if_none_match: str, tag: str) -> bool:
    """True when an If-None-Match header value holds ``tag`` (or is ``*``)."""
    if if_none_match.strip() == "*":
        return True
    return tag in {t.strip().removeprefix("W/") for t in if_none_match.split(",")}


def not_modified(request: Request, tag: str) -> bool:
    """True when the client's If-None-Match already holds ``tag``."""
    header = request.headers.get("if-none-match")
    return bool(header) and tag_matches(str(header), tag)


def cache_control(version: str, v: str | None) -> str:
    return IMMUTABLE if v is not None and v == version else SHORT


class Timer:
    """Collects named durations for the Server-Timing header."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, float]] = []
        self.level: int | None = None  # the pyramid level a tile was read from

    @contextmanager
    def span(self, name: str) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            self.spans.append((name, (time.perf_counter() - t) * 1000))

    def header(self) -> str:
        return ", ".join(f"{n};dur={d:.2f}" for n, d in self.spans)


def respond(
    request: Request,
    body: bytes,
    media_type: str,
    tag: str,
    cache: str,
    timer: Timer,
    extra: dict[str, str] | None = None,
) -> Response:
    headers = {"ETag": tag, "Cache-Control": cache, "Server-Timing": timer.header()}
    headers.update(extra or {})
    if not_modified(request, tag):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=media_type, headers=headers)
