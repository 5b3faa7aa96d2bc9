#!/usr/bin/env bash
# Rebuild the web viewer's vendored libraries from npm (viewer/package.json, locked by
# viewer/package-lock.json) into src/sdmatlas/serve/static/vendor/. The output is
# committed, so installing sdmatlas needs no Node.js; run this (`make viewer`) after
# changing the pinned versions. The style-spec validator (a dev dependency) stays in
# viewer/node_modules: the tests validate our style.json documents with it. The page loads nothing from any other host.
set -euo pipefail
cd "$(dirname "$0")/.."
npm ci --prefix viewer --no-audit --no-fund
out=src/sdmatlas/serve/static/vendor/leaflet
rm -rf "$out"
mkdir -p "$out/images"
src=viewer/node_modules/leaflet
cp "$src/dist/leaflet.js" "$src/dist/leaflet.css" "$src/LICENSE" "$out/"
cp "$src"/dist/images/*.png "$out/images/"
echo "vendored leaflet $(node -p "require('./$src/package.json').version") into $out"
# MapLibre GL JS (the /maplibre reference page): the UMD build, its CSS and licence
out=src/sdmatlas/serve/static/vendor/maplibre-gl
rm -rf "$out"
mkdir -p "$out"
src=viewer/node_modules/maplibre-gl
cp "$src/dist/maplibre-gl.js" "$src/dist/maplibre-gl.css" "$src/LICENSE.txt" "$out/"
sed -i '/^\/\/# sourceMappingURL=/d' "$out/maplibre-gl.js"  # the map is not vendored
echo "vendored maplibre-gl $(node -p "require('./$src/package.json').version") into $out"
# pmtiles (static archives, static/archive.html): the browser build; the package ships
# no licence file, its package.json says BSD-3-Clause
out=src/sdmatlas/serve/static/vendor/pmtiles
rm -rf "$out"
mkdir -p "$out"
src=viewer/node_modules/pmtiles
cp "$src/dist/pmtiles.js" "$out/"
sed -i '/^\/\/# sourceMappingURL=/d' "$out/pmtiles.js"
v=$(node -p "require('./$src/package.json').version")
printf 'pmtiles %s (npm), BSD-3-Clause, https://github.com/protomaps/PMTiles\n' "$v" > "$out/LICENSE"
echo "vendored pmtiles $v into $out"
