"""Cloud-Optimized GeoTIFF export of one layer of a release, whole or clipped to a bbox.

A species layer is written as its uint8 codes with GDAL's band scale
(1/254) and offset (0), nodata 255, and tags that restate the encoding, so
that GIS software shows probabilities. An indicator layer is float32 with NaN
as nodata. Overviews are averages over valid pixels (GDAL's ``average``).

A class layer is its uint8 classes with a GDAL colour table (each class's colour),
nodata 255, overviews by GDAL's ``mode`` (never an average of classes), and each class's
code and name in the band's metadata (``class_<value>``, inside the file). GDAL keeps
*category names* only in a PAM sidecar: ``<file>.aux.xml`` is written beside the file
with them (``gdalinfo`` and QGIS then list the classes by name), and ``<stem>.classes.csv``
maps each value to its code, name, parent and colour.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import numpy.typing as npt
import rasterio
from rio_cogeo.cogeo import cog_validate

from sdmatlas.classes import ClassScheme, palette
from sdmatlas.errors import InvalidInputError, NotFoundError
from sdmatlas.grid import Grid
from sdmatlas.publish.indicators import INDICATORS
from sdmatlas.quantize import ENCODING, NODATA, SCALE
from sdmatlas.release import Release

_LAYER = re.compile(r"^(species|indicator|classes)/([A-Za-z0-9_]{1,64})$")


@dataclass(frozen=True)
class Layer:
    """``species/<id>``, ``indicator/<name>`` or ``classes/<name>``."""

    kind: str
    key: str

    @classmethod
    def parse(cls, text: str) -> Layer:
        m = _LAYER.match(text)
        if not m:
            raise InvalidInputError(
                f"layer {text!r} must be 'species/<id>', 'indicator/<name>' or "
                f"'classes/<name>' (indicators: {', '.join(INDICATORS)})"
            )
        return cls(m.group(1), m.group(2))

    def __str__(self) -> str:
        return f"{self.kind}/{self.key}"


def bbox_window(grid: Grid, bbox: tuple[float, float, float, float]) -> tuple[int, int, int, int]:
    """Rows and columns ``(r0, r1, c0, c1)`` of the pixels a grid-CRS bbox touches."""
    left, bottom, right, top = bbox
    if not (right > left and top > bottom):
        raise InvalidInputError(
            f"bbox must be (left, bottom, right, top) with right > left "
            f"and top > bottom, got {bbox}"
        )
    r0, c0 = (int(v) for v in grid.rowcol(left, top))
    r1 = int(np.ceil((grid.y0 - bottom) / grid.res))
    c1 = int(np.ceil((right - grid.x0) / grid.res))
    r0, c0, r1, c1 = max(r0, 0), max(c0, 0), min(r1, grid.height), min(c1, grid.width)
    if r1 <= r0 or c1 <= c0:
        raise InvalidInputError(f"bbox {bbox} does not overlap the release grid {grid.bounds}")
    return r0, r1, c0, c1


def _layer_data(
    release: Release, layer: Layer, window: tuple[int, int, int, int]
) -> npt.NDArray[np.generic]:
    r0, r1, c0, c1 = window
    if layer.kind == "indicator":
        if layer.key not in INDICATORS:
            raise NotFoundError(f"unknown indicator {layer.key!r}; known: {sorted(INDICATORS)}")
        return release.level(0, layer.key).region((slice(r0, r1), slice(c0, c1)))
    if layer.kind == "classes":
        if layer.key not in release.manifest.class_layers:
            known = sorted(release.manifest.class_layers)
            raise NotFoundError(f"release {release.id} has no class layer {layer.key!r}: {known}")
        return release.level(0, layer.key).region((slice(r0, r1), slice(c0, c1)))
    if not layer.key.isdigit():
        raise NotFoundError(f"species {layer.key!r} is not in this release")
    row = release.species_row(int(layer.key))
    prob = release.level(0, "probability")
    data: npt.NDArray[np.generic] = prob.region((slice(row, row + 1), slice(r0, r1), slice(c0, c1)))
    out: npt.NDArray[np.generic] = data[0]
    return out


def export_cog(
    release: Release,
    layer: str,
    out: Path,
    bbox: tuple[float, float, float, float] | None = None,
    blocksize: int = 256,
) -> Path:
    """Write ``layer`` of ``release`` (optionally clipped to a grid-CRS bbox) as a valid COG."""
    grid = release.grid
    ref = Layer.parse(layer)
    window = bbox_window(grid, bbox) if bbox else (0, grid.height, 0, grid.width)
    data = _layer_data(release, ref, window)
    r0, _, c0, _ = window
    transform = grid.transform @ grid.transform.translation(c0, r0)
    species, classes = ref.kind == "species", ref.kind == "classes"
    resampling = "mode" if classes else "average"
    profile = {
        "driver": "COG",
        "width": data.shape[1],
        "height": data.shape[0],
        "count": 1,
        "dtype": "uint8" if species or classes else "float32",
        "crs": grid.crs,
        "transform": transform,
        "nodata": NODATA if species or classes else float("nan"),
        "compress": "deflate",
        "blocksize": blocksize,
        "overview_resampling": resampling,
        "resampling": resampling,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    with rasterio.open(tmp, "w", **profile) as dst:
        dst.write(data, 1)
        tags = {"sdmatlas_release": release.id, "sdmatlas_layer": str(ref)}
        if species:
            dst.scales, dst.offsets = (SCALE,), (0.0,)
            tags |= {"encoding": str(ENCODING["rule"]), "units": "probability of presence"}
        elif classes:
            entry = release.manifest.class_layers[ref.key]
            dst.write_colormap(1, _colour_table(entry.scheme))
            dst.update_tags(1, **{f"class_{c.value}": f"{c.code} {c.name}"
                                  for c in entry.scheme.classes})  # fmt: skip
            tags |= {"title": entry.title, "nodata_meaning": entry.scheme.empty}
        else:
            tags |= {"units": INDICATORS[ref.key].units, "title": INDICATORS[ref.key].title}
        dst.update_tags(**tags)
    valid, errors, _ = cog_validate(str(tmp), quiet=True)
    if not valid:  # pragma: no cover - a GDAL regression would land here
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"GDAL wrote an invalid COG for {ref}: {errors}")
    tmp.replace(out)
    if classes:
        scheme = release.manifest.class_layers[ref.key].scheme
        out.with_name(out.name + ".aux.xml").write_text(category_names_xml(scheme))
        out.with_suffix(".classes.csv").write_text(classes_csv(scheme))
    return out


def classes_csv(scheme: ClassScheme) -> str:
    """The table from class values to codes and names (EUNIS codes for habitats), with
    each class's parent code and colour: ``value,code,name,parent,color``."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["value", "code", "name", "parent", "color"])
    for c in scheme.classes:
        w.writerow([c.value, c.code, c.name, c.parent or "", c.color])
    return buf.getvalue()


def _colour_table(scheme: ClassScheme) -> dict[int, tuple[int, int, int, int]]:
    pal = palette(scheme)
    return {v: (int(r), int(g), int(b), int(a)) for v, (r, g, b, a) in enumerate(pal)}


def category_names_xml(scheme: ClassScheme) -> str:
    """GDAL's PAM sidecar with the band's category names (index = pixel value; values of
    no class get an empty name), as GDAL itself writes it."""
    names = [""] * (max(c.value for c in scheme.classes) + 1)
    for c in scheme.classes:
        names[c.value] = f"{c.code} {c.name}"
    cats = "".join(f"<Category>{escape(n)}</Category>" for n in names)
    return (
        '<PAMDataset><PAMRasterBand band="1">'
        f"<CategoryNames>{cats}</CategoryNames></PAMRasterBand></PAMDataset>\n"
    )
