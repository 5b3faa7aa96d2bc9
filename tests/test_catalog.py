"""The catalog on both backends: migrations, imports, queries, registration, outages.

Every test taking ``catalog`` or ``empty_catalog`` runs twice: on SQLite and on a real
PostgreSQL + PostGIS. ``test_same_answers_on_both_backends`` runs one battery of
queries on both and compares the answers.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from conftest import ROOT, catalog_url
from sdmatlas.catalog import queries
from sdmatlas.catalog.db import Catalog
from sdmatlas.catalog.imports import import_species, import_territories
from sdmatlas.catalog.names import trigrams
from sdmatlas.catalog.register import register_release, set_release_status, validate_period
from sdmatlas.catalog.schema import Base
from sdmatlas.errors import (
    DatabaseUnavailableError,
    InvalidInputError,
    NotFoundError,
    ReleaseExistsError,
    TerritoryError,
)
from sdmatlas.predict.cube import open_cube
from sdmatlas.publish.categorical import CLASS_LAYERS
from sdmatlas.publish.indicators import INDICATORS, SpeciesInfo
from sdmatlas.publish.release import PublishOptions, publish
from sdmatlas.quantize import NODATA
from sdmatlas.storage import open_release
from sdmatlas.testing.localpg import LocalPostgres
from sdmatlas.testing.releases import release_group

SPECIES_CSV = ROOT / "tests" / "data" / "species.csv"
TERRITORIES = ROOT / "src" / "sdmatlas" / "demo" / "territories.geojson"
TRIESTE = (13.77, 45.65)
LJUBLJANA = (14.51, 46.05)
OPEN_SEA = (13.0, 44.9)  # the Adriatic, inside the demo region


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory, cube: Path) -> Path:
    ids = open_cube(cube).species_ids
    n = len(ids)
    info = SpeciesInfo(
        ids=np.asarray(ids, np.int64),
        protected=np.zeros(n, bool),
        invasive=np.zeros(n, bool),
        endemic=np.zeros(n, bool),
    )
    root = tmp_path_factory.mktemp("releases")
    return Path(publish(cube, root, "coast-1", info, PublishOptions(threshold=0.4)))


def populate(c: Catalog, release: Path | None = None) -> None:
    import_territories(c, TERRITORIES)
    import_species(c, SPECIES_CSV, territory="HR")
    if release is not None:
        register_release(c, open_release(release), str(release), "2020")


def snapshot(c: Catalog) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every catalog table, in a comparable form."""
    out = {}
    with c.session() as s:
        for table in Base.metadata.sorted_tables:
            rows = s.execute(sa.select(table).order_by(*table.primary_key.columns)).all()
            out[table.name] = [
                tuple(v.wkb_hex if hasattr(v, "wkb_hex") else v for v in r) for r in rows
            ]
    return out


# -- migrations ---------------------------------------------------------------------------------


def _backend_internal(obj: Any, name: str | None, type_: str, *_: Any) -> bool:
    # R*Tree tables (SQLite) and PostGIS's own tables are not part of the declared schema
    return not (name and ("_rtree" in name or name in {"spatial_ref_sys"}))


def test_migrations_from_empty_to_head_and_back(empty_catalog: Catalog) -> None:
    c = empty_catalog
    assert c.revision() is None
    c.upgrade()
    assert c.is_current()
    with c.engine.connect() as conn:
        ctx = MigrationContext.configure(
            conn, opts={"include_object": _backend_internal, "compare_type": False}
        )
        diff = [
            d
            for d in compare_metadata(ctx, Base.metadata)
            # GiST/GIN indexes made by hand in the migration are not declared on the models
            if not (
                d[0] == "remove_index"
                and d[1].name.startswith(
                    (
                        "ix_territory_geom",
                        "ix_layer_footprint",
                        "ix_release_footprint",
                        "ix_species_name_trgm",
                    )
                )
            )
        ]
    assert diff == [], "the migrations and the models disagree"
    c.downgrade()
    assert c.revision() is None
    c.upgrade()
    assert c.is_current()


