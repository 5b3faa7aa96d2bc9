"""Absolute URLs of the service, from a trusted base.

Capabilities documents, TileJSON and styles hold absolute URLs, and shared caches
(a CDN, the nginx of deploy/) keep them. Built from the request's ``Host`` header, a
client sending ``Host: evil.example`` could plant its own URLs in what everybody else
receives. So the base is ``SDMATLAS_PUBLIC_URL`` when set; without it, the request's
own base, whose Host the guard middleware (serve/guard.py) has already checked
against ``SDMATLAS_ALLOWED_HOSTS``.
"""

from __future__ import annotations

from starlette.requests import Request

from sdmatlas.settings import Settings


def public_base(request: Request, settings: Settings) -> str:
    """The service's base URL, without a trailing slash."""
    if settings.public_url:
        return settings.public_url.rstrip("/")
    return str(request.base_url).rstrip("/")


def host_allowed(host: str, allowed: list[str]) -> bool:
    """Whether a Host header value (with or without a port) is in the allow-list:
    exact names, ``*.example.org`` for subdomains, or ``*`` for any."""
    name = host.strip().lower()
    if name.startswith("["):  # an IPv6 literal, [::1]:8000
        name = name[: name.find("]") + 1] if "]" in name else name
    else:
        name = name.rsplit(":", 1)[0] if name.count(":") == 1 else name
    for pattern in allowed:
        pat = pattern.strip().lower()
        if pat == "*" or pat == name:
            return True
        if pat.startswith("*.") and name.endswith(pat[1:]) and len(name) > len(pat) - 1:
            return True
    return False
