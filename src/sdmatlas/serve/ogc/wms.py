"""OGC WMS 1.1.1 and 1.3.0: GetCapabilities, GetMap, GetLegendGraphic.

GetMap maps each output pixel to the release pixel holding its centre (nearest
neighbour, exact: the tiles' lattice-interpolated mapping, :func:`tiling.window_index`)
at the pyramid level that fits the requested resolution, then colours through the
same palettes as the tiles.
Axis order follows the version: in 1.3.0, EPSG:4326 and EPSG:3035 bounding boxes are
given in the CRS's own order (latitude/northing first); CRS:84 and 1.1.1 are x/y.
"""

from __future__ import annotations

import io
import math
from dataclasses import replace
from xml.etree import ElementTree as ET

import numpy as np
import numpy.typing as npt
from fastapi import APIRouter, Request, Response
from PIL import Image

from sdmatlas import budget
from sdmatlas.catalog import queries
from sdmatlas.errors import (
    InvalidCRSError,
    InvalidFormatError,
    InvalidInputError,
    InvalidPointError,
    LayerNotQueryableError,
    MissingParameterError,
    NotFoundError,
    OperationNotSupportedError,
    StyleNotDefinedError,
)
from sdmatlas.grid import Grid
from sdmatlas.publish.indicators import INDICATORS
from sdmatlas.serve.api.deps import services
from sdmatlas.serve.errors import code_of, headers_of, log_if_fault, message_of
from sdmatlas.serve.offload import offload
from sdmatlas.serve.ogc.feature_info import INFO_FORMATS, info_response, value_at
from sdmatlas.serve.ogc.periods import is_period_layer, period_layers
from sdmatlas.serve.ogc.periods import resolve as resolve_period
from sdmatlas.serve.ogc.xml import text_child, xml_bytes, xml_response
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
from sdmatlas.serve.tiles.tiling import (
    TILE_SIZE,
    TileIndex,
    get_tms,
    tile_bounds,
    transformer,
    window_index,
    window_level,
)
from sdmatlas.serve.tiles.versions import SHORT
from sdmatlas.serve.urls import public_base

router = APIRouter(tags=["ogc"])

#: CRS codes served, and whether 1.3.0 gives their bbox in reversed (y, x) order.
CRSS = {"EPSG:3857": False, "EPSG:4326": True, "CRS:84": False, "EPSG:3035": True}
XLINK = "http://www.w3.org/1999/xlink"
DOCTYPE_111 = (b'<!DOCTYPE WMT_MS_Capabilities SYSTEM '
               b'"http://schemas.opengis.net/wms/1.1.1/WMS_MS_Capabilities.dtd">')  # fmt: skip
DOCTYPE_EXC_111 = (b'<!DOCTYPE ServiceExceptionReport SYSTEM '
                   b'"http://schemas.opengis.net/wms/1.1.1/WMS_exception_1_1_1.dtd">')  # fmt: skip
FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/webp": "webp"}


#: the exception codes WMS 1.1.1 defines (others are left out of a 1.1.1 report)
CODES_111 = {"InvalidFormat", "InvalidSRS", "LayerNotDefined", "StyleNotDefined",
             "LayerNotQueryable", "InvalidDimensionValue", "CurrentUpdateSequence",
             "InvalidUpdateSequence", "MissingDimensionValue"}  # fmt: skip


def exception_report(exc: BaseException, version: str) -> Response:
    """Any error as a ServiceExceptionReport of the version, with the status and code
    of the one error table (serve/errors.py)."""
    log_if_fault(exc)
    code = code_of(exc).wms
    if version != "1.3.0":
        code = "InvalidSRS" if code == "InvalidCRS" else code
        code = code if code in CODES_111 else None
    if version == "1.3.0":
        root = ET.Element("ServiceExceptionReport", version="1.3.0",
                          xmlns="http://www.opengis.net/ogc")  # fmt: skip
        media = "text/xml"
    else:
        root = ET.Element("ServiceExceptionReport", version="1.1.1")
        media = "application/vnd.ogc.se_xml"
    e = ET.SubElement(root, "ServiceException", {"code": code} if code else {})
    e.text = message_of(exc)
    doctype = None if version == "1.3.0" else DOCTYPE_EXC_111  # 1.1.1 names its DTD
    response = xml_response(root, media, code_of(exc).status, doctype)
    response.headers.update(headers_of(exc))
    return response


