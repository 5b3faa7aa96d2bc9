"""The reference web pages and their static files at ``/static``.

* ``/``: the viewer (``static/index.html``, ``viewer.js``), on Leaflet;
* ``/maplibre``: the MapLibre GL JS reference page (``static/maplibre.html``,
  ``maplibre.js``): the layer's ``style.json`` and TileJSON, nothing more.

Leaflet and MapLibre GL JS are vendored from npm by ``scripts/build-viewer.sh`` into
``static/vendor``; the pages request nothing from any host but this server. The
colormaps are written into each page, so it needs no extra call.
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
def _page(name: str) -> str:
    config = {"colormaps": list(render.LISTED_STYLES), "default_colormap": render.DEFAULT_COLORMAP}
    # "</" cannot occur in the JSON of these names; escape it anyway for the script tag
    text = json.dumps(config).replace("</", "<\\/")
    return (STATIC / name).read_text(encoding="utf-8").replace("__CONFIG__", text)


@router.get("/", response_class=HTMLResponse, summary="The web viewer.", include_in_schema=False)
def index() -> HTMLResponse:
    return HTMLResponse(_page("index.html"), headers={"Cache-Control": "no-cache"})


@router.get("/maplibre", response_class=HTMLResponse, include_in_schema=False,
            summary="The MapLibre GL JS reference page.")  # fmt: skip
def maplibre() -> HTMLResponse:
    return HTMLResponse(_page("maplibre.html"), headers={"Cache-Control": "no-cache"})


def install(app: FastAPI) -> None:
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
