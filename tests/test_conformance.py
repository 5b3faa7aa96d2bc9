"""OGC and HTTP conformance (issue 22, in part): documents validated offline against the
official schemas and DTDs (shipped in MapProxy's wheel, mapproxy/test/schemas), HEAD
wherever GET is answered, and WMS version negotiation."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import mapproxy
import pytest
from fastapi.testclient import TestClient
from lxml import etree

from conftest import served_catalog
from sdmatlas.serve.app import create_app
from sdmatlas.serve.ogc.wms import negotiate
from sdmatlas.settings import Settings

KEY = "coast-c"
LAYER = f"{KEY}:species:3"
SCHEMAS = Path(mapproxy.__file__).parent / "test" / "schemas"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, cube: Path) -> Iterator[TestClient]:
    s: Settings = served_catalog(cube, tmp_path_factory.mktemp("conf"), [(KEY, "2020")])
    with TestClient(create_app(s)) as c:
        yield c


def _dtd(name: str) -> etree.DTD:
    return etree.DTD(str(SCHEMAS / "wms" / "1.1.1" / name))


def _xsd(*parts: str) -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(SCHEMAS.joinpath(*parts))))


def test_wms_111_capabilities_are_dtd_valid(client: TestClient) -> None:
    r = client.get("/wms?SERVICE=WMS&REQUEST=GetCapabilities&VERSION=1.1.1")
    assert r.status_code == 200
    assert b'<!DOCTYPE WMT_MS_Capabilities SYSTEM "http://schemas.opengis.net/wms/1.1.1/' in (
        r.content
    )
    doc = etree.fromstring(r.content, etree.XMLParser(load_dtd=False, no_network=True))
    dtd = _dtd("WMS_MS_Capabilities.dtd")
    assert dtd.validate(doc), dtd.error_log.filter_from_errors()
    assert "xmlns:xlink" not in r.text.split("<Service>")[0]  # not on the root (the DTD)


def test_wms_111_exception_reports_are_dtd_valid(client: TestClient) -> None:
    r = client.get("/wms?SERVICE=WMS&REQUEST=GetMap&VERSION=1.1.1&LAYERS=nope&STYLES=&SRS="
                   "EPSG:3857&BBOX=0,0,1,1&WIDTH=8&HEIGHT=8&FORMAT=image/png")  # fmt: skip
    assert r.status_code == 404
    doc = etree.fromstring(r.content, etree.XMLParser(load_dtd=False, no_network=True))
    dtd = _dtd("WMS_exception_1_1_1.dtd")
    assert dtd.validate(doc), dtd.error_log.filter_from_errors()


def test_wms_130_exception_reports_follow_the_xsd(client: TestClient) -> None:
    r = client.get("/wms?SERVICE=WMS&REQUEST=GetMap&VERSION=1.3.0&LAYERS=nope&STYLES=&CRS="
                   "EPSG:3857&BBOX=0,0,1,1&WIDTH=8&HEIGHT=8&FORMAT=image/png")  # fmt: skip
    schema = _xsd("wms", "1.3.0", "exceptions_1_3_0.xsd")
    assert schema.validate(etree.fromstring(r.content)), schema.error_log.filter_from_errors()


@pytest.mark.parametrize(
    "asked,answered",
    [("1.3.0", "1.3.0"), ("1.1.1", "1.1.1"), ("1.0.0", "1.1.1"), ("1.1.0", "1.1.1"),
     ("1.2.0", "1.1.1"), ("9.9.9", "1.3.0"), ("2.0.0", "1.3.0"), (None, "1.3.0"),
     ("junk", "1.3.0")],
)  # fmt: skip
def test_wms_version_negotiation(client: TestClient, asked: str | None, answered: str) -> None:
    """WMS 1.3.0, 6.2.4: a version not served gets the highest served below it, or the
    lowest served when it is below them all."""
    assert negotiate(asked) == answered
    q = "/wms?SERVICE=WMS&REQUEST=GetCapabilities" + (f"&VERSION={asked}" if asked else "")
    doc = etree.fromstring(client.get(q).content, etree.XMLParser(load_dtd=False, no_network=True))
    assert doc.get("version") == answered


@pytest.mark.parametrize(
    "url",
    [
        "/health",
        "/releases",
        f"/layers/{LAYER}",
        f"/layers/{LAYER}/tilejson.json",
        f"/layers/{LAYER}/legend.png",
        f"/tiles/{LAYER}/WebMercatorQuad/3/4/2.png",
        f"/tiles/{LAYER}/WebMercatorQuad/99/0/0.png",
        "/wms?SERVICE=WMS&REQUEST=GetCapabilities",
        "/wmts/1.0.0/WMTSCapabilities.xml",
        "/tms/1.0.0",
        f"/layers/{LAYER}/cog",
        "/no/such/url",
    ],
)
def test_head_answers_wherever_get_does(client: TestClient, url: str) -> None:
    """RFC 9110 9.1: HEAD gives GET's status and headers, without a body (GDAL's
    /vsicurl/ asks HEAD first)."""
    get, head = client.get(url), client.head(url)
    assert head.status_code == get.status_code != 405, url
    assert head.content == b""
    for h in ("content-type", "content-length", "etag", "cache-control"):
        assert head.headers.get(h) == get.headers.get(h), (url, h)


@pytest.mark.parametrize(
    "url,xsd",
    [
        # SLD 1.1's schema imports WMS 1.3.0's and adds GetLegendGraphic
        ("/wms?SERVICE=WMS&REQUEST=GetCapabilities&VERSION=1.3.0",
         ("sld", "1.1.0", "sld_capabilities.xsd")),
        ("/wmts/1.0.0/WMTSCapabilities.xml", ("wmts", "1.0", "wmtsGetCapabilities_response.xsd")),
        ("/wmts?SERVICE=WMTS&REQUEST=GetTile&LAYER=nope",
         ("ows", "1.1.0", "owsExceptionReport.xsd")),
    ],
)  # fmt: skip
def test_documents_follow_the_official_xsds(
    client: TestClient, url: str, xsd: tuple[str, ...]
) -> None:
    """Validated with lxml against the OGC schemas, offline; and the check can fail."""
    schema = _xsd(*xsd)
    doc = etree.fromstring(client.get(url).content)
    assert schema.validate(doc), schema.error_log.filter_from_errors()
    etree.SubElement(doc, "{urn:sdmatlas:test}Bogus")  # an element no schema allows there
    assert not schema.validate(doc)


def test_legend_graphics_refuse_formats_they_do_not_make(client: TestClient) -> None:
    q = f"/wms?SERVICE=WMS&REQUEST=GetLegendGraphic&VERSION=1.3.0&LAYER={LAYER}"
    assert client.get(q + "&FORMAT=image/png").headers["content-type"] == "image/png"
    r = client.get(q + "&FORMAT=image/svg")
    assert r.status_code == 400 and b'code="InvalidFormat"' in r.content


def test_every_tile_matrix_served_is_advertised(client: TestClient) -> None:
    """WMTS and TMS advertise every matrix of a set, since every one is served (deeper
    than the release's resolution by nearest neighbour); past the set, WMTS answers
    InvalidParameterValue on TileMatrix and XYZ/TMS a 4xx. (Issue 22, defect 8: matrix
    12 used to be served while the capabilities stopped at 11.)"""
    from xml.etree import ElementTree as ET

    import morecantile

    caps = ET.fromstring(client.get("/wmts/1.0.0/WMTSCapabilities.xml").content)
    ns = {"w": "http://www.opengis.net/wmts/1.0", "ows": "http://www.opengis.net/ows/1.1"}
    for s in caps.findall("w:Contents/w:TileMatrixSet", ns):
        name = s.findtext("ows:Identifier", namespaces=ns)
        tms = morecantile.tms.get(name)
        ids = [int(m.findtext("ows:Identifier", namespaces=ns) or -1)
               for m in s.findall("w:TileMatrix", ns)]  # fmt: skip
        assert ids == list(range(tms.minzoom, tms.maxzoom + 1)), name
        tilemap = ET.fromstring(client.get(f"/tms/1.0.0/{LAYER}/{name}").content)
        assert [int(t.attrib["order"]) for t in tilemap.iter("TileSet")] == ids, name
    deepest = morecantile.tms.get("WebMercatorQuad").maxzoom
    for z, ok in ((deepest, True), (deepest + 1, False)):
        xyz = client.get(f"/tiles/{LAYER}/WebMercatorQuad/{z}/0/0.png")
        tms_ = client.get(f"/tms/1.0.0/{LAYER}/WebMercatorQuad/{z}/0/{2**z - 1 if ok else 0}.png")
        wmts = client.get(
            f"/wmts?SERVICE=WMTS&REQUEST=GetTile&LAYER={LAYER}&STYLE=default&FORMAT=image/png"
            f"&TILEMATRIXSET=WebMercatorQuad&TILEMATRIX={z}&TILEROW=0&TILECOL=0"
        )
        if ok:
            assert (xyz.status_code, tms_.status_code, wmts.status_code) == (200, 200, 200)
        else:
            assert xyz.status_code in (400, 404) and tms_.status_code in (400, 404)
            assert wmts.status_code == 400
            assert b'exceptionCode="InvalidParameterValue"' in wmts.content
            assert b'locator="TileMatrix"' in wmts.content


def test_wms_130_declares_get_legend_graphic(client: TestClient) -> None:
    """As an SLD extended operation (issue 22, defect 9), with a working URL."""
    doc = etree.fromstring(
        client.get("/wms?SERVICE=WMS&REQUEST=GetCapabilities&VERSION=1.3.0").content
    )
    ns = {"wms": "http://www.opengis.net/wms", "sld": "http://www.opengis.net/sld",
          "xlink": "http://www.w3.org/1999/xlink"}  # fmt: skip
    op = doc.find("wms:Capability/wms:Request/sld:GetLegendGraphic", ns)
    assert op is not None and op.findtext("wms:Format", namespaces=ns) == "image/png"
    href = op.find("wms:DCPType/wms:HTTP/wms:Get/wms:OnlineResource", ns).get(
        f"{{{ns['xlink']}}}href"
    )
    q = f"SERVICE=WMS&VERSION=1.3.0&REQUEST=GetLegendGraphic&LAYER={LAYER}&FORMAT=image/png"
    r = client.get(href.replace("http://testserver", "") + ("&" if "?" in href else "?") + q)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"


def test_species_legends_name_the_species_group_not_one_species(client: TestClient) -> None:
    """The species groups' inherited styles used to point every species at species 1's
    legend (issue 22, defect 9): they now name the group's legend, the same image."""
    xlink = "{http://www.w3.org/1999/xlink}href"
    for version in ("1.1.1", "1.3.0"):
        doc = etree.fromstring(
            client.get(f"/wms?SERVICE=WMS&REQUEST=GetCapabilities&VERSION={version}").content
        )
        hrefs = {el.get(xlink) for el in doc.iter() if el.tag.endswith("OnlineResource")}
        legends = [h for h in hrefs if h and "GetLegendGraphic" in h and ":species:" in h]
        assert legends == [], legends[:3]  # no species legend names one species
        groups = [h for h in hrefs if h and "GetLegendGraphic" in h and "LAYER=species&" in h]
        assert groups, version
    q = "/wms?SERVICE=WMS&REQUEST=GetLegendGraphic&VERSION=1.3.0&FORMAT=image/png&STYLE=magma"
    one = client.get(f"{q}&LAYER={LAYER}")
    release = LAYER.split(":")[0]
    for name in ("species", f"{release}:species"):
        r = client.get(f"{q}&LAYER={name}")
        assert r.status_code == 200 and r.content == one.content, name
    r = client.get(f"{q}&LAYER=nope:species")
    assert r.status_code == 404 and b'code="LayerNotDefined"' in r.content


# -- layer names without ":" and group layers (issue 22, defects 9 and 10) ----------------------

GROUP = f"{KEY}:group:richness"


def test_ogc_names_read_both_forms() -> None:
    from sdmatlas.serve.tiles.layers import GroupSpec, ogc_name, parse_ogc_name

    cases = [
        ("demo-1.0.0:species:12", None),
        ("demo-1.0.0:indicator:richness_thresholded", None),
        ("species:12", None),  # a period layer
        ("a.b-2:group:richness", GroupSpec("genus", "Quercus")),
        ("x.species.1:group:richness_thresholded", GroupSpec("family", "Fagaceae")),
        ("r:group:richness", GroupSpec("status", "protected")),
    ]
    for lid, group in cases:
        for sep in (":", "."):
            name = ogc_name(lid, group, sep)
            assert (sep == ":") == (":" in name), name
            got = parse_ogc_name(name)
            assert (got.id, got.group) == (lid, group), name
    assert ogc_name("demo-1.0.0:species:12", sep=".") == "demo-1.0.0.species.12"
    for odd in ["nope", "a:b", "r.group.richness.genus.Qu ercus", "r:species:1:genus:X",
                "group.richness.genus.X", "r.species.1.genus.X"]:  # fmt: skip
        assert parse_ogc_name(odd).group is None, odd
        assert parse_ogc_name(odd).id in (odd, odd.replace(".", ":")) or ":" in odd


def _names(client: TestClient, version: str) -> list[str]:
    r = client.get(f"/wms?SERVICE=WMS&REQUEST=GetCapabilities&VERSION={version}")
    doc = etree.fromstring(r.content, etree.XMLParser(load_dtd=False, no_network=True))
    return [e.text or "" for e in doc.iter() if etree.QName(e).localname == "Name"
            and etree.QName(e.getparent()).localname == "Layer"]  # fmt: skip


def _map(client: TestClient, layer: str, **extra: str) -> bytes:
    """A 256-pixel GetMap that is exactly WebMercatorQuad tile 9/275/182 (over data)."""
    import morecantile

    b = morecantile.tms.get("WebMercatorQuad").xy_bounds(275, 182, 9)
    r = client.get("/wms", params={"SERVICE": "WMS", "REQUEST": "GetMap", "VERSION": "1.3.0",
                   "LAYERS": layer, "STYLES": "", "CRS": "EPSG:3857", "WIDTH": "256",
                   "HEIGHT": "256", "FORMAT": "image/png",
                   "BBOX": f"{b.left},{b.bottom},{b.right},{b.top}", **extra})  # fmt: skip
    assert r.status_code == 200, r.text[:300]
    return r.content


def test_wms_names_have_no_colons_and_name_the_same_layers(client: TestClient) -> None:
    """MapProxy's autoconfig reads ":" as source:sublayer (issue 22, defect 9): WMS names
    put dots for the ids' colons, and GetMap takes either form."""
    for version in ("1.1.1", "1.3.0"):
        names = _names(client, version)
        assert names and not [n for n in names if ":" in n], version
        assert f"{KEY}.species.3" in names and "species.3" in names
    for a, b in [(f"{KEY}.species.3", LAYER), ("species.3", "species:3"),
                 (f"{KEY}.indicator.richness", f"{KEY}:indicator:richness")]:  # fmt: skip
        assert _map(client, a) == _map(client, b)
        assert _map(client, a, TRANSPARENT="TRUE") == _map(client, b, TRANSPARENT="TRUE")


def test_group_layers_are_served_by_wms_wmts_and_tms(client: TestClient) -> None:
    """Group layers (issue 22, defect 10) are named layers of every service, one per genus,
    family and status of the release, and draw what the XYZ route draws."""
    names = _names(client, "1.3.0")
    for value in ("genus.Alpha", "genus.Beta", "family.Fagaceae"):
        for ind in ("richness", "richness_thresholded"):
            assert f"{KEY}.group.{ind}.{value}" in names
    assert not [n for n in names if ".status." in n]  # no species has a status flag here
    xyz = client.get(f"/tiles/{GROUP}/WebMercatorQuad/9/275/182.png?genus=Alpha")
    assert xyz.status_code == 200 and xyz.headers.get("X-Tile-Empty") != "true"
    assert _map(client, f"{KEY}.group.richness.genus.Alpha", TRANSPARENT="TRUE") == xyz.content
    # an opaque map takes the GetMap drawing path, not the tile's: the same colours
    # as the tile over the white background
    import io

    import numpy as np
    from PIL import Image

    def rgba(body: bytes) -> np.ndarray:
        return np.asarray(Image.open(io.BytesIO(body)).convert("RGBA"), np.float64)

    tile = rgba(xyz.content)
    a = tile[..., 3:] / 255
    over_white = tile[..., :3] * a + 255 * (1 - a)
    drawn = rgba(_map(client, f"{KEY}.group.richness.genus.Alpha"))
    assert (drawn[..., 3] == 255).all() and np.abs(drawn[..., :3] - over_white).max() <= 1
    assert (a < 1).any() and (a > 0).any()
    wmts = client.get("/wmts/1.0.0/WMTSCapabilities.xml").text
    assert f"<ows:Identifier>{GROUP}:genus:Alpha</ows:Identifier>" in wmts
    kvp = client.get("/wmts", params={"SERVICE": "WMTS", "REQUEST": "GetTile",
                     "LAYER": f"{GROUP}:genus:Alpha", "STYLE": "default", "FORMAT": "image/png",
                     "TILEMATRIXSET": "WebMercatorQuad", "TILEMATRIX": "9", "TILEROW": "182",
                     "TILECOL": "275"})  # fmt: skip
    rest = client.get(f"/wmts/1.0.0/{GROUP}:genus:Alpha/default/WebMercatorQuad/9/182/275.png")
    tms_y = 2**9 - 1 - 182
    tms = client.get(f"/tms/1.0.0/{GROUP}:genus:Alpha/WebMercatorQuad/9/275/{tms_y}.png")
    assert kvp.content == rest.content == tms.content == xyz.content
    assert f"/tms/1.0.0/{GROUP}:genus:Alpha/WebMercatorQuad" in client.get("/tms/1.0.0").text
    assert client.get(f"/tms/1.0.0/{GROUP}:genus:Alpha/WebMercatorQuad").status_code == 200
    # the errors say what to fix
    small = {"SERVICE": "WMS", "VERSION": "1.3.0", "STYLES": "", "CRS": "CRS:84",
             "BBOX": "13,44,14,45", "WIDTH": "8", "HEIGHT": "8", "FORMAT": "image/png"}  # fmt: skip
    r = client.get("/wms", params={**small, "REQUEST": "GetMap",
                                   "LAYERS": f"{KEY}.group.richness.genus.Zeta"})  # fmt: skip
    assert r.status_code == 404 and b"LayerNotDefined" in r.content and b"Zeta" in r.content
    r = client.get("/wms", params={**small, "REQUEST": "GetMap", "LAYERS": f"{KEY}.group.richness"})
    assert r.status_code == 404 and b"genus|family|status" in r.content
    alpha = f"{KEY}.group.richness.genus.Alpha"
    r = client.get("/wms", params={**small, "REQUEST": "GetFeatureInfo", "LAYERS": alpha,
                                   "QUERY_LAYERS": alpha, "I": "1", "J": "1"})  # fmt: skip
    assert b"LayerNotQueryable" in r.content
    r = client.get(f"/wmts/1.0.0/{GROUP}:genus:Zeta/default/WebMercatorQuad/9/182/275.png")
    assert r.status_code == 400 and b"Zeta" in r.content
