"""HTTP details shared by the routes: 304s, responses with ETags and Server-Timing, and
tiles from the core answered on the event loop or in the executor."""

from __future__ import annotations

from fastapi import Request, Response

from sdmatlas.serve.offload import offload
from sdmatlas.serve.services import Services
from sdmatlas.serve.tiles.core import Tile, TileRequest, make_tile
from sdmatlas.serve.tiles.versions import Timer, tag_matches


def not_modified(request: Request, tag: str) -> bool:
    """True when the client's If-None-Match already holds ``tag``."""
    header = request.headers.get("if-none-match")
    return bool(header) and tag_matches(str(header), tag)


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


async def answer_tile(svc: Services, req: TileRequest, if_none_match: str | None) -> Tile:
    """A tile for an async route: on the event loop when nothing can block (a hit in the
    in-process LRU, or a render with only in-process caches), else in the executor."""
    tile = make_tile(svc, req, if_none_match, hot=True)
    if tile is None:
        tile = await offload(make_tile, svc, req, if_none_match)
    assert tile is not None
    return tile


def tile_response(tile: Tile) -> Response:
    return Response(tile.body, status_code=tile.status, headers=tile.headers(),
                    media_type=tile.media_type)  # fmt: skip
