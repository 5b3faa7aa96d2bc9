// sdmatlas reference viewer: Leaflet on the sdmatlas REST API, nothing else.
// Every request goes to the server that served this page (no outside host).
"use strict";

(function () {
  const CONFIG = JSON.parse(document.getElementById("sdmatlas-config").textContent);
  const API = new URL(".", window.location.href).href.replace(/\/$/, "");
  const $ = (id) => document.getElementById(id);

  const state = {
    release: null, // key of the release shown
    layer: null, // API layer id
    group: null, // {kind, value} for group layers
    colormap: CONFIG.default_colormap,
    opacity: 0.8,
  };
  let tiles = null; // the L.TileLayer of the current layer
  let marker = null;
  let drawn = null; // the drawn area (L.Polygon)

  // -- helpers -------------------------------------------------------------------------------

  async function api(path, options) {
    const r = await fetch(API + path, options);
    if (!r.ok) {
      let message = `${r.status} ${r.statusText}`;
      try {
        const body = await r.json();
        if (body.detail) message = body.detail;
      } catch (e) { /* not JSON */ }
      throw new Error(message);
    }
    return r;
  }
  const getJSON = async (path, options) => (await api(path, options)).json();

  function showError(err) {
    $("error").textContent = err ? String(err.message || err) : "";
    $("error").hidden = !err;
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    Object.entries(attrs || {}).forEach(([k, v]) => { node[k] = v; });
    children.forEach((c) => node.append(c));
    return node;
  }

  function table(head, rows) {
    const t = el("table");
    t.append(el("tr", {}, ...head.map((h) => el("th", {}, h))));
    rows.forEach((cells) => {
      t.append(el("tr", {}, ...cells.map((c) =>
        el("td", typeof c === "number" ? { className: "num" } : {}, String(c)))));
    });
    return t;
  }

  const fmt = (v, digits) => (v === null || v === undefined ? "–" : Number(v).toFixed(digits));

  // -- the view in the URL -------------------------------------------------------------------

  function readHash() {
    const p = new URLSearchParams(window.location.hash.slice(1));
    const view = {};
    if (p.get("layer")) view.layer = p.get("layer");
    ["genus", "family", "status"].forEach((k) => {
      if (p.get(k)) view.group = { kind: k, value: p.get(k) };
    });
    if (p.get("colormap") && CONFIG.colormaps.includes(p.get("colormap"))) view.colormap = p.get("colormap");
    const o = parseFloat(p.get("opacity"));
    if (o >= 0 && o <= 1) view.opacity = o;
    const m = (p.get("map") || "").split("/").map(Number);
    if (m.length === 3 && m.every(Number.isFinite)) view.center = { zoom: m[0], lat: m[1], lon: m[2] };
    return view;
  }

  function writeHash() {
    const p = new URLSearchParams();
    if (state.layer) p.set("layer", state.layer);
    if (state.group) p.set(state.group.kind, state.group.value);
    p.set("colormap", state.colormap);
    p.set("opacity", String(state.opacity));
    const c = map.getCenter();
    p.set("map", `${map.getZoom()}/${c.lat.toFixed(5)}/${c.lng.toFixed(5)}`);
    window.history.replaceState(null, "", "#" + p.toString());
  }

  // -- the map -------------------------------------------------------------------------------

  const map = L.map("map", { zoomControl: true, worldCopyJump: true }).setView([45.5, 14.0], 7);
  map.attributionControl.setPrefix("Leaflet");
  map.createPane("land").style.zIndex = 150; // country outlines under the layer
  map.createPane("outlines").style.zIndex = 450; // territory outlines over it
  map.getPane("outlines").style.pointerEvents = "none";

  async function loadTerritories() {
    const list = await getJSON("/territories?limit=1000");
    const select = $("territory");
    list.forEach((t) => select.append(el("option", { value: t.code, textContent: `${t.name} (${t.level})` })));
    await Promise.all(list.map(async (t) => {
      const f = await getJSON(`/territories/${encodeURIComponent(t.code)}?simplify=0.002`);
      const land = t.level === "country";
      L.geoJSON(f, {
        pane: land ? "land" : "outlines",
        interactive: false,
        style: land
          ? { color: "#8a8f98", weight: 1, fillColor: "#f3f1ec", fillOpacity: 1 }
          : { color: t.level === "protected_area" ? "#1b7f3b" : "#39414d", weight: 2,
              dashArray: "5 4", fill: false },
      }).addTo(map);
    }));
  }

  // a class layer (<release>:classes:<name>) is drawn in its classes' colours: no colormap
  const isClasses = (id) => (id || "").includes(":classes:");

  async function showLayer() {
    showError(null);
    if (!state.layer) return;
    const q = new URLSearchParams({ tms: "WebMercatorQuad" });
    if (!isClasses(state.layer)) q.set("colormap", state.colormap);
    if (state.group) q.set(state.group.kind, state.group.value);
    let tj;
    try {
      tj = await getJSON(`/layers/${encodeURIComponent(state.layer)}/tilejson.json?${q}`);
    } catch (err) {
      showError(err);
      return;
    }
    if (tiles) map.removeLayer(tiles);
    tiles = L.tileLayer(tj.tiles[0], {
      opacity: state.opacity, maxNativeZoom: tj.maxzoom, maxZoom: 18, className: "sdm-layer",
      attribution: "sdmatlas (AI-predicted distributions)",
    }).addTo(map);
    const what = state.group ? ` — ${state.group.kind} ${state.group.value}` : "";
    $("layer-title").textContent = tj.description + what;
    const legend = $("legend");
    const style = isClasses(state.layer) ? "" : `?colormap=${state.colormap}`;
    legend.src = `${API}/layers/${encodeURIComponent(state.layer)}/legend.png${style}`;
    $("colormap").disabled = isClasses(state.layer);
    legend.hidden = false;
    writeHash();
  }

  function setLayer(id, group) {
    state.layer = id;
    state.group = group || null;
    showLayer();
  }

  // -- species search ------------------------------------------------------------------------

  let searchSeq = 0;
  let timer = null;
  let active = -1;

  async function search(text) {
    const seq = ++searchSeq;
    const q = encodeURIComponent(text);
    let hits = await getJSON(`/species?q=${q}&limit=10`);
    if (!hits.length) hits = await getJSON(`/species?q=${q}&mode=fuzzy&limit=10`);
    if (seq !== searchSeq) return; // a newer search is under way
    const list = $("suggestions");
    list.replaceChildren();
    active = -1;
    hits.forEach((h) => {
      const alt = h.matched && h.matched !== h.scientific_name ? h.matched : (h.family || "");
      const li = el("li", { role: "option" }, h.scientific_name, " ", el("span", { className: "alt" }, alt));
      li.addEventListener("mousedown", (e) => { e.preventDefault(); pick(h); });
      list.append(li);
    });
    if (!hits.length) list.append(el("li", { className: "alt" }, "no species found"));
    list.hidden = false;
  }

  function pick(hit) {
    $("search").value = hit.scientific_name;
    $("suggestions").hidden = true;
    $("indicator").value = "";
    setLayer(`${state.release}:species:${hit.id}`);
  }

  $("search").addEventListener("input", () => {
    clearTimeout(timer);
    const text = $("search").value.trim();
    if (text.length < 2) { $("suggestions").hidden = true; return; }
    timer = setTimeout(() => search(text).catch(showError), 150);
  });
  $("search").addEventListener("keydown", (e) => {
    const items = [...$("suggestions").querySelectorAll("li[role=option]")];
    if (!items.length || $("suggestions").hidden) return;
    if (e.key === "ArrowDown" || e.key === "ArrowUp") {
      active = (active + (e.key === "ArrowDown" ? 1 : items.length - 1)) % items.length;
      items.forEach((li, i) => li.classList.toggle("active", i === active));
      e.preventDefault();
    } else if (e.key === "Enter") {
      items[Math.max(active, 0)].dispatchEvent(new MouseEvent("mousedown"));
    } else if (e.key === "Escape") {
      $("suggestions").hidden = true;
    }
  });
  $("search").addEventListener("blur", () => { $("suggestions").hidden = true; });

  // -- indicators, groups, style -------------------------------------------------------------

  $("indicator").addEventListener("change", () => {
    if ($("indicator").value) setLayer($("indicator").value);
  });
  $("group-show").addEventListener("click", () => {
    const value = $("group-value").value.trim();
    if (!value) { showError("type a genus, family or status for the group"); return; }
    setLayer(`${state.release}:group:richness`, { kind: $("group-kind").value, value });
  });
  CONFIG.colormaps.forEach((c) => $("colormap").append(el("option", { value: c, textContent: c })));
  $("colormap").addEventListener("change", () => { state.colormap = $("colormap").value; showLayer(); });
  $("opacity").addEventListener("input", () => {
    state.opacity = parseFloat($("opacity").value);
    if (tiles) tiles.setOpacity(state.opacity);
    writeHash();
  });
  map.on("moveend", () => { if (state.layer) writeHash(); });

  // -- point query ---------------------------------------------------------------------------

  async function queryPoint(latlng) {
    const ll = latlng.wrap();
    if (marker) map.removeLayer(marker);
    marker = L.circleMarker(ll, { radius: 6, color: "#c1121f", weight: 2 }).addTo(map);
    const p = await getJSON(`/point?lon=${ll.lng}&lat=${ll.lat}&release=${state.release}&limit=10`);
    const out = $("result");
    out.replaceChildren(el("h2", {}, `Point ${ll.lat.toFixed(4)}, ${ll.lng.toFixed(4)}`));
    if (!p.inside) {
      out.append(el("p", { className: "muted" }, "outside the release's territory"));
    } else {
      out.append(el("p", { className: "muted" }, `${p.total} species; the most likely:`));
      out.append(table(["species", "p"], p.species.map((s) => [s.name, Number(fmt(s.probability, 3))])));
      out.append(el("h2", {}, "Indicators"));
      out.append(table(["indicator", "value"],
        Object.entries(p.indicators).map(([k, v]) => [k, Number(fmt(v, 3))])));
      const classes = Object.entries(p.classes || {});
      if (classes.length) {
        out.append(table(["class layer", "class"],
          classes.map(([k, c]) => [k, c.code ? `${c.code} ${c.name}` : (c.name || "")])));
      }
      if (p.territories.length) out.append(el("p", { className: "muted" }, "in: " + p.territories.join(", ")));
    }
    out.hidden = false;
  }

  // -- area reports --------------------------------------------------------------------------

  function showReport(r, csv) {
    const out = $("result");
    const title = r.territory ? `Report: ${r.territory}` : "Report: drawn area";
    out.replaceChildren(el("h2", {}, title));
    out.append(el("p", {}, `${fmt(r.area_km2, 1)} km², ${r.species_present} species present ` +
      `(p ≥ ${r.threshold}): ${r.protected_present} protected, ${r.invasive_present} invasive, ` +
      `${r.endemic_present} endemic.`));
    out.append(csv);
    out.append(table(["species", "mean p", "km²"], r.species.slice(0, 15).map((s) =>
      [s.name, Number(fmt(s.mean_probability, 3)), Number(fmt(s.expected_area_km2, 1))])));
    out.hidden = false;
  }

  async function reportPolygon(ring) {
    const geometry = { type: "Polygon", coordinates: [[...ring, ring[0]]] };
    const body = JSON.stringify(geometry);
    const opts = { method: "POST", headers: { "Content-Type": "application/json" }, body };
    const r = await getJSON(`/report?release=${state.release}`, opts);
    const link = el("a", { href: "#", id: "csv", textContent: "Download CSV" });
    link.addEventListener("click", async (e) => {
      e.preventDefault();
      const blob = await (await api(`/report?release=${state.release}&format=csv`, opts)).blob();
      const a = el("a", { href: URL.createObjectURL(blob), download: "sdmatlas-report.csv" });
      a.click();
    });
    showReport(r, link);
  }

  $("territory").addEventListener("change", async () => {
    const code = $("territory").value;
    if (!code) return;
    showError(null);
    try {
      const q = `territory=${encodeURIComponent(code)}&release=${state.release}`;
      const r = await getJSON(`/report?${q}`);
      showReport(r, el("a", { href: `${API}/report?${q}&format=csv`, id: "csv", textContent: "Download CSV" }));
    } catch (err) { showError(err); }
  });

  // Drawing, by hand: Leaflet has no drawing tool of its own, and a plugin for two shapes
  // would be more code to ship than this.
  const draw = { mode: null, points: [], shape: null };

  function startDrawing(mode) {
    stopDrawing();
    draw.mode = mode;
    document.body.classList.add("drawing");
    map.doubleClickZoom.disable();
    $("draw-help").textContent = mode === "rect"
      ? "Click two opposite corners. Esc cancels."
      : "Click the corners; double-click (or click the first corner) to finish. Esc cancels.";
    $("draw-help").hidden = false;
  }

  function stopDrawing() {
    draw.mode = null;
    draw.points = [];
    if (draw.shape) map.removeLayer(draw.shape);
    draw.shape = null;
    document.body.classList.remove("drawing");
    map.doubleClickZoom.enable();
    $("draw-help").hidden = true;
  }

  function finish(latlngs) {
    stopDrawing();
    if (drawn) map.removeLayer(drawn);
    drawn = L.polygon(latlngs, { color: "#c1121f", weight: 2, fillOpacity: 0.05 }).addTo(map);
    reportPolygon(latlngs.map((p) => [p.lng, p.lat])).catch(showError);
  }

  function rectangle(a, b) {
    return [L.latLng(a.lat, a.lng), L.latLng(a.lat, b.lng), L.latLng(b.lat, b.lng), L.latLng(b.lat, a.lng)];
  }

  function preview(extra) {
    const pts = extra ? [...draw.points, extra] : draw.points;
    const shape = draw.mode === "rect" && pts.length === 2 ? rectangle(pts[0], pts[1]) : pts;
    if (draw.shape) draw.shape.setLatLngs(shape);
    else draw.shape = L.polygon(shape, { color: "#c1121f", dashArray: "4 3", weight: 2, fillOpacity: 0.05 }).addTo(map);
  }

  map.on("click", (e) => {
    if (!draw.mode) {
      showError(null);
      queryPoint(e.latlng).catch(showError);
      return;
    }
    if (draw.mode === "rect") {
      draw.points.push(e.latlng);
      if (draw.points.length === 2) finish(rectangle(draw.points[0], draw.points[1]));
      else preview();
      return;
    }
    const first = draw.points[0];
    if (first && draw.points.length >= 3 && map.latLngToContainerPoint(first)
      .distanceTo(map.latLngToContainerPoint(e.latlng)) < 8) {
      finish(draw.points);
      return;
    }
    const last = draw.points[draw.points.length - 1];
    if (last && map.latLngToContainerPoint(last).distanceTo(map.latLngToContainerPoint(e.latlng)) < 3) {
      return; // the second click of a double-click
    }
    draw.points.push(e.latlng);
    preview();
  });
  map.on("dblclick", () => {
    if (draw.mode === "poly" && draw.points.length >= 3) finish(draw.points);
  });
  map.on("mousemove", (e) => { if (draw.mode && draw.points.length) preview(e.latlng); });
  document.addEventListener("keydown", (e) => { if (e.key === "Escape") stopDrawing(); });
  $("draw-rect").addEventListener("click", () => startDrawing("rect"));
  $("draw-poly").addEventListener("click", () => startDrawing("poly"));

  // -- start ---------------------------------------------------------------------------------

  async function start() {
    const view = readHash();
    Object.assign(state, { colormap: view.colormap || state.colormap, opacity: view.opacity ?? state.opacity });
    $("colormap").value = state.colormap;
    $("opacity").value = String(state.opacity);
    if (view.center) map.setView([view.center.lat, view.center.lon], view.center.zoom);
    const release = await getJSON("/releases/latest");
    state.release = release.key;
    $("release").textContent = `release ${release.key} (${release.period}), model ${release.model} ${release.model_version}`;
    const indicators = await getJSON(`/layers?release=${encodeURIComponent(release.key)}&kind=indicator&limit=100`);
    indicators.forEach((l) => $("indicator").append(el("option", { value: l.id, textContent: l.title })));
    const classLayers = await getJSON(`/layers?release=${encodeURIComponent(release.key)}&kind=classes&limit=100`);
    classLayers.forEach((l) => $("indicator").append(el("option", { value: l.id, textContent: `${l.title} (classes)` })));
    const first = indicators.find((l) => l.indicator === "richness") || indicators[0];
    if (view.layer) {
      if (view.layer.includes(":indicator:") || isClasses(view.layer)) $("indicator").value = view.layer;
      setLayer(view.layer, view.group);
    } else if (first) {
      $("indicator").value = first.id;
      setLayer(first.id);
    }
    if (!view.center && first && first.bbox) {
      const [w, s, e, n] = first.bbox;
      map.fitBounds([[s, w], [n, e]]);
    }
    loadTerritories().catch(showError);
  }

  window.sdmatlas = { map, state }; // for the tests and for anyone poking around
  start().catch(showError);
})();