def capabilities(svc: Services, base: str, version: str) -> Response:
    base = base + "/wms?"
    body = svc.memo(("wms", version, base), lambda: _capabilities(svc, base, version))
    return Response(body, media_type="text/xml" if version == "1.3.0" else
                    "application/vnd.ogc.wms_xml", headers={"Cache-Control": SHORT})  # fmt: skip


class _Writer:
    """Writes the layer tree in each version's element order (1.3.0 XSD, 1.1.1 DTD):
    Name, Title, Abstract, CRS/SRS, geographic box, BoundingBox, Dimension (1.1.1: and
    Extent), Style, child Layers. Styles are inherited by child layers in both
    versions, so the ten colormap styles of species layers, whose legends are all the
    same (probability 0 to 1), are written once on their group, not on each of 10,000
    layers."""

    def __init__(self, base: str, version: str) -> None:
        self.base, self.v13 = base, version == "1.3.0"
        self.version = version

    def href(self, el: ET.Element, url: str) -> None:
        if not self.v13:  # the 1.1.1 DTD declares xmlns:xlink on OnlineResource only
            el.set("xmlns:xlink", XLINK)
        el.set("xlink:type", "simple")
        el.set("xlink:href", url)

    def layer(
        self,
        parent: ET.Element,
        title: str,
        bbox: tuple[float, float, float, float] | None,
        name: str | None = None,
        abstract: str | None = None,
        styles_of: str | None = None,
        crss: bool = False,
        time: tuple[tuple[str, ...], str] | None = None,
        queryable: bool = True,
        styles: tuple[str, ...] = render.LISTED_STYLES,
        legend_height: int = 48,
    ) -> ET.Element:
        lay = ET.SubElement(parent, "Layer")
        if name is not None:
            lay.set("queryable", "1" if queryable else "0")
            lay.set("opaque", "0")
            text_child(lay, "Name", name)
        text_child(lay, "Title", title)
        if abstract:
            text_child(lay, "Abstract", abstract)
        if crss:
            for code in CRSS:
                text_child(lay, "CRS" if self.v13 else "SRS", code)
        if bbox is not None:
            self._boxes(lay, bbox)
        if time is not None:
            values, default = time
            # values: the periods (ISO 8601); 1.3.0's current="1": TIME=current is served
            # (the default); 1.1.1's DTD has no such attribute, and TIME=current works too
            if self.v13:
                ET.SubElement(lay, "Dimension", name="time", units="ISO8601", default=default,
                              nearestValue="0", current="1").text = ",".join(values)  # fmt: skip
            else:
                ET.SubElement(lay, "Dimension", name="time", units="ISO8601")
                ET.SubElement(lay, "Extent", name="time", default=default,
                              nearestValue="0").text = ",".join(values)  # fmt: skip
        if styles_of is not None:
            for style in styles:
                self.style(lay, styles_of, style, legend_height)
        return lay

    def _boxes(self, lay: ET.Element, lonlat: tuple[float, float, float, float]) -> None:
        w, s, e, n = lonlat
        if self.v13:
            gb = ET.SubElement(lay, "EX_GeographicBoundingBox")
            for tag, val in zip(["westBoundLongitude", "eastBoundLongitude",
                                 "southBoundLatitude", "northBoundLatitude"],
                                [w, e, s, n], strict=True):  # fmt: skip
                text_child(gb, tag, repr(val))
        else:
            ET.SubElement(lay, "LatLonBoundingBox", minx=repr(w), miny=repr(s), maxx=repr(e),
                          maxy=repr(n))  # fmt: skip
        for code, flipped in CRSS.items():
            minx, miny, maxx, maxy = _bbox_in(code, (w, s, e, n))
            if self.v13 and flipped:
                minx, miny, maxx, maxy = miny, minx, maxy, maxx
            ET.SubElement(lay, "BoundingBox", {"CRS" if self.v13 else "SRS": code,
                          "minx": repr(minx), "miny": repr(miny), "maxx": repr(maxx),
                          "maxy": repr(maxy)})  # fmt: skip

    def style(self, lay: ET.Element, legend_layer: str, name: str, height: int = 48) -> None:
        st = ET.SubElement(lay, "Style")
        text_child(st, "Name", name)
        title = "the classes' colours" if name == render.CLASS_STYLE else f"{name} colormap"
        text_child(st, "Title", title)
        legend = ET.SubElement(st, "LegendURL", width="256", height=str(height))
        text_child(legend, "Format", "image/png")
        href = (f"{self.base}SERVICE=WMS&REQUEST=GetLegendGraphic&VERSION={self.version}"
                f"&LAYER={legend_layer}&STYLE={name}&FORMAT=image/png")  # fmt: skip
        self.href(ET.SubElement(legend, "OnlineResource"), href)


