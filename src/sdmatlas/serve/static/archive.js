// sdmatlas static archive page: one PMTiles archive on Leaflet, read by HTTP range
// requests from wherever the page is served (no API, no other host).
"use strict";

(function () {
  const info = document.getElementById("info");
  const url = new URLSearchParams(window.location.search).get("url");
  const map = L.map("map", { zoomSnap: 0.25 });
  window.sdmatlasArchive = { map, layer: null, header: null, metadata: null };

  function fail(err) {
    info.className = "error";
    info.textContent = String(err && err.message ? err.message : err);
  }

  async function start() {
    if (!url) throw new Error("give the archive as ?url=layer.pmtiles");
    const archive = new pmtiles.PMTiles(new URL(url, window.location.href).href);
    const [header, metadata] = await Promise.all([archive.getHeader(), archive.getMetadata()]);
    const layer = pmtiles.leafletRasterLayer(archive, {
      attribution: metadata.attribution || "",
      minZoom: 0,
      maxNativeZoom: header.maxZoom,
      maxZoom: header.maxZoom + 4,
      opacity: 0.85,
    });
    layer.addTo(map);
    map.fitBounds([[header.minLat, header.minLon], [header.maxLat, header.maxLon]]);
    if (map.getZoom() < header.minZoom) map.setZoom(header.minZoom);
    info.textContent = `${metadata.name || url} (${metadata.layer || ""}, version ${metadata.version || "?"}), zooms ${header.minZoom}–${header.maxZoom}`;
    Object.assign(window.sdmatlasArchive, { layer, header, metadata });
  }

  start().catch(fail);
})();
