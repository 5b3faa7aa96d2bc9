"""A sliding-window request-rate limit per API key."""

from __future__ import annotations

import math
import threading
import time
from collections import deque

from sdmatlas.catalog.keys import KeyInfo
from sdmatlas.errors import QuotaExceededError


class RateLimiter:
    """At most ``per_minute`` requests per key in any sliding minute, in this process
    (with N API processes a key gets up to N times as many; docs/ondemand.md)."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._hits: dict[int, deque[float]] = {}
        self._lock = threading.Lock()

    def hit(self, key: KeyInfo, now: float | None = None) -> None:
        t = time.monotonic() if now is None else now
        with self._lock:
            q = self._hits.setdefault(key.id, deque())
            while q and q[0] <= t - 60.0:
                q.popleft()
            if len(q) >= self.per_minute:
                wait = math.ceil(60.0 - (t - q[0]))
                raise QuotaExceededError(
                    f"key {key.name!r} sent {len(q)} job requests in the last minute, the most "
                    f"allowed (jobs_requests_per_minute={self.per_minute}): retry in {wait} s"
                )
            q.append(t)