Box = tuple[float, float, float, float]


def _union(boxes: list[Box | None]) -> Box | None:
    b = [x for x in boxes if x is not None]
    if not b:
        return None
    return (min(x[0] for x in b), min(x[1] for x in b), max(x[2] for x in b),
            max(x[3] for x in b))  # fmt: skip


def _capabilities(svc: Services, base: str, version: str) -> bytes:
    v13 = version == "1.3.0"
    wr = _Writer(base, version)
    root = ET.Element("WMS_Capabilities" if v13 else "WMT_MS_Capabilities", version=version)
    if v13:
        root.set("xmlns", "http://www.opengis.net/wms")
        root.set("xmlns:xlink", XLINK)
        root.set("xmlns:sld", "http://www.opengis.net/sld")
    service = ET.SubElement(root, "Service")
    text_child(service, "Name", "WMS" if v13 else "OGC:WMS")
    text_child(service, "Title", "sdmatlas")
    text_child(service, "Abstract", "AI-predicted species distributions and indicators")
    wr.href(ET.SubElement(service, "OnlineResource"), base)
    if v13:
        text_child(service, "LayerLimit", str(svc.settings.max_map_layers))
        text_child(service, "MaxWidth", str(svc.settings.max_map_side))
        text_child(service, "MaxHeight", str(svc.settings.max_map_side))
    cap = ET.SubElement(root, "Capability")
    req = ET.SubElement(cap, "Request")
    ops = [
        ("GetCapabilities", ["text/xml" if v13 else "application/vnd.ogc.wms_xml"]),
        ("GetMap", list(FORMATS)),
        ("GetFeatureInfo", list(INFO_FORMATS)),
    ]
    # GetLegendGraphic: a plain operation in 1.1.1; in 1.3.0 it belongs to SLD 1.1 (an
    # extended operation, valid against sld_capabilities.xsd)
    ops.append(("sld:GetLegendGraphic" if v13 else "GetLegendGraphic", ["image/png"]))
    for op, formats in ops:
        o = ET.SubElement(req, op)
        for f in formats:
            text_child(o, "Format", f)
        dcp = ET.SubElement(ET.SubElement(ET.SubElement(o, "DCPType"), "HTTP"), "Get")
        wr.href(ET.SubElement(dcp, "OnlineResource"), base)
    exc = ET.SubElement(cap, "Exception")
    text_child(exc, "Format", "XML" if v13 else "application/vnd.ogc.se_xml")
    infos = published_layers(svc.catalog)
    by_period = period_layers(svc, infos)
    top = wr.layer(cap, "sdmatlas layers", _union([i.bbox for i in infos]), crss=True)
    # Species and indicators across periods (the TIME dimension), then each release.
    if by_period:
        group = wr.layer(top, "By period (TIME: the period; default the latest)",
                         _union([p.bbox for p in by_period]))  # fmt: skip
        for kind, title in (("species", "Species"), ("indicator", "Indicators")):
            plist = [p for p in by_period if p.kind == kind]
            if not plist:
                continue
            # every species layer has the same legend (p from 0 to 1): the styles are
            # declared once on the group, their LegendURL naming the group's legend
            shared = SPECIES_LEGEND if kind == "species" else None
            sub = wr.layer(group, title, _union([p.bbox for p in plist]), styles_of=shared)
            for p in plist:
                wr.layer(sub, p.title, p.bbox or _WORLD, name=ogc_name(p.name, sep="."),
                         abstract=f"{p.kind} layer in periods {', '.join(p.periods)}",
                         styles_of=None if shared else ogc_name(p.name, sep="."),
                         time=(p.periods, p.default))  # fmt: skip
    releases: dict[str, list[queries.LayerInfo]] = {}
    for info in infos:
        releases.setdefault(info.release, []).append(info)
    for release, items in releases.items():
        group = wr.layer(top, f"Release {release} ({items[0].period})",
                         _union([i.bbox for i in items]))  # fmt: skip
        for kind, title in (("species", "Species"), ("indicator", "Indicators"),
                            ("classes", "Class layers"), ("habitat", "Habitats")):  # fmt: skip
            of_kind = [i for i in items if i.kind == kind]
            if not of_kind:
                continue
            shared = f"{release}:{SPECIES_LEGEND}" if kind == "species" else None
            sub = wr.layer(group, title, _union([i.bbox for i in of_kind]), styles_of=shared)
            for info in of_kind:
                name = ogc_name(layer_id(info.release, info.name), sep=".")
                # a class layer has one style, its classes' colours; its legend a row a class
                classes = kind == "classes"
                n = len(info.histogram.get("classes", ())) if classes else 0
                wr.layer(sub, info.title, info.bbox or _WORLD, name=name,
                         abstract=f"{info.kind} layer, period {info.period}, version "
                         f"{info.version}", styles_of=None if shared else name,
                         styles=(render.CLASS_STYLE,) if classes else render.LISTED_STYLES,
                         legend_height=20 + 18 * n if classes else 48)  # fmt: skip
        _group_layers(svc, wr, group, release, _union([i.bbox for i in items]))
    return xml_bytes(root, None if v13 else DOCTYPE_111)  # 1.1.1 names its DTD


