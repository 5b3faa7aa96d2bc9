"""OSGeo TMS 1.0.0: the service, tile map and tile resources (y counted from the bottom).

Tiles come from the same core as the XYZ routes (:func:`make_tile`): a TMS
tile (z, x, y) is the XYZ tile (z, x, matrixHeight - 1 - y), same bytes, same ETag.
"""

from __future__ import annotations

from typing import Annotated
from xml.etree import ElementTree as ET

from fastapi import APIRouter, Path, Query, Request, Response

from sdmatlas.errors import InvalidInputError, NotFoundError
from sdmatlas.serve.api.deps import services
from sdmatlas.serve.api.http import answer_tile, tile_response
from sdmatlas.serve.api.tiles import LayerId
from sdmatlas.serve.ogc.xml import xml_response
from sdmatlas.serve.tiles import render
from sdmatlas.serve.tiles.core import TileRequest
from sdmatlas.serve.tiles.layers import (
    group_params,
    group_title,
    layer_id,
    ogc_name,
    parse_ogc_name,
    published_layers,
)
from sdmatlas.serve.tiles.tiling import TMS_NAMES, get_tms
from sdmatlas.serve.urls import public_base

router = APIRouter(tags=["ogc"])

#: TMS profiles. The global ones are "none": OSGeo TMS clients that trust
#: "global-mercator" or "global-geodetic" number our orders one level off (MapProxy
#: takes order n as its level n + 1), so every TileMap says its origin and the
#: units-per-pixel of every order explicitly, from order 0 (GDAL expects order 0 first).
PROFILES = {
    "WebMercatorQuad": "none",
    "WGS1984Quad": "none",
    "EuropeanETRS89_LAEAQuad": "local",
}


def _image_format(fmt: str) -> None:
    if render.check_format(fmt) == "npy":
        raise InvalidInputError("TMS serves images: format png or webp")


def _base(request: Request) -> str:
    return public_base(request, services(request).settings) + "/tms/1.0.0"


@router.get("/tms/1.0.0", summary="TMS 1.0.0 TileMapService: every layer in every profile.")
def tile_map_service(request: Request) -> Response:
    svc = services(request)
    root = ET.Element(
        "TileMapService",
        version="1.0.0",
        services=public_base(request, services(request).settings) + "/",
    )
    ET.SubElement(root, "Title").text = "sdmatlas"
    ET.SubElement(root, "Abstract").text = "AI-predicted species distributions and indicators"
    maps = ET.SubElement(root, "TileMaps")
    entries: list[tuple[str, str]] = []
    releases: dict[str, None] = {}
    for info in published_layers(svc.catalog):
        entries.append((layer_id(info.release, info.name), f"{info.title} ({info.release})"))
        releases[info.release] = None
    for release in releases:  # group layers: each genus, family and status
        for ref, spec in svc.group_layers(release):
            entries.append((ogc_name(ref.id, spec), f"{group_title(ref, spec)} ({release})"))
    for lid, title in entries:
        for name in TMS_NAMES:
            ET.SubElement(
                maps, "TileMap", title=title, srs=f"EPSG:{get_tms(name).crs.to_epsg()}",
                profile=PROFILES[name], href=f"{_base(request)}/{lid}/{name}",
            )  # fmt: skip
    return xml_response(root)


@router.get("/tms/1.0.0/{layer}/{tms}", summary="TMS 1.0.0 TileMap of a layer in a profile.")
def tile_map(
    request: Request,
    layer: LayerId,
    tms: Annotated[str, Path(description=f"One of {', '.join(TMS_NAMES)}.")],
    format: Annotated[str, Query(description="png or webp.")] = "png",
) -> Response:
    """The tile sets of every order of the set, from 0 (every zoom is served; GDAL
    expects order 0 first); tiles use the layer's default style."""
    svc = services(request)
    ref = svc.resolve_ogc(parse_ogc_name(layer))[0]
    matrix_set = get_tms(tms)
    _image_format(format)
    root = ET.Element("TileMap", version="1.0.0", tilemapservice=_base(request) + "/")
    ET.SubElement(root, "Title").text = ref.title
    ET.SubElement(root, "Abstract").text = f"{layer}, version {ref.version}"
    ET.SubElement(root, "SRS").text = f"EPSG:{matrix_set.crs.to_epsg()}"
    b = matrix_set.xy_bbox
    ET.SubElement(root, "BoundingBox", minx=repr(b.left), miny=repr(b.bottom), maxx=repr(b.right),
                  maxy=repr(b.top))  # fmt: skip
    ET.SubElement(root, "Origin", x=repr(b.left), y=repr(b.bottom))
    ET.SubElement(root, "TileFormat", {"width": "256", "height": "256",
                  "mime-type": render.FORMATS[format], "extension": format})  # fmt: skip
    sets = ET.SubElement(root, "TileSets", profile=PROFILES[tms])
    # every order of the set, as WMTS lists every matrix: all of them are served
    for z in range(matrix_set.minzoom, matrix_set.maxzoom + 1):
        attrs = {
            "href": f"{_base(request)}/{layer}/{tms}/{z}",
            "units-per-pixel": repr(matrix_set.matrix(z).cellSize),
            "order": str(z),
        }
        ET.SubElement(sets, "TileSet", attrs)
    return xml_response(root)


@router.get(
    "/tms/1.0.0/{layer}/{tms}/{z}/{x}/{y}.{format}",
    summary="A TMS 1.0.0 tile (y counted from the bottom of the matrix).",
    response_class=Response,
    responses={200: {"content": {"image/png": {}, "image/webp": {}}}},
)
async def tms_tile(
    request: Request,
    layer: LayerId,
    tms: Annotated[str, Path(description=f"One of {', '.join(TMS_NAMES)}.")],
    z: Annotated[int, Path(ge=0, le=30)],
    x: Annotated[int, Path(ge=0)],
    y: Annotated[int, Path(ge=0)],
    format: Annotated[str, Path(description="png or webp.")],
) -> Response:
    matrix_set = get_tms(tms)
    _image_format(format)
    if not matrix_set.minzoom <= z <= matrix_set.maxzoom:
        raise NotFoundError(f"zoom {z} is outside {tms}")
    height = matrix_set.matrix(z).matrixHeight
    if y >= height:
        raise NotFoundError(f"tile row {y} is outside {tms} at zoom {z} (rows < {height})")
    ogc = parse_ogc_name(layer)
    req = TileRequest.of(ogc.id, tms, z, x, height - 1 - y, format, group_params(ogc.group))
    return tile_response(
        await answer_tile(services(request), req, request.headers.get("if-none-match"))
    )
