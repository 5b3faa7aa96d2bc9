"""The web viewer in a real headless Chromium (Debian's chromium and chromium-driver,
driven by Selenium; no browser download), against ``sdmatlas serve`` on the demo
release built by ``sdmatlas demo run``. Screenshots go to test-artifacts/viewer/."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select, WebDriverWait

from conftest import sdmatlas_server

# slow: the demo end to end in a real headless Chromium (make test-fast skips it)
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts" / "viewer"
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def demo_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """``sdmatlas demo run`` into a temporary data directory: the environment of it."""
    data = tmp_path_factory.mktemp("viewer-demo")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SDMATLAS_")}
    env |= {"SDMATLAS_DATA_DIR": str(data), "SDMATLAS_WORKERS": "0"}
    subprocess.run([str(BIN / "sdmatlas"), "demo", "run"], env=env, check=True, timeout=900,
                   capture_output=True)  # fmt: skip
    return env


@pytest.fixture(scope="module")
def server(demo_env: dict[str, str]) -> Iterator[str]:
    """``sdmatlas serve`` on the demo release."""
    with sdmatlas_server(demo_env, workers=1, ready="/ready") as base:
        yield base


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver, "Debian's chromium and chromium-driver (make test installs them)"
    opts = Options()
    opts.binary_location = chromium
    for arg in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=1280,820", "--disable-gpu"]:  # fmt: skip
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    b = webdriver.Chrome(service=Service(driver), options=opts)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    yield b
    b.quit()


def wait(browser: WebDriver, script: str, timeout: float = 30) -> Any:
    """Wait until the JavaScript expression is truthy; returns its value."""
    return WebDriverWait(browser, timeout, poll_frequency=0.1).until(
        lambda b: b.execute_script(f"return {script}")
    )


def resources(browser: WebDriver) -> list[str]:
    names: list[str] = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
    )
    return names


def severe_console(browser: WebDriver) -> list[dict[str, Any]]:
    return [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]


def map_image(browser: WebDriver, name: str) -> np.ndarray:
    browser.save_screenshot(str(ARTIFACTS / f"{name}.png"))
    png = browser.find_element(By.ID, "map").screenshot_as_png
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def click_at(browser: WebDriver, lat: float, lon: float) -> None:
    x, y = browser.execute_script(
        "const p = sdmatlas.map.latLngToContainerPoint([arguments[0], arguments[1]]);"
        "return [p.x, p.y];", lat, lon,
    )  # fmt: skip
    el = browser.find_element(By.ID, "map")
    w, h = el.size["width"], el.size["height"]
    ActionChains(browser).move_to_element_with_offset(el, int(x - w / 2), int(y - h / 2)).click()\
        .perform()  # fmt: skip


TILES_DRAWN = "document.querySelectorAll('.sdm-layer img.leaflet-tile-loaded').length"


def test_the_viewer_end_to_end(server: str, browser: WebDriver) -> None:
    browser.get(server + "/")
    assert wait(browser, f"{TILES_DRAWN} >= 4")
    wait(browser, "document.querySelectorAll('.leaflet-land-pane path').length > 0")
    time.sleep(0.5)  # let the last tiles fade in
    img = map_image(browser, "1-loaded")
    # not blank: many colours, and much of the map differs from the background
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 50
    background = np.array([0xCF, 0xE3, 0xEF])
    assert (np.abs(img.astype(int) - background).sum(axis=2) > 30).mean() > 0.2
    urls = resources(browser)
    tiles = [u for u in urls if "/tiles/" in u]
    assert tiles and all(":indicator:richness/WebMercatorQuad/" in u for u in tiles)
    assert all(u.startswith(server) for u in urls), "the page must not call other hosts"
    assert severe_console(browser) == []

    # search a species: the tiles switch to it, and the URL keeps the view
    box = browser.find_element(By.ID, "search")
    box.send_keys("Fictag")
    wait(browser, "document.querySelectorAll('#suggestions li[role=option]').length > 0")
    first = browser.find_element(By.CSS_SELECTOR, "#suggestions li[role=option]")
    name = first.text.split()[0:2]
    first.click()
    layer = wait(browser, "sdmatlas.state.layer.includes(':species:') && sdmatlas.state.layer")
    sid = layer.rsplit(":", 1)[1]
    wait(browser, f"[...document.querySelectorAll('.sdm-layer img.leaflet-tile-loaded')]"
                  f".some(i => i.src.includes(':species:{sid}/'))")  # fmt: skip
    assert any(f":species:{sid}/WebMercatorQuad/" in u for u in resources(browser))
    title = browser.find_element(By.ID, "layer-title").text
    assert " ".join(name) in title
    map_image(browser, "2-species")
    assert f"layer={layer.replace(':', '%3A')}" in browser.current_url

    # a click on land: the most likely species and the indicators
    click_at(browser, 45.65, 13.8)
    wait(browser, "document.querySelectorAll('#result table tr').length > 3")
    result = browser.find_element(By.ID, "result").text
    assert "most likely" in result and "richness" in result
    rows = browser.find_elements(By.CSS_SELECTOR, "#result table:first-of-type tr")
    probs = [float(r.find_elements(By.TAG_NAME, "td")[1].text) for r in rows[1:]]
    assert probs and probs == sorted(probs, reverse=True) and 0 < probs[0] <= 1
    map_image(browser, "3-point")

    # draw a rectangle: the area report, with a CSV download
    browser.find_element(By.ID, "draw-rect").click()
    click_at(browser, 45.75, 13.7)
    click_at(browser, 45.55, 13.95)
    wait(browser, "document.querySelector('#result h2')?.textContent.includes('drawn area')")
    wait(browser, "document.querySelectorAll('#result table tr').length > 5")
    report = browser.find_element(By.ID, "result").text
    assert "km²" in report and "species present" in report
    assert browser.find_element(By.ID, "csv").text == "Download CSV"
    map_image(browser, "4-report")

    # pick a territory: its report, with a CSV link to the same report
    Select(browser.find_element(By.ID, "territory")).select_by_value("demo-pa-1")
    wait(browser, "document.querySelector('#result h2')?.textContent.includes('demo-pa-1')")
    href = browser.find_element(By.ID, "csv").get_attribute("href")
    assert href and "format=csv" in href
    csv = urllib.request.urlopen(href).read().decode()
    assert csv.splitlines()[0].startswith("species_id") or "," in csv.splitlines()[0]
    map_image(browser, "5-territory")
    assert severe_console(browser) == []

    # the shared URL restores the view: same layer, colormap, zoom
    shared = browser.current_url
    browser.get("about:blank")
    browser.get(shared)
    assert wait(browser, f"{TILES_DRAWN} >= 1")
    assert browser.execute_script("return sdmatlas.state.layer") == layer
    assert any(f":species:{sid}/" in u for u in resources(browser) if "/tiles/" in u)


def test_group_richness_and_style_controls(server: str, browser: WebDriver) -> None:
    browser.get(server + "/")
    wait(browser, f"{TILES_DRAWN} >= 1")
    Select(browser.find_element(By.ID, "group-kind")).select_by_value("genus")
    browser.find_element(By.ID, "group-value").send_keys("Fictagrostis")
    browser.find_element(By.ID, "group-show").click()
    loaded = "[...document.querySelectorAll('.sdm-layer img.leaflet-tile-loaded')]"
    wait(browser, loaded + ".some(i => i.src.includes(':group:richness/')"
                  " && i.src.includes('genus=Fictagrostis'))")  # fmt: skip
    Select(browser.find_element(By.ID, "colormap")).select_by_value("magma")
    wait(browser, "[...document.querySelectorAll('.sdm-layer img.leaflet-tile-loaded')]"
                  ".some(i => i.src.includes('colormap=magma'))")  # fmt: skip
    assert "colormap=magma" in browser.find_element(By.ID, "legend").get_attribute("src")
    browser.execute_script(
        "const o = document.getElementById('opacity'); o.value = '0.3';"
        "o.dispatchEvent(new Event('input'));"
    )
    assert (
        browser.execute_script("return document.querySelector('.sdm-layer').style.opacity") == "0.3"
    )
    # an unknown genus is a message on the page, not a broken map
    browser.find_element(By.ID, "group-value").clear()
    browser.find_element(By.ID, "group-value").send_keys("Nonexistentia")
    browser.find_element(By.ID, "group-show").click()
    wait(browser, "!document.getElementById('error').hidden")
    assert "Nonexistentia" in browser.find_element(By.ID, "error").text
    map_image(browser, "6-group")


def test_a_class_layer_in_the_viewer(server: str, browser: WebDriver) -> None:
    """The worst-status class layer is in the layer list; its tiles and legend carry no
    colormap (the colour control is off); a click lists its class at the point."""
    browser.get_log("browser")  # what earlier tests left (their expected 404s) is theirs
    browser.get(server + "/")
    wait(browser, f"{TILES_DRAWN} >= 1")
    option = wait(browser, "[...document.querySelectorAll('#indicator option')]"
                           ".find(o => o.value.includes(':classes:'))?.value")  # fmt: skip
    Select(browser.find_element(By.ID, "indicator")).select_by_value(option)
    loaded = "[...document.querySelectorAll('.sdm-layer img.leaflet-tile-loaded')]"
    wait(browser, loaded + ".some(i => i.src.includes(':classes:set_worst_status/'))")
    tiles = [u for u in resources(browser) if ":classes:" in u and "/tiles/" in u]
    assert tiles and not any("colormap=" in u for u in tiles)
    assert "colormap" not in browser.find_element(By.ID, "legend").get_attribute("src")
    assert browser.find_element(By.ID, "colormap").get_attribute("disabled")
    click_at(browser, 45.65, 13.8)
    wait(browser, "document.getElementById('result').textContent.includes('set_worst_status')")
    assert severe_console(browser) == []
    map_image(browser, "7-classes")


def test_the_page_ships_its_libraries() -> None:
    """Leaflet and MapLibre GL JS are vendored from the npm versions pinned in
    viewer/package.json, and the pages' own files name no other host."""
    pinned = json.loads((ROOT / "viewer" / "package.json").read_text())["dependencies"]
    static = ROOT / "src" / "sdmatlas" / "serve" / "static"
    head = (static / "vendor" / "leaflet" / "leaflet.js").read_text()[:300]
    assert f"Leaflet {pinned['leaflet']}" in head, head[:120]
    head = (static / "vendor" / "maplibre-gl" / "maplibre-gl.js").read_text()[:300]
    assert "MapLibre GL JS" in head and f"maplibre-gl-js/blob/v{pinned['maplibre-gl']}/" in head
    assert (
        f"pmtiles {pinned['pmtiles']} " in (static / "vendor" / "pmtiles" / "LICENSE").read_text()
    )
    for page in [
        "index.html",
        "viewer.js",
        "viewer.css",
        "maplibre.html",
        "maplibre.js",
        "archive.html",
        "archive.js",
    ]:
        text = (static / page).read_text()
        assert "http://" not in text and "https://" not in text, page