def test_the_class_layer_kind_migrates_with_the_spatial_index(
    empty_catalog: Catalog, published: Path
) -> None:
    """0005 rebuilds SQLite's layer table (a CHECK constraint cannot be altered there):
    layers registered before it keep their rows and their R-tree triggers work after it
    (a territory search finds layers registered before and after); downgrading removes
    the class layers and nothing else."""
    c = empty_catalog
    c.upgrade("0004")
    import_territories(c, TERRITORIES)
    import_species(c, SPECIES_CSV, territory="HR")
    c.upgrade()
    register_release(c, open_release(published), str(published), "2020")
    with c.session() as s:
        found = queries.find_layers(s, territory="HR", limit=1000)
        kinds = {x.kind for x in found}
        assert kinds == {"species", "indicator", "classes"}
        in_hr = len(found)
        total = s.execute(sa.text("SELECT count(*) FROM layer")).scalar()
    c.downgrade("0004")
    with c.session() as s:
        kinds = {r[0] for r in s.execute(sa.text("SELECT DISTINCT kind FROM layer"))}
        assert kinds == {"species", "indicator"}
        n = s.execute(sa.text("SELECT count(*) FROM layer")).scalar()
        assert n == total - len(CLASS_LAYERS)
    c.upgrade()
    with c.session() as s:  # the triggers again: an update keeps the R-tree in step
        s.execute(sa.text("UPDATE layer SET minx = minx"))
        found = queries.find_layers(s, territory="HR", limit=1000)
        assert len(found) == in_hr - len(CLASS_LAYERS)


def test_postgis_indexes_are_there(postgres: LocalPostgres, tmp_path: Path) -> None:
    from conftest import new_database

    c = Catalog(new_database(postgres))
    c.upgrade()
    with c.session() as s:
        idx = dict(
            s.execute(
                sa.text("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname='public'")
            ).all()
        )
    assert "USING gist (geom)" in idx["ix_territory_geom"]
    assert "USING gist (footprint)" in idx["ix_layer_footprint"]
    assert "gin_trgm_ops" in idx["ix_species_name_trgm"]
    c.dispose()


def test_trigrams_are_pg_trgm_s(postgres: LocalPostgres) -> None:
    engine = sa.create_engine(postgres.url)
    names = ["Quercus robur", "Zois' bellflower", "Hop-hornbeam", "a", "X-1 y_2", "  oak  "]
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE EXTENSION IF NOT EXISTS pg_trgm"))
        for name in names:
            pg = set(conn.execute(sa.text("SELECT show_trgm(:n)"), {"n": name}).scalar_one())
            assert pg == trigrams(name), name
        # non-ASCII trigrams show as hashes in show_trgm: compare similarities instead
        for a, b in [("Chêne pédonculé", "chene pedoncule"), ("Stieleiche", "Stieleiché")]:
            pg_sim = conn.execute(sa.text("SELECT similarity(:a, :b)"), {"a": a, "b": b})
            ta, tb = trigrams(a), trigrams(b)
            assert pg_sim.scalar_one() == pytest.approx(len(ta & tb) / len(ta | tb), abs=1e-6)
    engine.dispose()


# -- imports ------------------------------------------------------------------------------------


def test_import_round_trip_and_idempotence(catalog: Catalog) -> None:
    populate(catalog)
    with catalog.session() as s:
        oak = queries.get_species(s, 1)
        assert (oak.scientific_name, oak.genus, oak.family, oak.gbif_key) == (
            "Quercus robur",
            "Quercus",
            "Fagaceae",
            2878688,
        )
        assert sorted((n.lang, n.name) for n in oak.names) == [
            ("", "Quercus robur"),
            ("de", "Stieleiche"),
            ("en", "English oak"),
            ("fr", "Chêne pédonculé"),
        ]
        si = queries.get_territory(s, "SI")
        assert si.name == "Slovenia" and si.level == "country"
        assert 18_000 < si.area_km2 < 22_000  # Slovenia: 20,273 km²
    before = snapshot(catalog)
    r1 = import_territories(catalog, TERRITORIES)
    r2 = import_species(catalog, SPECIES_CSV, territory="HR")
    assert (r1.added, r1.updated, r2.added, r2.updated) == (0, 0, 0, 0)
    assert r2.unchanged == 12
    assert snapshot(catalog) == before


