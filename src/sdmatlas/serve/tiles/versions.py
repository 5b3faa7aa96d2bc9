"""Caching headers from layer versions, and the stage timings of a response.

Framework-free: the tiles core computes a tile's strong ETag and Cache-Control here,
and the web layer writes them.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from contextlib import contextmanager

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