# -- the MapLibre reference page (issue 22) -----------------------------------------------------


def _style_validator() -> Path:
    """The official MapLibre style validator, from viewer/package-lock.json (npm ci)."""
    modules = ROOT / "viewer" / "node_modules" / "@maplibre" / "maplibre-gl-style-spec"
    if not modules.exists():
        npm = shutil.which("npm")
        assert npm, "Node.js and npm validate the MapLibre styles (make test installs them)"
        subprocess.run([npm, "ci", "--prefix", str(ROOT / "viewer"), "--no-audit", "--no-fund"],
                       check=True, capture_output=True, timeout=600)  # fmt: skip
    return ROOT / "tests" / "js" / "validate_styles.cjs"


def _validate(styles: list[dict[str, Any]]) -> list[list[str]]:
    node = shutil.which("node")
    assert node, "Node.js runs the MapLibre style validator"
    env = {**os.environ, "NODE_PATH": str(ROOT / "viewer" / "node_modules")}
    done = subprocess.run([node, str(_style_validator())], input=json.dumps(styles),
                          capture_output=True, text=True, timeout=120, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    out: list[list[str]] = json.loads(done.stdout)
    return out


def test_every_style_we_serve_passes_the_maplibre_validator(server: str) -> None:
    release = json.loads(urllib.request.urlopen(server + "/releases/latest").read())["key"]
    layers = json.loads(urllib.request.urlopen(
        f"{server}/layers?release={release}&limit=1000").read())  # fmt: skip
    queries = ["", "?colormap=magma&opacity=0.5", "?colormap=ffffcc,41ab5d,004529&rescale=0,0.8"]
    classes = ["", "?colormap=classes&opacity=0.5"]  # class layers: their colours only
    urls = [f"{server}/layers/{lay['id']}/style.json{q}" for lay in layers
            for q in (classes if lay["kind"] == "classes" else queries)]  # fmt: skip
    urls += [
        f"{server}/layers/{release}:group:richness/style.json?genus=Fictagrostis",
        f"{server}/layers/{release}:group:richness_thresholded/style.json?status=protected",
    ]
    styles = [json.loads(urllib.request.urlopen(u).read()) for u in urls]
    assert len(styles) > 100
    errors = _validate(styles)
    assert [(u, e) for u, e in zip(urls, errors, strict=True) if e] == []
    # the validator does find faults: the same styles made wrong
    broken = json.loads(json.dumps(styles[:2]))
    broken[0]["layers"][0]["paint"]["raster-opacity"] = 2
    del broken[1]["sources"]["sdmatlas"]["type"]
    assert all(_validate(broken))


@pytest.fixture(scope="module")
def webgl_browser() -> Iterator[WebDriver]:
    """Headless Chromium with WebGL on the CPU (SwiftShader through ANGLE)."""
    opts = Options()
    opts.binary_location = str(shutil.which("chromium"))
    for arg in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=1280,820", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
                "--ignore-gpu-blocklist"]:  # fmt: skip
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    b = webdriver.Chrome(service=Service(str(shutil.which("chromedriver"))), options=opts)
    yield b
    b.quit()


