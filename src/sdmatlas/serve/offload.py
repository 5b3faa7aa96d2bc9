"""The one bounded executor of an API process.

Anything that can block or run long (catalog queries, cache I/O and locks, GetMap,
capabilities, area reports, COG exports, JSON parsing of bodies) runs in anyio's
worker threads, the same pool that runs FastAPI's plain ``def`` routes, so there is
one concurrency budget: ``SDMATLAS_EXECUTOR_THREADS``, set by :func:`size_executor`
when the app starts. The event loop only parses requests, answers ``/health`` and
renders what cannot block, so a slow request never holds the others.

Work in a thread runs in a copy of the request's context, so it sees the request's
deadline (:mod:`sdmatlas.budget`).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import ParamSpec, TypeVar

import anyio.to_thread

from sdmatlas.errors import BusyError

P = ParamSpec("P")
T = TypeVar("T")


async def offload(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """``fn(*args, **kwargs)`` in the executor, awaited."""
    return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))


def size_executor(threads: int) -> None:
    """Size the executor of the running event loop (call from the app's lifespan)."""
    anyio.to_thread.current_default_thread_limiter().total_tokens = threads


class HeavySlots:
    """Admission of heavy requests (a 4096 x 4096 GetMap is about a second of CPU and
    hundreds of MB): at most ``n`` at once in this process. The others wait on the
    event loop, holding no thread, for up to ``wait_s``; then 429 with Retry-After.
    Light requests never wait for them, so tiles and /health keep their latency."""

    def __init__(self, n: int, wait_s: float) -> None:
        self.n, self.wait_s = n, wait_s
        self._sem: asyncio.Semaphore | None = None

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self._sem is None:  # made on first use, on the serving loop
            self._sem = asyncio.Semaphore(self.n)
        try:
            await asyncio.wait_for(self._sem.acquire(), self.wait_s)
        except TimeoutError:
            raise BusyError(
                f"{self.n} heavy request(s) (large GetMaps, COG exports) already run in this "
                f"process (SDMATLAS_HEAVY_REQUESTS): retry later, or ask for tiles"
            ) from None
        try:
            yield
        finally:
            self._sem.release()