def test_import_updates_changed_rows(catalog: Catalog, tmp_path: Path) -> None:
    populate(catalog)
    text = SPECIES_CSV.read_text().replace("en:English oak; ", "en:Pedunculate oak; ")
    changed = tmp_path / "species.csv"
    changed.write_text(text)
    report = import_species(catalog, changed, territory="HR")
    assert (report.updated, report.unchanged) == (1, 11)
    with catalog.session() as s:
        hits = queries.search_species(s, "pedunc")
        assert [h.id for h in hits] == [1]
        assert queries.search_species(s, "english oak") == []


def _geojson(tmp_path: Path, features: list[tuple[Any, Any]]) -> Path:
    path = tmp_path / "t.geojson"
    path.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    {"type": "Feature", "properties": {"code": c, "name": f"T {c}"}, "geometry": g}
                    for c, g in features
                ],
            }
        )
    )
    return path


def test_invalid_polygons_are_repaired_or_refused(catalog: Catalog, tmp_path: Path) -> None:
    bowtie = {
        "type": "Polygon",
        "coordinates": [[[13, 45], [14, 46], [14, 45], [13, 46], [13, 45]]],
    }
    report = import_territories(catalog, _geojson(tmp_path, [("bow", bowtie)]), "custom")
    assert report.repaired == ["bow"]
    with catalog.session() as s:
        t = queries.get_territory(s, "bow")
        assert t.geom.is_valid and t.geom.geom_type == "MultiPolygon"
        assert t.geom.area == pytest.approx(0.5)
    flat = {"type": "Polygon", "coordinates": [[[13, 45], [14, 45], [15, 45], [13, 45]]]}
    line = {"type": "LineString", "coordinates": [[13, 45], [14, 46]]}
    for code, geom, message in [
        ("flat", flat, "feature 'flat': invalid polygon"),
        ("line", line, "feature 'line': a territory must be a polygon"),
        ("none", None, "feature 'none': the geometry is empty"),
    ]:
        with pytest.raises(TerritoryError, match=message):
            import_territories(
                catalog, _geojson(tmp_path, [("ok", bowtie), (code, geom)]), "custom"
            )
        # the whole file was refused: "ok" is not there
        with catalog.session() as s, pytest.raises(NotFoundError):
            queries.get_territory(s, "ok")


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("x,Quercus robur,,,,,0,0,0", "species_id 'x' is not an integer"),
        ("13,,,,,,0,0,0", "scientific_name is missing"),
        ("13,Abies alba,,,,,maybe,0,0", "protected='maybe' is not a yes/no value"),
        ("13,Abies alba,,,,en,0,0,0", "vernacular name 'en' must be written lang:name"),
        ("1,Abies alba,,,,,0,0,0", "species_id 1 appears twice"),
    ],
)
def test_bad_species_rows_name_the_line(
    catalog: Catalog, tmp_path: Path, row: str, message: str
) -> None:
    populate(catalog)
    before = snapshot(catalog)
    bad = tmp_path / "bad.csv"
    bad.write_text(SPECIES_CSV.read_text() + row + "\n")
    with pytest.raises(InvalidInputError, match=f"line 14: {message}"):
        import_species(catalog, bad, territory="HR")
    assert snapshot(catalog) == before


def test_flags_need_a_known_territory(catalog: Catalog) -> None:
    with pytest.raises(InvalidInputError, match="--territory"):
        import_species(catalog, SPECIES_CSV)
    with pytest.raises(NotFoundError, match="no territory with code 'XX'"):
        import_species(catalog, SPECIES_CSV, territory="XX")


# -- queries ------------------------------------------------------------------------------------


def _ids(hits: list[queries.SpeciesHit]) -> list[int]:
    return [h.id for h in hits]


