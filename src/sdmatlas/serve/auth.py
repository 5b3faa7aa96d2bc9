"""Write access: the API key a request carries, its scope, and a request-rate limit.

Routes that create, change or delete anything depend on :func:`require`; read routes
stay open. Keys are checked against the catalog (:mod:`sdmatlas.catalog.keys`) in the
executor, never on the event loop.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Request

from sdmatlas.catalog.keys import KeyInfo, authenticate
from sdmatlas.serve.api.deps import services
from sdmatlas.serve.offload import offload


def require(scope: str, limited: bool = False) -> Callable[[Request], Awaitable[KeyInfo]]:
    """A dependency: the request's valid API key holding ``scope`` (401/403 otherwise),
    counted against the key's rate limit when ``limited``."""

    async def dependency(request: Request) -> KeyInfo:
        svc = services(request)
        key = await offload(authenticate, svc.catalog, request.headers.get("authorization"), scope)
        if limited:
            svc.job_rate.hit(key)
        return key

    return dependency
