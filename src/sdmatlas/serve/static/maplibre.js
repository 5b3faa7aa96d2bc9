// sdmatlas MapLibre reference page: MapLibre GL JS on the layer's style.json and TileJSON.
// Every request goes to the server that served this page (no outside host, no basemap).
"use strict";

(function () {
  const API = new URL(".", window.location.href).href.replace(/\/$/, "");
  const $ = (id) => document.getElementById(id);
  const CONFIG = JSON.parse(document.getElementById("sdmatlas-config").textContent);
  const params = new URLSearchParams(window.location.search);
  const state = { layer: params.get("layer"), colormap: params.get("colormap") || CONFIG.default_colormap };

  async function getJSON(url) {
    const r = await fetch(url.startsWith("http") ? url : API + url);
    if (!r.ok) {
      let message = `${r.status} ${r.statusText}`;
      try { message = (await r.json()).detail || message; } catch (e) { /* not JSON */ }
      throw new Error(message);
    }
    return r.json();
  }

  function showError(err) {
    $("error").textContent = err ? String(err.message || err) : "";
    $("error").hidden = !err;
  }

  function styleUrl() {
    const q = new URLSearchParams({ colormap: state.colormap });
    return `${API}/layers/${encodeURIComponent(state.layer)}/style.json?${q}`;
  }

  // The style served holds only the layer's raster source and layer, so that it merges
  // into any basemap style; here a plain background goes under it.
  const BACKGROUND = { id: "background", type: "background", paint: { "background-color": "#cfe3ef" } };
  const withBackground = (previous, next) => ({ ...next, layers: [BACKGROUND, ...next.layers] });

  const map = new maplibregl.Map({
    container: "map",
    style: { version: 8, sources: {}, layers: [] },
    center: [10, 50],
    zoom: 3,
    attributionControl: { compact: true },
    canvasContextAttributes: { preserveDrawingBuffer: true }, // the canvas can be read back
  });
  map.addControl(new maplibregl.NavigationControl(), "top-right");
  map.on("error", (e) => showError(e.error));

  async function show() {
    showError(null);
    const url = styleUrl();
    map.setStyle(url, { transformStyle: withBackground, diff: false });
    $("style-link").href = url;
    $("snippet").textContent = `new maplibregl.Map({\n  container: "map",\n  style: "${url}",\n});`;
    const style = await getJSON(url);
    const tj = await getJSON(style.sources.sdmatlas.url); // the TileJSON: bounds and zooms
    if (tj.bounds) map.fitBounds([[tj.bounds[0], tj.bounds[1]], [tj.bounds[2], tj.bounds[3]]], { duration: 0, padding: 20 });
    const q = new URLSearchParams(window.location.search);
    q.set("layer", state.layer);
    q.set("colormap", state.colormap);
    history.replaceState(null, "", `?${q}`);
  }

  async function start() {
    CONFIG.colormaps.forEach((c) => $("colormap").append(new Option(c, c)));
    $("colormap").value = state.colormap;
    const release = await getJSON("/releases/latest");
    $("release").textContent = `release ${release.key} (${release.period})`;
    const layers = await getJSON(`/layers?release=${encodeURIComponent(release.key)}&kind=indicator&limit=100`);
    const species = await getJSON(`/layers?release=${encodeURIComponent(release.key)}&kind=species&limit=20`);
    layers.concat(species).forEach((l) => $("layer").append(new Option(l.title, l.id)));
    if (!state.layer) {
      const first = layers.find((l) => l.indicator === "richness") || layers[0] || species[0];
      state.layer = first.id;
    }
    $("layer").value = state.layer;
    $("layer").addEventListener("change", () => { state.layer = $("layer").value; show().catch(showError); });
    $("colormap").addEventListener("change", () => { state.colormap = $("colormap").value; show().catch(showError); });
    await show();
  }

  window.sdmatlasMapLibre = { map, state }; // for the tests and for anyone poking around
  start().catch(showError);
})();
