"""The reference web viewer: one page at ``/`` and its static files at ``/static``.

The page (``static/index.html``, ``viewer.js``) uses Leaflet, vendored from npm by
``scripts/build-viewer.sh`` into ``static/vendor``; it requests nothing from any host
but this server. The colormaps are written into the page, so it needs no extra call.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from sdmatlas.serve.tiles import render

STATIC = Path(__file__).resolve().parents[1] / "static"
router = APIRouter(tags=["viewer"])


@functools.cache
def _page() -> str:
    config = {"colormaps": list(render.LISTED_STYLES), "default_colormap": render.DEFAULT_COLORMAP}
    # "</" cannot occur in the JSON of these names; escape it anyway for the script tag
    text = json.dumps(config).replace("</", "<\\/")
    return (STATIC / "index.html").read_text(encoding="utf-8").replace("__CONFIG__", text)


@router.get("/", response_class=HTMLResponse, summary="The web viewer.", include_in_schema=False)
def index() -> HTMLResponse:
    return HTMLResponse(_page(), headers={"Cache-Control": "no-cache"})


def install(app: FastAPI) -> None:
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
