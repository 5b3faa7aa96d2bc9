// Validates MapLibre style documents with the official validator
// (@maplibre/maplibre-gl-style-spec, installed by `npm ci --prefix viewer`).
// stdin: a JSON array of style documents; stdout: a JSON array, per document, of its
// error messages (empty when valid).
"use strict";
const spec = require("@maplibre/maplibre-gl-style-spec");
let input = "";
process.stdin.on("data", (d) => { input += d; });
process.stdin.on("end", () => {
  const styles = JSON.parse(input);
  // validateStyleMin: what the package's gl-style-validate runs once the JSON is parsed
  const out = styles.map((s) => spec.validateStyleMin(s).map((e) => e.message));
  process.stdout.write(JSON.stringify(out));
});