def _group_layers(
    svc: Services, wr: _Writer, parent: ET.Element, release: str, bbox: Box | None
) -> None:
    """The release's species groups (each family, genus and status) as named layers of
    each group indicator, ``<release>.group.<indicator>.<genus|family|status>.<value>``;
    their styles are declared once per indicator (the legends are the same)."""
    by_layer: dict[str, list[tuple[LayerRef, GroupSpec]]] = {}
    for ref, spec in svc.group_layers(release):
        by_layer.setdefault(ref.id, []).append((ref, spec))
    if not by_layer:
        return
    folder = wr.layer(parent, "Species groups (genus, family, status)", bbox)
    for items in by_layer.values():
        ref = items[0][0]  # the group indicator; its legend is every group's
        ind = str(ref.indicator)
        sub = wr.layer(folder, f"{INDICATORS[ind].title}: by group", bbox, styles_of=ref.id)
        for _, spec in items:
            wr.layer(sub, group_title(ref, spec), bbox or _WORLD, name=ogc_name(ref.id, spec, "."),
                     abstract=f"{ind} of the species of {spec.kind} {spec.value} in release "
                     f"{release}, computed on request", queryable=False)  # fmt: skip


_WORLD = (-180.0, -85.0, 180.0, 85.0)
#: The legend shared by every species layer (GetLegendGraphic LAYER=species, or
#: <release>:species): probability 0 to 1, fading in from 0.
SPECIES_LEGEND = "species"
SPECIES_UNITS = "probability"


def _bbox_in(code: str, lonlat: tuple[float, float, float, float]) -> tuple[float, ...]:
    if code in ("EPSG:4326", "CRS:84"):
        return lonlat
    w, s, e, n = lonlat
    t = transformer("EPSG:4326", code)
    return tuple(float(v) for v in t.transform_bounds(w, s, e, n))


def map_crs(crs: str) -> str:
    """The CRS a map's BBOX is in, for PROJ (CRS:84 is EPSG:4326 in x/y order)."""
    return "EPSG:4326" if crs == "CRS:84" else crs


def map_index(
    crs: str, bbox: tuple[float, float, float, float], width: int, height: int, grid: Grid,
    n_levels: int, level: int | None = None,
) -> TileIndex:  # fmt: skip
    """Each output pixel's release pixel: the tiles' exact lattice-interpolated mapping."""
    return window_index(map_crs(crs), bbox, width, height, grid, n_levels, level)


#: Rows of a GetMap drawn at once (serve/ogc/wms.py, get_map).
STRIP = 256


#: matrix sets whose tiles a GetMap in this CRS can be (x/y bbox order)
_TILE_SETS = {"EPSG:3857": "WebMercatorQuad", "EPSG:4326": "WGS1984Quad",
              "CRS:84": "WGS1984Quad", "EPSG:3035": "EuropeanETRS89_LAEAQuad"}  # fmt: skip


