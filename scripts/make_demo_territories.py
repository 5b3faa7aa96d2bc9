"""Write the demo's territories: real country outlines and simulated protected areas.

Countries come from the npm package world-atlas 2.0.2 (Natural Earth 4.1, 1:50m,
public domain), fetched with ``npm pack``; every country that meets the demo region is
kept whole. The protected areas are **simulated** (ellipses on land, named as such),
since no protected-area data installs offline. The output is committed at
src/sdmatlas/demo/territories.geojson; run this script again only to regenerate it.

    python scripts/make_demo_territories.py
"""

from __future__ import annotations

import json
import subprocess
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import pyogrio
import shapely
from pyproj import Transformer
from shapely.geometry import box, mapping

from sdmatlas.demo.region import BOUNDS, CRS

OUT = Path(__file__).resolve().parents[1] / "src" / "sdmatlas" / "demo" / "territories.geojson"
ISO2 = {  # ISO 3166 numeric -> alpha-2 for the countries near the demo region
    "380": "IT",
    "705": "SI",
    "191": "HR",
    "040": "AT",
    "070": "BA",
    "674": "SM",
    "348": "HU",
    "756": "CH",
    "336": "VA",
    "688": "RS",
    "499": "ME",
}
# Simulated protected areas: (code, name, centre x, centre y in EPSG:3035, semi-axes m)
RESERVES = [
    ("demo-pa-1", "Simulated reserve: Julian foothills", 4_640_000, 2_600_000, 14_000, 9_000),
    ("demo-pa-2", "Simulated reserve: Istrian karst", 4_650_000, 2_460_000, 12_000, 8_000),
    ("demo-pa-3", "Simulated reserve: Po delta wetlands", 4_500_000, 2_420_000, 10_000, 7_000),
]


def fetch_world_atlas(tmp: Path) -> Path:
    subprocess.run(["npm", "pack", "world-atlas@2.0.2", "--silent"], cwd=tmp, check=True)
    with tarfile.open(tmp / "world-atlas-2.0.2.tgz") as tar:
        tar.extractall(tmp, filter="data")
    return tmp / "package" / "countries-50m.json"


def main() -> None:
    to_wgs = Transformer.from_crs(CRS, 4326, always_xy=True)

    def wgs(g: shapely.Geometry) -> shapely.Geometry:
        return shapely.transform(g, lambda x, y: to_wgs.transform(x, y), interleaved=False)

    region = wgs(box(*BOUNDS).segmentize(10_000))
    features = []
    with tempfile.TemporaryDirectory() as tmp:
        src = fetch_world_atlas(Path(tmp))
        _meta, _, geoms, (ids, names) = pyogrio.raw.read(src, layer="countries")
        for wkb, iso, name in zip(geoms, ids, names, strict=True):
            geom = shapely.from_wkb(wkb)
            if geom is None or not geom.intersects(region):
                continue
            code = ISO2.get(str(iso).zfill(3))
            if code is None:
                raise SystemExit(f"add {name} ({iso}) to ISO2")
            features.append(
                {
                    "type": "Feature",
                    "properties": {
                        "code": code,
                        "name": str(name),
                        "level": "country",
                        "source": "Natural Earth 1:50m via world-atlas 2.0.2 (real)",
                    },
                    "geometry": mapping(shapely.set_precision(geom, 1e-5)),
                }
            )
    for code, name, x, y, a, b in RESERVES:
        t = np.linspace(0, 2 * np.pi, 65)[:-1]
        ell = shapely.Polygon(np.column_stack([x + a * np.cos(t), y + b * np.sin(t)]))
        features.append(
            {
                "type": "Feature",
                "properties": {
                    "code": code,
                    "name": name,
                    "level": "protected_area",
                    "source": "simulated for the demo",
                },
                "geometry": mapping(shapely.set_precision(wgs(ell), 1e-6)),
            }
        )
    features.append(
        {
            "type": "Feature",
            "properties": {
                "code": "demo-region",
                "name": "Northern Adriatic demo region",
                "level": "custom",
                "source": "the demo's grid extent",
            },
            "geometry": mapping(shapely.set_precision(region, 1e-6)),
        }
    )
    OUT.write_text(json.dumps({"type": "FeatureCollection", "features": features}) + "\n")
    print(f"{len(features)} territories written to {OUT} ({OUT.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