MAPLIBRE_READY = ("window.sdmatlasMapLibre && sdmatlasMapLibre.map.isStyleLoaded() && "
                  "sdmatlasMapLibre.map.areTilesLoaded() && "
                  "sdmatlasMapLibre.map.getStyle().layers.length === 2")  # fmt: skip


def canvas_image(browser: WebDriver) -> np.ndarray:
    """The WebGL canvas as drawn (the page keeps its drawing buffer)."""
    import base64

    url = browser.execute_script("return sdmatlasMapLibre.map.getCanvas().toDataURL('image/png')")
    png = base64.b64decode(url.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def test_the_maplibre_page_draws_our_tiles_in_webgl(server: str, webgl_browser: WebDriver) -> None:
    b = webgl_browser
    b.get(server + "/maplibre")
    assert b.execute_script(
        "const c = document.createElement('canvas');"
        "return !!c.getContext('webgl2') || !!c.getContext('webgl');"
    )
    wait(b, MAPLIBRE_READY, timeout=60)
    wait(b, "performance.getEntriesByType('resource').some(e => e.name.includes('/tiles/'))")
    time.sleep(0.5)  # raster fade-in
    b.save_screenshot(str(ARTIFACTS / "maplibre-1.png"))
    img = canvas_image(b)
    urls = resources(b)
    tiles = [u for u in urls if "/tiles/" in u]
    assert tiles and all(":indicator:richness/WebMercatorQuad/" in u for u in tiles), tiles[:3]
    assert any("/style.json" in u for u in urls) and any("/tilejson.json" in u for u in urls)
    assert all(u.startswith(server) or u.startswith("blob:") for u in urls), urls
    # drawn: many colours, and much of the canvas differs from the plain background
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 50
    background = np.array([0xCF, 0xE3, 0xEF])
    assert (np.abs(img.astype(int) - background).sum(axis=2) > 30).mean() > 0.2
    # another colormap: the style URL changes and the tiles are drawn again
    Select(b.find_element(By.ID, "colormap")).select_by_value("magma")
    wait(b, "performance.getEntriesByType('resource').some(e => e.name.includes('colormap=magma')"
            " && e.name.includes('/tiles/'))")  # fmt: skip
    wait(b, MAPLIBRE_READY, timeout=60)
    time.sleep(0.5)
    assert not np.array_equal(canvas_image(b), img)
    assert [e for e in severe_console(b) if "favicon" not in e["message"]] == []


# -- a static PMTiles archive, no API (issue 20, in part) ----------------------------------------


def static_site(folder: Path) -> contextlib.AbstractContextManager[str]:
    """A plain static file server over ``folder`` (Starlette's StaticFiles under uvicorn:
    GET, HEAD and Range; nothing of sdmatlas), on a free port."""
    from starlette.applications import Starlette
    from starlette.routing import Mount
    from starlette.staticfiles import StaticFiles

    from conftest import uvicorn_thread

    return uvicorn_thread(Starlette(routes=[Mount("/", StaticFiles(directory=folder))]), "error")


def test_a_pmtiles_archive_on_a_static_host(
    demo_env: dict[str, str], browser: WebDriver, tmp_path: Path
) -> None:
    """``seed --to pmtiles`` on the demo release, then the archive page and the archive
    on a plain static server: Leaflet draws the archive's tiles, read by range requests,
    with no request to another host."""
    site = tmp_path / "site"
    static = ROOT / "src" / "sdmatlas" / "serve" / "static"
    shutil.copytree(static / "vendor", site / "vendor")
    for name in ("archive.html", "archive.js"):
        shutil.copy(static / name, site / name)
    release = "demo-1.0.0"
    layer = f"{release}:indicator:richness"
    done = subprocess.run([str(BIN / "sdmatlas"), "seed", layer, "--zoom", "6-9", "--to",
                           "pmtiles", str(site / "archives")], env=demo_env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    name = f"archives/{layer.replace(':', '.')}.pmtiles"
    assert (site / name).stat().st_size > 10_000
    browser.get_log("browser")  # drain what earlier tests left in the shared browser
    with static_site(site) as base:
        browser.get(f"{base}/archive.html?url={name}")
        loaded = "document.querySelectorAll('.leaflet-tile-pane img.leaflet-tile-loaded').length"
        assert wait(browser, f"{loaded} >= 4", timeout=60)
        time.sleep(0.5)  # the tiles' fade-in
        img = map_image(browser, "archive-1")
        urls = resources(browser)
    assert "version" in browser.find_element(By.ID, "info").text
    assert any(name in u for u in urls)
    assert all(u.startswith(base) or u.startswith("blob:") for u in urls), urls
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 50
    background = np.array([0xCF, 0xE3, 0xEF])
    assert (np.abs(img.astype(int) - background).sum(axis=2) > 30).mean() > 0.2
    assert severe_console(browser) == []
