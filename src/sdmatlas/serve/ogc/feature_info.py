"""Feature info shared by WMS GetFeatureInfo and WMTS GetFeatureInfo: each queried
layer's value at one point, with the species name (the layer title) for species layers
and the class's code and name for class layers, as JSON, plain text or an HTML table."""

from __future__ import annotations

import html
import json
import math
from typing import Any

from fastapi import Response

from sdmatlas.serve.services import Services
from sdmatlas.serve.tiles.layers import LayerRef
from sdmatlas.serve.tiles.tiling import transformer

INFO_FORMATS = ("application/json", "text/plain", "text/html")


def value_at(
    svc: Services, name: str, ref: LayerRef, crs: str, x: float, y: float
) -> dict[str, Any]:
    """The layer's full-resolution value at (x, y) in ``crs`` (x = easting or longitude);
    ``value`` is None outside the grid or where there is no data."""
    rel = svc.open(ref)
    gx, gy = transformer("EPSG:4326" if crs == "CRS:84" else crs, rel.grid.crs).transform(x, y)
    value: float | None = None
    klass: dict[str, Any] | None = None
    if math.isfinite(gx) and math.isfinite(gy):
        row, col = (int(v) for v in rel.grid.rowcol(gx, gy))
        if rel.grid.contains(row, col):
            if ref.kind == "species":
                assert ref.species_id is not None
                srow = rel.species_row(ref.species_id)
                code = int(svc.reader.value_at(rel, 0, "probability", row, col, srow))
                value = None if code == 255 else round(code / 254, 4)
            elif ref.kind == "classes":
                klass = svc.reader.class_at(rel, ref.var, row, col)
                value = klass["value"]
            else:
                v = float(svc.reader.value_at(rel, 0, ref.var, row, col))
                value = None if math.isnan(v) else round(v, 6)
    out: dict[str, Any] = {"layer": name, "release": ref.release, "kind": ref.kind,
                           "species_id": ref.species_id, "title": ref.title,
                           "units": ref.units, "value": value}  # fmt: skip
    if ref.kind == "classes":
        out["class"] = klass
    return out


def _shown(r: dict[str, Any]) -> str:
    """A result's value as text: a class's code and name, or the number."""
    c = r.get("class")
    if c and c.get("code"):
        return f"{c['code']} {c['name']} ({c['value']})"
    if c and c.get("name"):
        return str(c["name"])
    return str(r["value"])


def info_response(results: list[dict[str, Any]], fmt: str) -> Response:
    """The results in one of :data:`INFO_FORMATS` (checked by the caller)."""
    if fmt == "application/json":
        return Response(json.dumps({"features": results}), media_type=fmt)
    if fmt == "text/html":
        rows = "".join(
            f"<tr><td>{html.escape(str(r['title']))}</td><td>{html.escape(_shown(r))}</td>"
            f"<td>{html.escape(str(r['units']))}</td></tr>"
            for r in results
        )
        return Response(f"<table><tr><th>layer</th><th>value</th><th>units</th></tr>{rows}"
                        "</table>", media_type=fmt)  # fmt: skip
    text = "\n".join(f"{r['layer']} ({r['title']}): {_shown(r)} {r['units']}" for r in results)
    return Response(text + "\n", media_type="text/plain")
