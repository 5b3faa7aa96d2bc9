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

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import anyio.to_thread

P = ParamSpec("P")
T = TypeVar("T")


async def offload(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """``fn(*args, **kwargs)`` in the executor, awaited."""
    return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))


def size_executor(threads: int) -> None:
    """Size the executor of the running event loop (call from the app's lifespan)."""
    anyio.to_thread.current_default_thread_limiter().total_tokens = threads
