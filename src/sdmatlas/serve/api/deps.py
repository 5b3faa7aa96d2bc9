"""What routes take from the app: its per-process services."""

from __future__ import annotations

from starlette.requests import Request

from sdmatlas.serve.services import Services


def services(request: Request) -> Services:
    """The services the app factory built for this process."""
    s: Services = request.app.state.services
    return s