def test_species_search(catalog: Catalog) -> None:
    populate(catalog)
    with catalog.session() as s:
        assert _ids(queries.search_species(s, "querc")) == [11, 3, 2, 1]  # by name
        assert _ids(queries.search_species(s, "QUERCUS R")) == [1]
        assert _ids(queries.search_species(s, "holm")) == [3]  # a vernacular name
        assert queries.search_species(s, "holm")[0].matched == "Holm oak"
        assert _ids(queries.search_species(s, "chêne")) == [1]
        fuzzy = queries.search_species(s, "Qercus robor", mode="fuzzy")
        assert fuzzy[0].id == 1 and 0.3 <= fuzzy[0].score < 1
        assert fuzzy == sorted(fuzzy, key=lambda h: -h.score)
        assert _ids(queries.search_species(s, genus="Quercus")) == [11, 3, 2, 1]
        assert _ids(queries.search_species(s, family="Fagaceae", limit=2, offset=3)) == [2, 1]
        assert _ids(queries.search_species(s, status="invasive")) == [6, 7]
        assert _ids(queries.search_species(s, status="endemic", territory="HR")) == [9, 8, 10]
        assert queries.search_species(s, status="endemic", territory="SI") == []


@pytest.mark.parametrize(
    "q",
    ["'; DROP TABLE species; --", "%", "_", "Quercus' OR '1'='1", '"', "\\", "robur%", "∑ 🌳"],
)
def test_search_text_is_harmless(catalog: Catalog, q: str) -> None:
    populate(catalog)
    with catalog.session() as s:
        assert queries.search_species(s, q) == []
        queries.search_species(s, q, mode="fuzzy")  # no error; results may be empty
        assert len(queries.search_species(s, genus=q)) == 0
        assert s.scalar(sa.text("SELECT count(*) FROM species")) == 12


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"q": "x" * 201}, "at most 200"),
        ({"q": "   "}, "empty"),
        ({"q": "oak\x00"}, "control characters"),
        ({"limit": 0}, "limit"),
        ({"offset": -1}, "offset"),
        ({"status": "rare"}, "status 'rare'"),
        ({"mode": "regex"}, "search mode"),
    ],
)
def test_bad_searches(catalog: Catalog, kwargs: dict[str, Any], message: str) -> None:
    with catalog.session() as s, pytest.raises(InvalidInputError, match=message):
        queries.search_species(s, **kwargs)


def test_territories_at_points_and_in_boxes(catalog: Catalog) -> None:
    populate(catalog)
    with catalog.session() as s:
        assert [t.code for t in queries.territories_at(s, *TRIESTE)] == ["demo-region", "IT"]
        assert [t.code for t in queries.territories_at(s, *LJUBLJANA)] == ["SI", "demo-region"]
        assert [t.code for t in queries.territories_at(s, *OPEN_SEA)] == ["demo-region"]
        assert queries.territories_at(s, 0.0, 0.0) == []
        codes = [t.code for t in queries.territories_in_bbox(s, (13.5, 45.0, 14.2, 45.8))]
        assert set(codes) == {"IT", "SI", "HR", "demo-region", "demo-pa-2"}
        assert [t.code for t in queries.territories_at(s, *TRIESTE, level="country")] == ["IT"]
        with pytest.raises(InvalidInputError, match="west < east"):
            queries.territories_in_bbox(s, (14, 45, 13, 46))
        with pytest.raises(InvalidInputError, match="longitude/latitude"):
            queries.territories_at(s, 200, 45)


def test_not_found(catalog: Catalog) -> None:
    with catalog.session() as s:
        with pytest.raises(NotFoundError, match="no species with id 999"):
            queries.get_species(s, 999)
        with pytest.raises(NotFoundError, match="no territory with code 'ZZ'"):
            queries.get_territory(s, "ZZ")
        with pytest.raises(NotFoundError, match="no release 'nope'"):
            queries.get_release(s, "nope")
        with pytest.raises(NotFoundError, match="no published release for period '1990'"):
            queries.latest_release(s, "1990")


# -- releases and layers ------------------------------------------------------------------------