def _as_tile(crs: str, bbox: tuple[float, float, float, float], width: int,
             height: int) -> tuple[str, int, int, int] | None:  # fmt: skip
    """(matrix set, z, x, y) when the GetMap is exactly one 256 x 256 tile, else None."""
    if width != TILE_SIZE or height != TILE_SIZE or crs not in _TILE_SETS:
        return None
    name = _TILE_SETS[crs]
    tms = get_tms(name)
    left, _, right, top = bbox
    x0, _, x1, _ = tile_bounds(tms, tms.minzoom, 0, 0)
    ratio = (x1 - x0) / (right - left)  # BBOXes of 1e308 or 5e-324 make 0 or inf here
    if not (math.isfinite(ratio) and ratio > 0):
        return None
    z = tms.minzoom + round(math.log2(ratio))  # quadtrees: halves a zoom
    if not tms.minzoom <= z <= tms.maxzoom:
        return None
    x0, _, x1, y0 = tile_bounds(tms, z, 0, 0)
    size = x1 - x0
    x, y = round((left - x0) / size), round((y0 - top) / size)
    m = tms.matrix(z)
    if not (0 <= x < m.matrixWidth and 0 <= y < m.matrixHeight):
        return None
    b = tile_bounds(tms, z, x, y)
    if all(abs(a - c) <= 1e-9 * size for a, c in zip(b, bbox, strict=True)):
        return name, z, x, y
    return None


def _params(request: Request) -> dict[str, str]:
    return {k.upper(): v for k, v in request.query_params.items()}


def _require(p: dict[str, str], *keys: str) -> None:
    for key in keys:
        if key not in p:
            raise MissingParameterError(f"{key} is missing")


def _map_window(
    svc: Services, p: dict[str, str], version: str
) -> tuple[str, tuple[float, float, float, float], int, int]:
    """CRS, x/y-ordered BBOX, WIDTH and HEIGHT of a GetMap or GetFeatureInfo request."""
    crs_key = "CRS" if version == "1.3.0" else "SRS"
    _require(p, "BBOX", "WIDTH", "HEIGHT", crs_key)
    crs = p[crs_key].upper()
    if crs not in CRSS:
        raise InvalidCRSError(f"{crs[:40]} is not served; use one of {', '.join(CRSS)}")
    try:
        width, height = int(p["WIDTH"]), int(p["HEIGHT"])
        bbox = tuple(float(v) for v in p["BBOX"].split(","))
    except ValueError:
        raise InvalidInputError("WIDTH and HEIGHT must be integers, BBOX four numbers") from None
    if len(bbox) != 4 or not all(math.isfinite(v) for v in bbox):
        raise InvalidInputError("BBOX must be four finite numbers: minx,miny,maxx,maxy")
    side = svc.settings.max_map_side
    if not (width >= 1 and height >= 1):
        raise InvalidInputError("WIDTH and HEIGHT must be at least 1")
    budget.check(
        "map side",
        "max_map_side",
        max(width, height),
        side,
        "ask for a smaller WIDTH and HEIGHT, or for tiles (WMTS, XYZ)",
    )
    if version == "1.3.0" and CRSS[crs]:
        bbox = (bbox[1], bbox[0], bbox[3], bbox[2])  # (lat, lon) / (northing, easting) first
    if not (bbox[0] < bbox[2] and bbox[1] < bbox[3]):
        raise InvalidInputError("BBOX must have minx < maxx and miny < maxy")
    return crs, (bbox[0], bbox[1], bbox[2], bbox[3]), width, height


def _wms_layer(
    svc: Services, name: str, time: str | None, queried: bool = False, legend: bool = False
) -> tuple[LayerRef, GroupSpec | None]:
    """A layer by WMS name or API id (a period layer at TIME), and its group for a group
    layer: unknown ones are LayerNotDefined (404), a TIME naming no period of the layer
    InvalidDimensionValue; any other error (the catalog down: 503) keeps its own status.
    A legend needs no group (the legend of a group indicator is the same for all)."""
    ogc = parse_ogc_name(name)
    if is_period_layer(ogc.id):
        ogc = replace(ogc, id=resolve_period(svc, ogc.id, time))
    ref, group = svc.resolve_ogc(ogc, legend)
    if ref.kind == "group" and queried:
        raise LayerNotQueryableError("group layers answer no GetFeatureInfo: ask /point "
                                     "for the species' values")  # fmt: skip
    return ref, group


def _style(name: str | None) -> str | None:
    if name is None or name in ("", "default"):
        return None
    if name not in render.STYLE_NAMES and name != render.CLASS_STYLE:
        raise StyleNotDefinedError(f"style {name[:60]!r} is not one of "
                                   f"{', '.join(render.LISTED_STYLES)} (class layers: "
                                   f"{render.CLASS_STYLE})")  # fmt: skip
    return name


