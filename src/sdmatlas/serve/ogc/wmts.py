"""OGC WMTS 1.0.0: capabilities, GetTile and GetFeatureInfo in KVP and RESTful encodings.

Tiles come from the same core as the XYZ routes (:func:`make_tile`): the
WMTS tile (TileMatrix, TileRow, TileCol) of a TileMatrixSet is the XYZ tile
(z, x = TileCol, y = TileRow), same bytes, same ETag. Styles are the colormaps.
Errors are OWS ExceptionReports with the standard codes (never a 5xx).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any
from xml.etree import ElementTree as ET

from fastapi import APIRouter, Path, Request, Response

from sdmatlas.errors import (
    InvalidInputError,
    InvalidPointError,
    LayerNotQueryableError,
    MissingParameterError,
    NotFoundError,
    OperationNotSupportedError,
    SdmAtlasError,
    StyleNotDefinedError,
    TileOutOfRangeError,
)
from sdmatlas.serve.api.deps import services
from sdmatlas.serve.api.http import tile_response
from sdmatlas.serve.errors import code_of, headers_of, log_if_fault, message_of
from sdmatlas.serve.offload import offload
from sdmatlas.serve.ogc.feature_info import INFO_FORMATS, info_response, value_at
from sdmatlas.serve.ogc.xml import text_child, xml_response
from sdmatlas.serve.services import Services
from sdmatlas.serve.tiles import render
from sdmatlas.serve.tiles.core import TileRequest, layer_style, make_tile
from sdmatlas.serve.tiles.layers import (
    GroupSpec,
    LayerRef,
    group_params,
    group_title,
    layer_id,
    ogc_name,
    parse_ogc_name,
    published_layers,
)
from sdmatlas.serve.tiles.tiling import TILE_SIZE, TMS_NAMES, get_tms, tile_bounds, tms_crs
from sdmatlas.serve.tiles.versions import SHORT
from sdmatlas.serve.urls import public_base

router = APIRouter(tags=["ogc"])

WMTS = "http://www.opengis.net/wmts/1.0"
OWS = "http://www.opengis.net/ows/1.1"
XLINK = "http://www.w3.org/1999/xlink"
ET.register_namespace("", WMTS)
ET.register_namespace("ows", OWS)
ET.register_namespace("xlink", XLINK)
WELL_KNOWN = {"WebMercatorQuad": "urn:ogc:def:wkss:OGC:1.0:GoogleMapsCompatible"}
IMAGE_FORMATS = {"image/png": "png", "image/webp": "webp"}
INFO_EXTENSIONS = {"json": "application/json", "txt": "text/plain", "html": "text/html"}


def _ows(tag: str) -> str:
    return f"{{{OWS}}}{tag}"


def _w(tag: str) -> str:
    return f"{{{WMTS}}}{tag}"


def exception_report(exc: BaseException) -> Response:
    """Any error as an OWS ExceptionReport, with the status and code of the one error
    table (serve/errors.py)."""
    log_if_fault(exc)
    locator = exc.locator if isinstance(exc, SdmAtlasError) else None
    attrs = {"exceptionCode": code_of(exc).ows} | ({"locator": locator} if locator else {})
    root = ET.Element(_ows("ExceptionReport"), version="1.1.0")
    e = ET.SubElement(root, _ows("Exception"), attrs)
    ET.SubElement(e, _ows("ExceptionText")).text = message_of(exc)
    response = xml_response(root, status=code_of(exc).status)
    response.headers.update(headers_of(exc))
    return response


def capabilities(svc: Services, base: str) -> Response:
    """The capabilities document, remembered per base URL for the layer-cache delay
    (it costs 0.15-0.27 s at 200 species)."""
    body = svc.memo(("wmts", base), lambda: _capabilities(svc, base))
    return Response(body, media_type="application/xml", headers={"Cache-Control": SHORT})


def _capabilities(svc: Services, base: str) -> bytes:
    root = ET.Element(_w("Capabilities"), version="1.0.0")
    ident = ET.SubElement(root, _ows("ServiceIdentification"))
    text_child(ident, _ows("Title"), "sdmatlas")
    text_child(ident, _ows("Abstract"), "AI-predicted species distributions and indicators")
    text_child(ident, _ows("ServiceType"), "OGC WMTS")
    text_child(ident, _ows("ServiceTypeVersion"), "1.0.0")
    ops = ET.SubElement(root, _ows("OperationsMetadata"))
    for op in ("GetCapabilities", "GetTile", "GetFeatureInfo"):
        o = ET.SubElement(ops, _ows("Operation"), name=op)
        http = ET.SubElement(ET.SubElement(o, _ows("DCP")), _ows("HTTP"))
        for encoding, href in (("KVP", f"{base}/wmts?"), ("RESTful", f"{base}/wmts/1.0.0/")):
            get = ET.SubElement(http, _ows("Get"), {f"{{{XLINK}}}href": href})
            c = ET.SubElement(get, _ows("Constraint"), name="GetEncoding")
            text_child(ET.SubElement(c, _ows("AllowedValues")), _ows("Value"), encoding)
    contents = ET.SubElement(root, _w("Contents"))
    boxes: dict[str, list[Box]] = {}
    for info in published_layers(svc.catalog):
        lid = layer_id(info.release, info.name)
        _layer_element(contents, base, lid, f"{info.title} ({info.release})",
                       f"{info.kind} layer {lid}, version {info.version}", info.bbox,
                       classes=info.kind == "classes")  # fmt: skip
        boxes.setdefault(info.release, []).extend([info.bbox] if info.bbox else [])
    for release, bs in boxes.items():  # group layers: each genus, family and status
        union = (min(b[0] for b in bs), min(b[1] for b in bs), max(b[2] for b in bs),
                 max(b[3] for b in bs)) if bs else None  # fmt: skip
        for ref, spec in svc.group_layers(release):
            name = ogc_name(ref.id, spec)
            _layer_element(contents, base, name, f"{group_title(ref, spec)} ({release})",
                           f"group layer {name}, computed on request, version {ref.version}",
                           union, legend_id=ref.id)  # fmt: skip
    for name in TMS_NAMES:
        tms = get_tms(name)
        el = ET.SubElement(contents, _w("TileMatrixSet"))
        text_child(el, _ows("Identifier"), name)
        crs = f"urn:ogc:def:crs:EPSG::{tms.crs.to_epsg()}"
        b = tms.xy_bbox  # x = easting or longitude; written in the CRS's own axis order
        lower, upper = (b.left, b.bottom), (b.right, b.top)
        if tms._invert_axis:  # morecantile keeps the CRS axis order here (no public name)
            lower, upper = lower[::-1], upper[::-1]
        box = ET.SubElement(el, _ows("BoundingBox"), crs=crs)
        text_child(box, _ows("LowerCorner"), f"{lower[0]!r} {lower[1]!r}")
        text_child(box, _ows("UpperCorner"), f"{upper[0]!r} {upper[1]!r}")
        text_child(el, _ows("SupportedCRS"), crs)
        if name in WELL_KNOWN:
            text_child(el, _w("WellKnownScaleSet"), WELL_KNOWN[name])
        # every matrix of the set: every one is served (deeper than the release's
        # resolution by nearest neighbour), so none is served unadvertised
        for z in range(tms.minzoom, tms.maxzoom + 1):
            m = tms.matrix(z)
            tm = ET.SubElement(el, _w("TileMatrix"))
            text_child(tm, _ows("Identifier"), str(z))
            text_child(tm, _w("ScaleDenominator"), repr(m.scaleDenominator))
            text_child(tm, _w("TopLeftCorner"), f"{m.pointOfOrigin[0]!r} {m.pointOfOrigin[1]!r}")
            text_child(tm, _w("TileWidth"), str(m.tileWidth))
            text_child(tm, _w("TileHeight"), str(m.tileHeight))
            text_child(tm, _w("MatrixWidth"), str(m.matrixWidth))
            text_child(tm, _w("MatrixHeight"), str(m.matrixHeight))
    body: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return body


Box = tuple[float, float, float, float]


def _layer_element(
    contents: ET.Element, base: str, lid: str, title: str, abstract: str, bbox: Box | None,
    legend_id: str | None = None, classes: bool = False,
) -> None:  # fmt: skip
    """One Layer of the Contents: its box, styles, formats and RESTful templates; a
    group layer (``legend_id``: its indicator's legend) answers no GetFeatureInfo."""
    layer = ET.SubElement(contents, _w("Layer"))
    text_child(layer, _ows("Title"), title)
    text_child(layer, _ows("Abstract"), abstract)
    w, s_, e, n = bbox or (-180.0, -85.0, 180.0, 85.0)
    bb = ET.SubElement(layer, _ows("WGS84BoundingBox"))
    text_child(bb, _ows("LowerCorner"), f"{w} {s_}")
    text_child(bb, _ows("UpperCorner"), f"{e} {n}")
    text_child(layer, _ows("Identifier"), lid)
    # a class layer has one style, its classes' colours
    for name in (render.CLASS_STYLE,) if classes else render.LISTED_STYLES:
        default = name in (render.DEFAULT_COLORMAP, render.CLASS_STYLE)
        st = ET.SubElement(layer, _w("Style"), isDefault=str(default).lower())
        text_child(st, _ows("Identifier"), name)
        legend = f"{base}/layers/{legend_id or lid}/legend.png?colormap={name}"
        ET.SubElement(st, _w("LegendURL"), {"format": "image/png", f"{{{XLINK}}}href": legend})
    for mime in IMAGE_FORMATS:
        text_child(layer, _w("Format"), mime)
    for mime in INFO_FORMATS if legend_id is None else ():
        text_child(layer, _w("InfoFormat"), mime)
    for name in TMS_NAMES:
        link = ET.SubElement(layer, _w("TileMatrixSetLink"))
        text_child(link, _w("TileMatrixSet"), name)
    for mime, ext in IMAGE_FORMATS.items():
        template = (f"{base}/wmts/1.0.0/{lid}/{{Style}}/{{TileMatrixSet}}/{{TileMatrix}}/"
                    f"{{TileRow}}/{{TileCol}}.{ext}")  # fmt: skip
        ET.SubElement(layer, _w("ResourceURL"), format=mime, resourceType="tile",
                      template=template)  # fmt: skip
    for ext, mime in INFO_EXTENSIONS.items() if legend_id is None else ():
        template = (f"{base}/wmts/1.0.0/{lid}/{{Style}}/{{TileMatrixSet}}/{{TileMatrix}}/"
                    f"{{TileRow}}/{{TileCol}}/{{J}}/{{I}}.{ext}")  # fmt: skip
        ET.SubElement(layer, _w("ResourceURL"), format=mime, resourceType="FeatureInfo",
                      template=template)  # fmt: skip


def _tile_address(tms: str, matrix: str, row: str, col: str) -> tuple[int, int, int]:
    """(TileMatrix, TileRow, TileCol) as integers inside the matrix set, or OWS errors."""
    if tms not in TMS_NAMES:
        raise InvalidInputError(f"TileMatrixSet {tms[:64]!r} is not one of "
                                f"{', '.join(TMS_NAMES)}").at("TileMatrixSet")  # fmt: skip
    try:
        z, y, x = int(matrix), int(row), int(col)
    except ValueError:
        raise InvalidInputError("TileMatrix, TileRow and TileCol must be integers").at(
            "TileMatrix"
        ) from None
    matrix_set = get_tms(tms)
    if not matrix_set.minzoom <= z <= matrix_set.maxzoom:
        raise InvalidInputError(f"TileMatrix {z} is not in {tms}").at("TileMatrix")
    m = matrix_set.matrix(z)
    if not (0 <= y < m.matrixHeight):
        raise TileOutOfRangeError(f"TileRow {y} is outside 0..{m.matrixHeight - 1}").at("TileRow")
    if not (0 <= x < m.matrixWidth):
        raise TileOutOfRangeError(f"TileCol {x} is outside 0..{m.matrixWidth - 1}").at("TileCol")
    return z, y, x


def _layer(svc: Services, layer: str) -> tuple[LayerRef, GroupSpec | None]:
    """The layer and group of a WMTS layer identifier; unknown layers and groups are the
    client's fault here (InvalidParameterValue, locator Layer)."""
    try:
        return svc.resolve_ogc(parse_ogc_name(layer))
    except NotFoundError as exc:
        raise InvalidInputError(str(exc)).at("Layer") from None


def get_tile(
    svc: Services, if_none_match: str | None, layer: str, style: str, tms: str, matrix: str,
    row: str, col: str, fmt: str,
) -> Response:  # fmt: skip
    """One tile through the shared renderer; OWS exception codes for bad values."""
    if fmt not in IMAGE_FORMATS.values():
        raise InvalidInputError("Format must be image/png or image/webp").at("Format")
    colormap = None if style in ("", "default") else style
    if colormap is not None and colormap not in (*render.STYLE_NAMES, render.CLASS_STYLE):
        raise StyleNotDefinedError(f"Style {style[:60]!r} is not one of default, "
                                   f"{', '.join(render.LISTED_STYLES)}, "
                                   f"{render.CLASS_STYLE}").at("Style")  # fmt: skip
    z, y, x = _tile_address(tms, matrix, row, col)
    ref, group = _layer(svc, layer)
    try:  # a class layer's style is its classes' colours; the others', colormaps
        layer_style(ref, colormap, None)
    except InvalidInputError as exc:
        raise StyleNotDefinedError(f"Style {style[:60]!r}: {exc}").at("Style") from None
    params = {"colormap": colormap, **group_params(group)}
    tile = make_tile(svc, TileRequest.of(ref.id, tms, z, x, y, fmt, params), if_none_match)
    assert tile is not None
    return tile_response(tile)


def get_feature_info(
    svc: Services, layer: str, tms: str, matrix: str, row: str, col: str, j: str, i: str,
    info_format: str,
) -> Response:  # fmt: skip
    """The layer's value at pixel (I, J) of a tile (its centre), as WMS GetFeatureInfo."""
    if info_format not in INFO_FORMATS:
        raise InvalidInputError(f"InfoFormat must be one of {', '.join(INFO_FORMATS)}").at(
            "InfoFormat"
        )
    z, y, x = _tile_address(tms, matrix, row, col)
    try:
        pi, pj = int(i), int(j)
    except ValueError:
        raise InvalidInputError("I and J must be integers").at("I") from None
    if not (0 <= pi < TILE_SIZE and 0 <= pj < TILE_SIZE):
        raise InvalidPointError(f"I and J must be in 0..{TILE_SIZE - 1}").at("I")
    ref = _layer(svc, layer)[0]
    if ref.kind == "group":
        raise LayerNotQueryableError("group layers are not served by WMTS").at("Layer")
    matrix_set = get_tms(tms)
    left, bottom, right, top = tile_bounds(matrix_set, z, x, y)
    px = left + (pi + 0.5) * (right - left) / TILE_SIZE
    py = top - (pj + 0.5) * (top - bottom) / TILE_SIZE
    return info_response([value_at(svc, layer, ref, tms_crs(matrix_set), px, py)], info_format)


def _kvp(svc: Services, p: dict[str, str], base: str, if_none_match: str | None) -> Response:
    if p.get("service", "WMTS").upper() != "WMTS":
        raise InvalidInputError("SERVICE must be WMTS").at("SERVICE")
    req = p.get("request")
    if req is None:
        raise MissingParameterError("REQUEST is missing").at("REQUEST")
    if req.lower() == "getcapabilities":
        return capabilities(svc, base)
    if req.lower() not in ("gettile", "getfeatureinfo"):
        raise OperationNotSupportedError(f"REQUEST {req[:40]!r} is not supported: use "
                                         "GetCapabilities, GetTile or GetFeatureInfo").at(
            "REQUEST"
        )  # fmt: skip
    needed = ["layer", "style", "format", "tilematrixset", "tilematrix", "tilerow", "tilecol"]
    if req.lower() == "getfeatureinfo":
        needed += ["j", "i", "infoformat"]
    missing = [k.upper() for k in needed if k not in p]
    if missing:
        raise MissingParameterError(f"missing {', '.join(missing)}").at(missing[0])
    if req.lower() == "getfeatureinfo":
        return get_feature_info(svc, p["layer"], p["tilematrixset"], p["tilematrix"],
                                p["tilerow"], p["tilecol"], p["j"], p["i"],
                                p["infoformat"])  # fmt: skip
    fmt = IMAGE_FORMATS.get(p["format"])
    if fmt is None:
        raise InvalidInputError("Format must be image/png or image/webp").at("Format")
    return get_tile(svc, if_none_match, p["layer"], p["style"], p["tilematrixset"],
                    p["tilematrix"], p["tilerow"], p["tilecol"], fmt)  # fmt: skip


async def _answer(request: Request, fn: Callable[..., Response], *args: Any) -> Response:
    """``fn(svc, *args)`` in the executor; any error as an OWS ExceptionReport."""
    try:
        return await offload(fn, services(request), *args)
    except Exception as exc:  # one table decides the status and the code
        return exception_report(exc)


@router.get("/wmts", summary="WMTS 1.0.0, KVP encoding (GetCapabilities, GetTile).")
async def wmts_kvp(request: Request) -> Response:
    p = {k.lower(): v for k, v in request.query_params.items()}
    base = public_base(request, services(request).settings)
    return await _answer(request, _kvp, p, base, request.headers.get("if-none-match"))


# RESTful path segments, as strings: bad values get OWS exception reports, not 422s
_Layer = Annotated[str, Path(max_length=200)]
_Name = Annotated[str, Path(max_length=64)]
_Num = Annotated[str, Path(max_length=12)]


@router.get("/wmts/1.0.0/WMTSCapabilities.xml", summary="WMTS 1.0.0 capabilities (RESTful).")
async def wmts_capabilities(request: Request) -> Response:
    return await _answer(request, capabilities, public_base(request, services(request).settings))


@router.get(
    "/wmts/1.0.0/{layer}/{style}/{tms}/{matrix}/{row}/{col}.{format}",
    summary="WMTS 1.0.0 GetTile (RESTful).",
    response_class=Response,
    responses={200: {"content": {"image/png": {}, "image/webp": {}}}},
)
async def wmts_rest_tile(
    request: Request, layer: _Layer, style: _Name, tms: _Name, matrix: _Num, row: _Num,
    col: _Num, format: _Num,
) -> Response:  # fmt: skip
    return await _answer(request, get_tile, request.headers.get("if-none-match"), layer, style,
                         tms, matrix, row, col, format)  # fmt: skip


def _rest_info(
    svc: Services, layer: str, tms: str, matrix: str, row: str, col: str, j: str, i: str,
    ext: str,
) -> Response:  # fmt: skip
    if ext not in INFO_EXTENSIONS:
        raise InvalidInputError(f"the extension must be one of {', '.join(INFO_EXTENSIONS)}").at(
            "InfoFormat"
        )
    return get_feature_info(svc, layer, tms, matrix, row, col, j, i, INFO_EXTENSIONS[ext])


@router.get(
    "/wmts/1.0.0/{layer}/{style}/{tms}/{matrix}/{row}/{col}/{j}/{i}.{format}",
    summary="WMTS 1.0.0 GetFeatureInfo (RESTful): json, txt or html.",
)
async def wmts_rest_feature_info(
    request: Request, layer: _Layer, style: _Name, tms: _Name, matrix: _Num, row: _Num,
    col: _Num, j: _Num, i: _Num, format: _Num,
) -> Response:  # fmt: skip
    return await _answer(request, _rest_info, layer, tms, matrix, row, col, j, i, format)