@pytest.mark.slow
def test_register_release_and_find_its_layers(
    catalog: Catalog, published: Path, cube: Path
) -> None:
    populate(catalog, published)
    codes = np.asarray(open_cube(cube).array()[:])
    n_species = codes.shape[0]
    with catalog.session() as s:
        rel = queries.latest_release(s, "2020")
        assert (rel.key, rel.status, rel.model) == ("coast-1", "published", "demo-sdm")
        layers = queries.find_layers(s, release="coast-1", limit=1000)
        assert len(layers) == n_species + len(INDICATORS) + len(CLASS_LAYERS)
        (worst,) = queries.find_layers(s, kind="classes")
        assert (worst.indicator, worst.name) == ("set_worst_status", "classes/set_worst_status")
        # its class counts: every territory pixel has a class or an empty set
        territory = int((codes[0] != NODATA).sum())
        assert 0 < sum(worst.histogram["counts"]) <= territory
        assert worst.histogram["classes"] == ["LC", "NT", "VU", "EN", "CR", "NA"]
        # species stats equal the cube's, footprint = where p >= 0.4
        sid = open_cube(cube).species_ids[5]
        (layer,) = queries.find_layers(s, species_id=sid)
        c = codes[5][codes[5] != NODATA] / 254.0
        assert layer.mean == pytest.approx(c.mean(), abs=1e-6)
        assert layer.min == pytest.approx(c.min(), abs=1e-6)
        assert layer.max == pytest.approx(c.max(), abs=1e-6)
        assert sum(layer.histogram["counts"]) == c.size
        (rich,) = queries.find_layers(s, indicator="richness")
        assert rich.kind == "indicator" and rich.max is not None
        assert len({x.version for x in layers}) == len(layers)
        # 188 of the cube's species were not in the CSV: added from the release's names
        assert queries.get_species(s, int(open_cube(cube).species_ids[-1])).scientific_name
    with pytest.raises(ReleaseExistsError, match="already in the catalog"):
        register_release(catalog, open_release(published), str(published), "2020")


def test_presence_boxes_equal_numpy(published: Path, cube: Path) -> None:
    codes = np.asarray(open_cube(cube).array()[:])
    boxes = np.asarray(release_group(published)["stats/presence"][:])
    hist = np.asarray(release_group(published)["stats/histogram"][:])
    t = int(np.ceil(0.4 * 254 - 1e-9))
    n_present = 0
    for i in range(codes.shape[0]):
        assert (hist[i] == np.bincount(codes[i].ravel(), minlength=256)).all()
        rows, cols = np.nonzero((codes[i] >= t) & (codes[i] != NODATA))
        if rows.size == 0:
            assert (boxes[i] == -1).all()
        else:
            n_present += 1
            assert boxes[i].tolist() == [rows.min(), cols.min(), rows.max() + 1, cols.max() + 1]
    assert 0 < n_present < codes.shape[0]


@pytest.mark.slow
def test_layers_by_territory_use_footprints(catalog: Catalog, published: Path) -> None:
    populate(catalog, published)
    with catalog.session() as s:
        everywhere = queries.find_layers(s, kind="species", limit=1000)
        in_it = queries.find_layers(s, kind="species", territory="IT", limit=1000)
        far = queries.find_layers(s, kind="species", territory="HU", limit=1000)
    assert far == []  # the fixture's coast window is near Trieste, far from Hungary
    present = [x for x in everywhere if x.bbox is not None]
    assert 0 < len(in_it) <= len(present) < len(everywhere) + 1
    assert all(x.bbox is not None for x in in_it)


@pytest.mark.slow
def test_retired_releases_leave_the_queries(catalog: Catalog, published: Path) -> None:
    populate(catalog, published)
    set_release_status(catalog, "coast-1", "retired")
    with catalog.session() as s:
        assert queries.find_layers(s, indicator="richness") == []
        assert len(queries.find_layers(s, indicator="richness", include_retired=True)) == 1
        with pytest.raises(NotFoundError):
            queries.latest_release(s)
    with pytest.raises(InvalidInputError, match="status 'gone'"):
        set_release_status(catalog, "coast-1", "gone")