def _layer_style(ref: LayerRef, style: str | None) -> render.Style:
    """The style of one layer: a class layer takes only its classes' colours, the others
    only colormaps (StyleNotDefined otherwise)."""
    try:
        return layer_style(ref, style, None)
    except InvalidInputError as exc:
        raise StyleNotDefinedError(f"layer {ref.id}: {exc}") from None


def _over(palette: npt.NDArray[np.uint8], bg_rgb: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """The palette composited over an opaque background colour (all alphas 255)."""
    a = palette[:, 3:].astype(np.float64) / 255
    out = np.empty_like(palette)
    out[:, :3] = np.rint(palette[:, :3] * a + bg_rgb[None, :].astype(np.float64) * (1 - a))
    out[:, 3] = 255
    return out


def get_map(svc: Services, p: dict[str, str], version: str) -> Response:
    _require(p, "LAYERS", "FORMAT")
    fmt = FORMATS.get(p["FORMAT"])
    if fmt is None:
        raise InvalidFormatError(f"FORMAT must be one of {', '.join(FORMATS)}")
    crs, bbox, width, height = _map_window(svc, p, version)
    layers = [x for x in p["LAYERS"].split(",") if x]
    styles = [x for x in p.get("STYLES", "").split(",")] if p.get("STYLES") else []
    if not layers:
        raise NotFoundError("LAYERS is empty")
    s = svc.settings
    budget.check(
        "map layers",
        "max_map_layers",
        len(layers),
        s.max_map_layers,
        "ask for fewer LAYERS at once",
    )
    budget.check(
        "map pixels (WIDTH x HEIGHT x layers)",
        "max_map_pixels",
        width * height * len(layers),
        s.max_map_pixels,
        "ask for a smaller map or fewer layers, or for tiles (WMTS, XYZ)",
    )
    if styles and len(styles) != len(layers):
        raise InvalidInputError("STYLES must name one style per layer (or be empty)")
    transparent = p.get("TRANSPARENT", "FALSE").upper() == "TRUE"
    bg = p.get("BGCOLOR", "0xFFFFFF")
    if len(bg) != 8 or not bg.lower().startswith("0x"):
        raise InvalidInputError(f"BGCOLOR {bg[:20]!r} must be 0xRRGGBB")
    try:
        bgc = int(bg[2:], 16)
    except ValueError:
        raise InvalidInputError(f"BGCOLOR {bg!r} must be 0xRRGGBB") from None
    chosen = [_style(styles[i] if styles else None) for i in range(len(layers))]
    tile = _as_tile(crs, bbox, width, height) if len(layers) == 1 and fmt != "jpeg" else None
    if tile is not None and transparent:
        # exactly a tile of a served matrix set: the tile path and its cache answer it
        ref, group = _wms_layer(svc, layers[0], p.get("TIME"))
        _layer_style(ref, chosen[0])
        params = {"colormap": chosen[0], **group_params(group)}
        req = TileRequest.of(ref.id, tile[0], *tile[1:], fmt, params)
        answer = make_tile(svc, req)
        assert answer is not None
        headers, body = answer.headers(), answer.body  # fmt: skip
        keep = {k: v for k, v in headers.items() if k in ("ETag", "X-Cache", "X-Tile-Empty")}
        return Response(body, media_type=p["FORMAT"],
                        headers={"Cache-Control": SHORT, **keep})  # fmt: skip
    named = [_wms_layer(svc, name, p.get("TIME")) for name in layers]
    refs = [ref for ref, _ in named]
    groups = [svc.group_rows(ref, g) if g is not None else None for ref, g in named]
    bg_rgb = np.array([(bgc >> 16) & 255, (bgc >> 8) & 255, bgc & 255], np.uint8)
    opaque = not transparent or fmt == "jpeg"
    # Each layer as palette indices and its palette, as the tiles are made, drawn in
    # strips of STRIP rows: every numpy call stays small (the GIL is released between
    # them, so the event loop and other requests keep running), memory is a strip's,
    # and the deadline is checked between strips. Species palettes fade in (alpha
    # 0-255), so several layers are stacked with the "over" operator, strip by strip.
    styles_ = [_layer_style(ref, style) for ref, style in zip(refs, chosen, strict=True)]
    rels = [svc.open(ref) for ref in refs]
    palettes = [
        render.code_palette(st)
        if ref.kind == "species"
        else render.class_palette(rel.scheme(ref.var))
        if ref.kind == "classes"
        else render.index_palette(st)
        for ref, st, rel in zip(refs, styles_, rels, strict=True)
    ]
    levels: dict[tuple[object, ...], int] = {}  # one per release grid, for the whole map
    for rel in rels:
        g = rel.grid
        gkey = (g.crs, g.res, g.x0, g.y0, g.width, g.height, rel.n_levels)
        if gkey not in levels:
            levels[gkey] = window_level(map_crs(crs), bbox, width, height, g, rel.n_levels)
    single = len(refs) == 1 and fmt != "jpeg"
    indices = np.empty((height, width), np.uint8) if single else None
    canvas = (
        None
        if single
        else Image.new("RGBA", (width, height), (*map(int, bg_rgb), 255) if opaque else 0)
    )
    left, bottom, right, top = bbox
    dy = (top - bottom) / height
    for r0 in range(0, height, STRIP):
        budget.check_deadline()
        r1 = min(height, r0 + STRIP)
        strip = (left, top - r1 * dy, right, top - r0 * dy) if height > STRIP else bbox
        indexes: dict[tuple[object, ...], TileIndex] = {}
        for ref, rel, st, palette, rows in zip(refs, rels, styles_, palettes, groups,
                                               strict=True):  # fmt: skip
            g = rel.grid
            gkey = (g.crs, g.res, g.x0, g.y0, g.width, g.height, rel.n_levels)
            if gkey not in indexes:
                indexes[gkey] = map_index(crs, strip, width, r1 - r0, g, rel.n_levels,
                                          levels[gkey])  # fmt: skip
            idx = indexes[gkey]
            if ref.kind == "species":
                assert ref.species_id is not None
                part = svc.reader.gather(rel, idx, "probability", rel.species_row(ref.species_id))
            elif ref.kind == "classes":  # the classes are the palette indices
                part = svc.reader.gather(rel, idx, ref.var)
            elif rows is not None:
                assert ref.indicator is not None
                part = render.palette_indices(
                    svc.reader.gather_group(rel, idx, rows, ref.indicator), st
                )
            else:
                part = render.palette_indices(svc.reader.gather(rel, idx, ref.var), st)
            if indices is not None:
                indices[r0:r1] = part
            else:
                assert canvas is not None
                layer = Image.frombytes("RGBA", (width, r1 - r0), palette[part].tobytes())
                box = (0, r0, width, r1)
                canvas.paste(Image.alpha_composite(canvas.crop(box), layer), box)
    budget.check_deadline()
    if indices is not None:  # the common case: a palette image, as tiles
        palette = _over(palettes[0], bg_rgb) if opaque else palettes[0]
        body = render.encode_indexed(indices, palette, fmt)
    else:
        assert canvas is not None
        buf = io.BytesIO()
        if fmt == "jpeg":
            canvas.convert("RGB").save(buf, "JPEG", quality=90)
        elif fmt == "webp":
            canvas.save(buf, "WEBP", lossless=True, quality=0, method=0)
        else:
            canvas.save(buf, "PNG", compress_level=1)
        body = buf.getvalue()
    return Response(body, media_type=p["FORMAT"], headers={"Cache-Control": SHORT})


@router.get("/wms", summary="OGC WMS 1.1.1 and 1.3.0 (GetCapabilities, GetMap, GetLegendGraphic).")
async def wms(request: Request) -> Response:
    """Parsed on the event loop; answered in the executor (serve/offload.py). Every
    error, including server faults, is a ServiceExceptionReport of the version."""
    p = _params(request)
    version = negotiate(p.get("VERSION") or p.get("WMTVER"))
    svc = services(request)
    try:
        base = public_base(request, svc.settings)
        if _heavy(p):
            async with svc.heavy.slot():
                return await offload(_dispatch, svc, p, version, base)
        return await offload(_dispatch, svc, p, version, base)
    except Exception as exc:  # one table decides the status and the code
        return exception_report(exc, version)


VERSIONS = ("1.1.1", "1.3.0")


def negotiate(requested: str | None) -> str:
    """The version to answer in (WMS 1.3.0, 6.2.4): the one asked for if served; else
    the highest served below it, or the lowest served if it is below them all. No
    version (or one that is not a version) gets the highest."""
    try:
        asked = tuple(int(x) for x in (requested or "").split("."))
    except ValueError:
        return VERSIONS[-1]
    if not requested or len(asked) != 3:
        return VERSIONS[-1]
    served = [tuple(int(x) for x in v.split(".")) for v in VERSIONS]
    below = [v for v in served if v <= asked]
    return ".".join(map(str, max(below) if below else min(served)))


#: GetMaps drawing more pixels than this (16 tiles) are heavy (serve/offload.py).
HEAVY_PIXELS = 1 << 20


def _heavy(p: dict[str, str]) -> bool:
    """A GetMap of more than :data:`HEAVY_PIXELS` (a cheap look; validation comes later)."""
    if p.get("REQUEST", "").lower() != "getmap":
        return False
    try:
        n = int(p.get("WIDTH", "0")) * int(p.get("HEIGHT", "0"))
    except ValueError:
        return False
    return n * max(1, p.get("LAYERS", "").count(",") + 1) > HEAVY_PIXELS


def _dispatch(svc: Services, p: dict[str, str], version: str, base: str) -> Response:
    if p.get("SERVICE", "WMS").upper() != "WMS":
        raise InvalidInputError("SERVICE must be WMS")
    req = p.get("REQUEST", "").lower()
    if req == "getcapabilities":
        return capabilities(svc, base, version)
    if req == "getmap":
        return get_map(svc, p, version)
    if req == "getlegendgraphic":
        return legend(svc, p)
    if req == "getfeatureinfo":
        return feature_info(svc, p, version)
    raise OperationNotSupportedError("REQUEST must be GetCapabilities, GetMap, "
                                     "GetFeatureInfo or GetLegendGraphic")  # fmt: skip


def feature_info(svc: Services, p: dict[str, str], version: str) -> Response:
    """The value of each queried layer at the clicked pixel (its centre), with the
    species name for species layers."""
    crs, bbox, width, height = _map_window(svc, p, version)
    names = [x for x in p.get("QUERY_LAYERS", "").split(",") if x]
    if not names:
        raise MissingParameterError("QUERY_LAYERS is missing")
    budget.check(
        "queried layers",
        "max_map_layers",
        len(names),
        svc.settings.max_map_layers,
        "ask for fewer QUERY_LAYERS at once",
    )
    fmt = p.get("INFO_FORMAT", "text/plain")
    if fmt not in INFO_FORMATS:
        raise InvalidFormatError(f"INFO_FORMAT must be one of {', '.join(INFO_FORMATS)}")
    ik, jk = ("I", "J") if version == "1.3.0" else ("X", "Y")
    try:
        i, j = int(p[ik]), int(p[jk])
    except (KeyError, ValueError):
        raise MissingParameterError(f"{ik} and {jk} must be pixel integers") from None
    if not (0 <= i < width and 0 <= j < height):
        raise InvalidPointError(f"{ik},{jk} must lie inside WIDTH x HEIGHT")
    left, bottom, right, top = bbox
    x = left + (i + 0.5) * (right - left) / width
    y = top - (j + 0.5) * (top - bottom) / height
    results = [
        value_at(svc, name, _wms_layer(svc, name, p.get("TIME"), queried=True)[0], crs, x, y)
        for name in names
    ]
    return info_response(results, fmt)


def legend(svc: Services, p: dict[str, str]) -> Response:
    """The legend of a layer, or of every species layer (``species`` or
    ``<release>:species``, what the species groups' inherited styles name)."""
    _require(p, "LAYER")
    if p.get("FORMAT", "image/png") != "image/png":  # refuse formats we do not make
        raise InvalidFormatError(f"FORMAT {p['FORMAT'][:40]!r}: legends are image/png")
    style = _style(p.get("STYLE") or None)
    name = p["LAYER"]
    if name == SPECIES_LEGEND or name.endswith(f":{SPECIES_LEGEND}"):
        release = name[: -len(SPECIES_LEGEND) - 1]
        if release:
            with svc.catalog.session() as s:
                try:
                    queries.get_release(s, release)
                except NotFoundError:
                    raise NotFoundError(f"no release {release[:100]!r}") from None
        st = render.parse_style(style, None, (0.0, 1.0), render.SPECIES_FADE)
        return Response(render.legend_png(st, SPECIES_UNITS), media_type="image/png")
    ref = _wms_layer(svc, name, p.get("TIME"), legend=True)[0]
    st = _layer_style(ref, style)
    if ref.kind == "classes":
        scheme = svc.open(ref).scheme(ref.var)
        return Response(render.class_legend_png(scheme, ref.title), media_type="image/png")
    return Response(render.legend_png(st, ref.units), media_type="image/png")
