"""Benchmark: catalog queries at 10,000 species and a few hundred territories.

    .venv/bin/python bench/catalog.py [--species 10000] [--territories 300] [--releases 3]

Fills a catalog on PostgreSQL 15 + PostGIS 3 (a throwaway cluster, as in the
tests) and on the embedded SQLite with the same synthetic data:

* 10,000 species with two-word Latin-like names in 1,000 genera and 120
  families, and two vernacular names each (30,000 searchable names), imported
  from a CSV through ``import_species`` (timed);
* a few hundred territories over Europe: a grid of regions and elliptical
  protected areas, imported from GeoJSON through ``import_territories``;
* ``--releases`` published releases (periods), each with one layer per species
  (its footprint a random box inside Europe) and the 7 indicator layers, bulk
  inserted (30,021 layers at 3 releases).

Then times, with a new session per query (pool checkout included, as in the
API): species search by prefix and by fuzzy match (misspelt names), layers of a
species, layers of a species in a territory, territories at a point, and the
latest release of a period. Reports p50/p90 per backend and the PostGIS goal
(p50 <= 5 ms for search and layer look-up). Results go to
bench/results/catalog-<date>.json.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import platform
import random
import string
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
from shapely.geometry import Point, box, mapping

from sdmatlas.catalog import queries
from sdmatlas.catalog.db import Catalog
from sdmatlas.catalog.imports import import_species, import_territories
from sdmatlas.catalog.register import layer_version
from sdmatlas.catalog.schema import Layer, LayerKind, Model, Release, ReleaseStatus
from sdmatlas.publish.indicators import INDICATORS
from sdmatlas.testing.localpg import LocalPostgres

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

ROOT = Path(__file__).resolve().parents[1]
EUROPE = (-10.0, 35.0, 30.0, 70.0)  # lon/lat box the synthetic data lives in
# Syllables of Latin-like names: as varied as real binomials' trigrams need to be for the
# fuzzy-search figures to mean something (a handful of syllables would make every name
# similar to every other).
SYLLABLES = [c + v for c in "bcdfghlmnprstvz" for v in "aeiouy"] + [
    c + v for c in ["ch", "ph", "th", "gr", "st", "tr", "pl", "cl"] for v in "aeiou"
]


def latin(rng: random.Random, parts: int) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(parts))


def write_species_csv(path: Path, n: int, rng: random.Random) -> list[str]:
    genera = sorted({latin(rng, 3).capitalize() + "us" for _ in range(1200)})[:1000]
    families = sorted({latin(rng, 3).capitalize() + "aceae" for _ in range(200)})[:120]
    names: list[str] = []
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["species_id", "scientific_name", "genus", "family", "gbif_key", "vernacular"])
        seen: set[str] = set()
        sid = 0
        while sid < n:
            genus = rng.choice(genera)
            name = f"{genus} {latin(rng, 3)}a"
            if name in seen:
                continue
            seen.add(name)
            sid += 1
            names.append(name)
            vern = f"en:{latin(rng, 2).capitalize()} {rng.choice(['wort', 'weed', 'grass'])}; "
            vern += f"de:{latin(rng, 3).capitalize()}kraut"
            family = families[genera.index(genus) % len(families)]
            w.writerow([sid, name, genus, family, 5_000_000 + sid, vern])
    return names


def write_territories(path: Path, n: int, rng: random.Random) -> None:
    features = []
    cols = 8
    for i in range(cols * 5):  # regions: a 8 x 5 grid over Europe
        x0 = EUROPE[0] + (i % cols) * 5.0
        y0 = EUROPE[1] + (i // cols) * 7.0
        geom = box(x0, y0, x0 + 5.0, y0 + 7.0)
        features.append((f"R{i:03d}", f"Region {i}", "region", geom))
    for i in range(n - len(features)):  # protected areas: ellipses of 5 to 50 km
        c = Point(rng.uniform(EUROPE[0], EUROPE[2]), rng.uniform(EUROPE[1], EUROPE[3]))
        r = rng.uniform(0.05, 0.5)
        geom = c.buffer(r, 16)
        features.append((f"PA{i:04d}", f"Protected area {i}", "protected_area", geom))
    doc = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "properties": {"code": code, "name": name, "level": level},
                "geometry": mapping(geom),
            }
            for code, name, level, geom in features
        ],
    }
    path.write_text(json.dumps(doc))


def insert_releases(c: Catalog, n_species: int, n_releases: int, rng: random.Random) -> int:
    """Releases with one layer per species and per indicator (bulk insert: registering
    from real release files is measured by the publish benchmark)."""
    now = dt.datetime.now(dt.UTC)
    whole = box(*EUROPE)
    n = 0
    with c.session() as s:
        model = Model(name="bench-sdm", version="1.0.0", digest="", card={})
        s.add(model)
        s.flush()
        for k in range(n_releases):
            period = str(2000 + 25 * k)
            key = f"bench-{period}"
            rel = Release(
                key=key,
                model_id=model.id,
                period=period,
                status=ReleaseStatus.published,
                storage_uri=f"/releases/{key}",
                grid={"crs": "EPSG:3035"},
                threshold=0.5,
                footprint=whole,
                created_at=now,
                published_at=now + dt.timedelta(seconds=k),
            )
            s.add(rel)
            s.flush()
            rows: list[dict[str, Any]] = []
            for sid in range(1, n_species + 1):
                w, h = rng.uniform(1, 15), rng.uniform(1, 10)
                x0 = rng.uniform(EUROPE[0], EUROPE[2] - w)
                y0 = rng.uniform(EUROPE[1], EUROPE[3] - h)
                rows.append(
                    _layer(
                        rel.id,
                        key,
                        LayerKind.species,
                        f"species/{sid}",
                        sid,
                        None,
                        box(x0, y0, x0 + w, y0 + h),
                    )
                )
            for name in INDICATORS:
                rows.append(
                    _layer(rel.id, key, LayerKind.indicator, f"indicator/{name}", None, name, whole)
                )
            s.execute(sa.insert(Layer), rows)
            n += len(rows)
    return n


def _layer(
    rid: int, key: str, kind: LayerKind, name: str, sid: int | None, ind: str | None, geom: Any
) -> dict[str, Any]:
    minx, miny, maxx, maxy = geom.bounds
    return {
        "release_id": rid, "kind": kind, "name": name, "species_id": sid, "indicator": ind,
        "title": name, "units": "", "min": 0.0, "max": 1.0, "mean": 0.1,
        "histogram": {"edges": [0, 1], "counts": [1]}, "footprint": geom,
        "minx": minx, "miny": miny, "maxx": maxx, "maxy": maxy,
        "version": layer_version(key, "now", name),
    }  # fmt: skip


def timed(c: Catalog, fn: Callable[[Any, Any], Any], args: list[Any]) -> dict[str, float]:
    for a in args[:5]:  # warm the pool and the caches
        with c.session() as s:
            fn(s, a)
    ms = []
    for a in args:
        t = time.perf_counter()
        with c.session() as s:
            fn(s, a)
        ms.append((time.perf_counter() - t) * 1000)
    return {
        "p50_ms": round(float(np.median(ms)), 3),
        "p90_ms": round(float(np.percentile(ms, 90)), 3),
    }


def misspell(name: str, rng: random.Random) -> str:
    i = rng.randrange(1, len(name) - 1)
    return name[:i] + rng.choice(string.ascii_lowercase) + name[i + 1 :]


def run_backend(
    c: Catalog, csv_path: Path, terr_path: Path, names: list[str], args: argparse.Namespace
) -> dict[str, Any]:
    rng = random.Random(7)
    out: dict[str, Any] = {"backend": c.dialect}
    c.upgrade()
    t = time.perf_counter()
    import_territories(c, terr_path)
    out["import_territories_s"] = round(time.perf_counter() - t, 2)
    t = time.perf_counter()
    import_species(c, csv_path)
    out["import_species_s"] = round(time.perf_counter() - t, 2)
    t = time.perf_counter()
    out["layers"] = insert_releases(c, args.species, args.releases, rng)
    out["insert_layers_s"] = round(time.perf_counter() - t, 2)
    if c.dialect == "postgresql":
        with c.engine.connect() as conn:
            conn.execute(sa.text("ANALYZE"))
            conn.commit()

    n = args.n
    sample = [rng.choice(names) for _ in range(n)]
    prefixes = [s[: rng.randint(3, 6)] for s in sample]
    typos = [misspell(s, rng) for s in sample]
    ids = [rng.randint(1, args.species) for _ in range(n)]
    pas = [f"PA{rng.randrange(args.territories - 40):04d}" for _ in range(n)]
    points = [
        (rng.uniform(EUROPE[0], EUROPE[2]), rng.uniform(EUROPE[1], EUROPE[3])) for _ in range(n)
    ]
    periods = [str(2000 + 25 * rng.randrange(args.releases)) for _ in range(n)]
    out["queries"] = {
        "species search, prefix": timed(c, lambda s, q: queries.search_species(s, q), prefixes),
        "species search, fuzzy": timed(
            c, lambda s, q: queries.search_species(s, q, mode="fuzzy"), typos
        ),
        "species by genus": timed(
            c, lambda s, q: queries.search_species(s, genus=q.split()[0]), sample
        ),
        "layers of a species": timed(c, lambda s, i: queries.find_layers(s, species_id=i), ids),
        "layers of a species in a territory": timed(
            c,
            lambda s, a: queries.find_layers(s, species_id=a[0], territory=a[1]),
            list(zip(ids, pas, strict=True)),
        ),
        "indicator layers of a period": timed(
            c, lambda s, p: queries.find_layers(s, kind="indicator", period=p), periods
        ),
        "territories at a point": timed(c, lambda s, p: queries.territories_at(s, *p), points),
        "latest release of a period": timed(c, lambda s, p: queries.latest_release(s, p), periods),
    }
    return out


def build_parser() -> argparse.ArgumentParser:
    ap = common.parser(__doc__)
    ap.add_argument("--species", type=int, default=10_000)
    ap.add_argument("--territories", type=int, default=300)
    ap.add_argument("--releases", type=int, default=3)
    ap.add_argument("--n", type=int, default=200, help="queries of each kind")
    return ap


def output_path(args: argparse.Namespace) -> Path:
    return common.results_file(args.results, "catalog")


def main() -> None:
    args = build_parser().parse_args()
    out = output_path(args)

    rng = random.Random(42)
    results: dict[str, Any] = {
        "date": dt.date.today().isoformat(),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
        "species": args.species,
        "territories": args.territories,
        "releases": args.releases,
        "backends": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        csv_path, terr_path = Path(tmp) / "species.csv", Path(tmp) / "territories.geojson"
        names = write_species_csv(csv_path, args.species, rng)
        write_territories(terr_path, args.territories, rng)
        pg = LocalPostgres().start()
        try:
            for url in [pg.url, f"sqlite:///{tmp}/catalog.sqlite"]:
                c = Catalog(url)
                try:
                    results["backends"].append(run_backend(c, csv_path, terr_path, names, args))
                finally:
                    c.dispose()
        finally:
            pg.remove()

    for b in results["backends"]:
        print(
            f"\n{b['backend']}: imports {b['import_species_s']} s (species), "
            f"{b['import_territories_s']} s (territories); {b['layers']} layers"
        )
        for name, q in b["queries"].items():
            print(f"  {name:38s} p50 {q['p50_ms']:7.2f} ms   p90 {q['p90_ms']:7.2f} ms")
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nresults in {out}")


if __name__ == "__main__":
    main()