def test_a_failed_registration_leaves_nothing(
    catalog: Catalog, published: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    populate(catalog)
    before = snapshot(catalog)
    import sdmatlas.catalog.register as reg

    calls = {"n": 0}
    real = reg.code_summary

    def failing(h: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 50:
            raise RuntimeError("disk full")
        return real(h)

    monkeypatch.setattr(reg, "code_summary", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        register_release(catalog, open_release(published), str(published), "2020")
    assert snapshot(catalog) == before


def test_bad_periods(catalog: Catalog, published: Path) -> None:
    for bad in ["", "2020 ", "a" * 33, "20;20", "current", "2020-13", "2020-02-30", "ssp585-2050"]:
        with pytest.raises(InvalidInputError, match="ISO 8601"):
            register_release(catalog, open_release(published), str(published), bad)
    with pytest.raises(InvalidInputError, match="is written 2011/2020"):
        register_release(catalog, open_release(published), str(published), "2011-2020")
    with pytest.raises(InvalidInputError, match="ends before it starts"):
        register_release(catalog, open_release(published), str(published), "2060/2041")
    for good in ["2020", "2020-06", "2020-06-01", "2041/2060"]:
        assert validate_period(good) == good


# -- both backends, one battery -----------------------------------------------------------------


def battery(c: Catalog) -> dict[str, Any]:
    with c.session() as s:
        out: dict[str, Any] = {
            "prefix": [asdict(h) for h in queries.search_species(s, "q", limit=50)],
            "vernacular": [asdict(h) for h in queries.search_species(s, "black")],
            "fuzzy": [asdict(h) for h in queries.search_species(s, "quercus rober", mode="fuzzy")],
            "fuzzy2": [asdict(h) for h in queries.search_species(s, "fictanthus", mode="fuzzy")],
            "genus": [asdict(h) for h in queries.search_species(s, genus="Quercus")],
            "status": [asdict(h) for h in queries.search_species(s, status="protected")],
            "all": [asdict(h) for h in queries.search_species(s, limit=1000)],
            "territories": [asdict(t) for t in queries.list_territories(s)],
            "release": asdict(queries.latest_release(s, "2020")),
        }
        for name, pt in [("trieste", TRIESTE), ("ljubljana", LJUBLJANA), ("sea", OPEN_SEA)]:
            out[f"at {name}"] = [t.code for t in queries.territories_at(s, *pt)]
        out["bbox"] = [t.code for t in queries.territories_in_bbox(s, (12.0, 44.0, 15.0, 46.5))]
        for terr in ["IT", "SI", "HR", "demo-pa-1", "demo-pa-2", "demo-region", "HU"]:
            out[f"layers {terr}"] = [
                (x.name, x.version) for x in queries.find_layers(s, territory=terr, limit=1000)
            ]
        out["layers"] = [asdict(x) for x in queries.find_layers(s, limit=1000)]
        out["layers species 3"] = [asdict(x) for x in queries.find_layers(s, species_id=3)]
    for key, rows in out.items():
        for r in rows if isinstance(rows, list) else [rows]:
            if isinstance(r, dict):
                if not key.startswith(("prefix", "vernacular", "fuzzy", "genus", "status", "all")):
                    r.pop("id", None)  # row ids of layers and releases are backend sequences
                r.pop("published_at", None)
                r.pop("storage_uri", None)
                if isinstance(r.get("bbox"), tuple):
                    r["bbox"] = tuple(round(v, 9) for v in r["bbox"])
                for k in ("area_km2", "min", "max", "mean"):
                    if isinstance(r.get(k), float):
                        r[k] = round(r[k], 6)
    return out


@pytest.mark.slow
def test_same_answers_on_both_backends(
    request: pytest.FixtureRequest, tmp_path: Path, published: Path
) -> None:
    answers = {}
    for backend in ["sqlite", "postgis"]:
        c = Catalog(catalog_url(backend, request, tmp_path))
        c.upgrade()
        populate(c, published)
        answers[backend] = battery(c)
        c.dispose()
    a, b = answers["sqlite"], answers["postgis"]
    assert a.keys() == b.keys()
    for key in a:
        assert a[key] == b[key], key
    assert a["at trieste"] == ["demo-region", "IT"] and a["fuzzy"][0]["id"] == 1
    assert len(a["layers IT"]) > 0 and a["layers HU"] == []


# -- outages ------------------------------------------------------------------------------------


def test_database_down_gives_503_and_recovers(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from sdmatlas.serve.app import create_app
    from sdmatlas.serve.errors import code_of
    from sdmatlas.settings import Settings

    pg = LocalPostgres().start()
    try:
        catalog = Catalog(pg.url, timeout=2)
        catalog.upgrade()
        populate(catalog)
        client = TestClient(create_app(Settings(data_dir=tmp_path), catalog))
        assert client.get("/ready").status_code == 200
        assert [h["id"] for h in client.get("/species", params={"q": "holm"}).json()] == [3]

        pg.stop()
        r = client.get("/species", params={"q": "holm"})
        assert r.status_code == 503
        assert "unreachable" in r.json()["detail"] and r.headers["retry-after"]
        assert client.get("/ready").status_code == 503
        assert client.get("/health").status_code == 200  # the process itself is alive
        with pytest.raises(DatabaseUnavailableError) as err:
            catalog.ping()
        assert code_of(err.value).status == 503

        pg.start()  # same port, same data
        pg.wait_ready()
        r = client.get("/species", params={"q": "holm"})  # no restart of the app
        assert r.status_code == 200 and [h["id"] for h in r.json()] == [3]
        assert client.get("/ready").status_code == 200
        catalog.dispose()
    finally:
        pg.remove()


def test_the_app_starts_with_no_database(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from sdmatlas.serve.app import create_app
    from sdmatlas.settings import Settings

    url = "postgresql+psycopg://nobody@127.0.0.1:9/none"  # nothing listens on port 9
    client = TestClient(create_app(Settings(data_dir=tmp_path, database_url=url)))
    r = client.get("/species")
    assert r.status_code == 503 and "127.0.0.1:9" in r.json()["detail"]
    assert client.get("/health").status_code == 200


def test_api_maps_errors(catalog: Catalog, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from sdmatlas.serve.app import create_app
    from sdmatlas.settings import Settings

    populate(catalog)
    client = TestClient(create_app(Settings(data_dir=tmp_path), catalog))
    long = client.get("/species", params={"q": "x" * 201})
    assert long.status_code == 400 and "at most 200 characters" in long.json()["detail"]
    r = client.get("/species", params={"territory": "ZZ", "status": "endemic"})
    assert r.status_code == 404 and "ZZ" in r.json()["detail"]
    assert client.get("/territories/at", params={"lon": 13.77, "lat": 45.65}).status_code == 200
    assert client.get("/releases/latest").status_code == 404


# -- command line -------------------------------------------------------------------------------


@pytest.mark.slow
def test_command_line(
    empty_catalog: Catalog, published: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from sdmatlas.cli import app

    monkeypatch.setenv("SDMATLAS_DATABASE_URL", empty_catalog.url)
    monkeypatch.setenv("SDMATLAS_DATA_DIR", str(tmp_path))
    run = CliRunner().invoke

    def ok(*args: str) -> str:
        result = run(app, list(args))
        assert result.exit_code == 0, result.output
        return " ".join(result.output.split())

    def refused(*args: str) -> str:
        result = run(app, list(args))
        assert result.exit_code == 2, result.output
        return " ".join(result.output.split())

    assert "revision (empty)" in ok("db", "current")
    assert "at revision 0005" in ok("db", "upgrade")
    assert "(up to date)" in ok("db", "current")
    assert "10 added" in ok("import-territories", str(TERRITORIES))
    assert "12 added" in ok("import-species", str(SPECIES_CSV), "--territory", "HR")
    assert "0 added, 0 updated, 12 unchanged" in ok(
        "import-species", str(SPECIES_CSV), "--territory", "HR"
    )
    assert "--territory" in refused("import-species", str(SPECIES_CSV))
    assert "no territory with code 'XX'" in refused(
        "import-species", str(SPECIES_CSV), "--territory", "XX"
    )
    assert "level" in refused("import-territories", str(TERRITORIES), "--level", "planet")
    assert "period" in refused("register", str(published), "--period", "20;20")
    assert "registered" in ok("register", str(published), "--period", "2020")
    out = refused("register", str(published), "--period", "2020")
    assert "already in the catalog" in out and "sdmatlas register" in out
    with empty_catalog.session() as s:
        assert (
            queries.latest_release(s, "2020").key
            == release_group(published).attrs["sdmatlas"]["release_id"]
        )
