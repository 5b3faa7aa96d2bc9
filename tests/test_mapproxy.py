"""MapProxy 7 in front of a real ``sdmatlas serve`` (issue 22): ``mapproxy-util autoconfig``
reads our WMS capabilities into a working configuration, and maps through it are ours."""

from __future__ import annotations

import io
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mapproxy
import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import sdmatlas_server, served_catalog

pytestmark = pytest.mark.slow  # a live server and MapProxy (make test-fast skips them)

KEY, LATER = "coast-mp", "coast-mp-later"
SCHEMAS = Path(mapproxy.__file__).parent / "test" / "schemas"


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, cube: Path) -> Iterator[str]:
    releases = [(KEY, "2020"), (LATER, "2041/2060")]
    s = served_catalog(cube, tmp_path_factory.mktemp("mapproxy"), releases)
    env = {"SDMATLAS_DATABASE_URL": s.catalog_url, "SDMATLAS_DATA_DIR": str(s.data_dir),
           "SDMATLAS_TILE_CACHE": "[]"}  # fmt: skip
    with sdmatlas_server(env) as base:
        yield base


@pytest.fixture(scope="module")
def autoconfig(live: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mpconf") / "mapproxy.yaml"
    caps = f"{live}/wms?SERVICE=WMS&REQUEST=GetCapabilities&VERSION=1.3.0"
    mapproxy_util = Path(sys.executable).parent / "mapproxy-util"
    done = subprocess.run([str(mapproxy_util), "autoconfig", "--capabilities", caps,
                           "--output", str(out), "--output-seed", str(out.with_name("seed.yaml"))],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return out


def _names(conf_layers: list[dict[str, object]]) -> list[str]:
    out: list[str] = []
    for layer in conf_layers:
        if "name" in layer:
            out.append(str(layer["name"]))
        out += _names(layer.get("layers", []))  # type: ignore[arg-type]
    return out


def _rgba(body: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(body)).convert("RGBA"))


# inside the data box of species 3, which autoconfig copies as the source's coverage
BBOX = "13.4,45.45,13.8,45.7"
MAP = {"SERVICE": "WMS", "REQUEST": "GetMap", "VERSION": "1.1.1", "STYLES": "",
       "SRS": "EPSG:4326", "BBOX": BBOX, "WIDTH": "200", "HEIGHT": "125",
       "FORMAT": "image/png", "TRANSPARENT": "TRUE"}  # fmt: skip


def test_autoconfig_yields_a_working_mapproxy(autoconfig: Path, live: str) -> None:
    """Every one of our WMS layers becomes a MapProxy layer with its own source (names
    with ":" came out as MapProxy's source:sublayer before, all of them broken), and
    GetMaps through MapProxy draw our pixels: species, indicator, period and group layers."""
    from mapproxy.wsgiapp import make_wsgi_app
    from werkzeug.test import Client

    conf = yaml.safe_load(autoconfig.read_text())
    names = _names(conf["layers"])
    for name in (f"{KEY}.species.3", "species.3", f"{KEY}.indicator.richness",
                 f"{KEY}.group.richness.genus.Alpha"):  # fmt: skip
        assert name in names
    for layer_conf in _layers_with_sources(conf["layers"]):
        for src in layer_conf["sources"]:
            assert src in conf["sources"], src  # a source of its own, not "source:sublayer"
    proxy = Client(make_wsgi_app(str(autoconfig)))
    caps = proxy.get("/service?SERVICE=WMS&REQUEST=GetCapabilities&VERSION=1.1.1")
    assert caps.status_code == 200 and f"<Name>{KEY}.species.3</Name>".encode() in caps.data
    for name in (f"{KEY}.species.3", "species.3", f"{KEY}.indicator.richness",
                 f"{KEY}.group.richness.genus.Alpha"):  # fmt: skip
        through = proxy.get("/service", query_string={**MAP, "LAYERS": name})
        assert through.status_code == 200, (name, through.data[:500])
        ours = urllib.request.urlopen(
            f"{live}/wms?{urllib.parse.urlencode({**MAP, 'LAYERS': name})}"
        )
        a, b = _rgba(through.data), _rgba(ours.read())
        assert a.shape == (125, 200, 4) and (b[..., 3] > 0).any(), name
        assert np.array_equal(a, b), name


def _layers_with_sources(conf_layers: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for layer in conf_layers:
        if "sources" in layer:
            yield layer
        yield from _layers_with_sources(layer.get("layers", []))


def test_time_through_mapproxy(autoconfig: Path, live: str, tmp_path: Path) -> None:
    """The TIME of period layers through MapProxy: the documented configuration (the
    dimension declared on the layer, TIME forwarded by the source) serves each period.
    A TIME naming no period is our 400 InvalidDimensionValue, valid against the WMS
    1.3.0 exception schema; MapProxy never passes a source's exception report on: it
    answers its own report, "Could not get any sources", with a 500, whatever the
    source's status and body (mapproxy/service/wms.py, LayerRenderer). So the periods
    are declared to MapProxy, and clients read them from its capabilities."""
    from lxml import etree
    from mapproxy.wsgiapp import make_wsgi_app
    from werkzeug.test import Client

    conf = yaml.safe_load(autoconfig.read_text())
    conf["sources"]["species.3_wms"]["forward_req_params"] = ["time"]
    for layer in _layers_with_sources(conf["layers"]):
        if layer.get("name") == "species.3":
            layer["dimensions"] = {
                "time": {"values": ["2020", "2041/2060"], "default": "2041/2060"}
            }
    path = tmp_path / "mapproxy.yaml"
    path.write_text(yaml.safe_dump(conf))
    proxy = Client(make_wsgi_app(str(path)))
    caps = proxy.get("/service?SERVICE=WMS&REQUEST=GetCapabilities&VERSION=1.3.0")
    assert b'name="time"' in caps.data and b"2020" in caps.data
    good = {**MAP, "LAYERS": "species.3", "TIME": "2020"}
    through = proxy.get("/service", query_string=good)
    ours = urllib.request.urlopen(f"{live}/wms?{urllib.parse.urlencode(good)}").read()
    assert through.status_code == 200 and np.array_equal(_rgba(through.data), _rgba(ours))
    bad = {**MAP, "VERSION": "1.3.0", "CRS": "CRS:84", "LAYERS": "species.3", "TIME": "1999"}
    del bad["SRS"]
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"{live}/wms?{urllib.parse.urlencode(bad)}")
    report = e.value.read()
    assert e.value.code == 400 and b'code="InvalidDimensionValue"' in report
    schema = etree.XMLSchema(etree.parse(str(SCHEMAS / "wms" / "1.3.0" / "exceptions_1_3_0.xsd")))
    assert schema.validate(etree.fromstring(report)), schema.error_log.filter_from_errors()
    through = proxy.get("/service", query_string=bad)
    assert through.status_code == 500 and b"Could not get any sources" in through.data
