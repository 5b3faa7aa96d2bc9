"""Area queries at any size: hierarchical block aggregates, their exactness, their budgets,
and stored territory reports.

The release here is a synthetic 600 x 600 cube (24 species), large enough to hold a whole
512 x 512 block, so that every aggregate edge (512, 64, 8) and the pixel level take part.
The reference is the direct pixel-exact computation: GDAL's rasterisation of the polygon
on the whole grid, the territory, and the species-major cube (level 0).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import shapely
import zarr
from fastapi.testclient import TestClient
from pyproj import Transformer
from shapely.geometry import MultiPolygon, Point, Polygon, box, mapping
from shapely.geometry.base import BaseGeometry

from sdmatlas.catalog.db import Catalog
from sdmatlas.catalog.imports import import_territories
from sdmatlas.catalog.register import register_release
from sdmatlas.chunks import LocalChunkReader, ZarrChunkReader, chunk_reader, local_reader
from sdmatlas.errors import IncompleteReleaseError
from sdmatlas.grid import Grid
from sdmatlas.publish import aggregates, queries
from sdmatlas.publish.categorical import CLASS_LAYERS
from sdmatlas.publish.cover import cover, cover_mask, pixel_mask
from sdmatlas.publish.indicators import INDICATORS, SpeciesInfo
from sdmatlas.publish.release import publish
from sdmatlas.quantize import NODATA
from sdmatlas.serve.app import create_app
from sdmatlas.settings import Settings
from sdmatlas.storage import open_release
from sdmatlas.testing.releases import release_group
from sdmatlas.testing.synthetic import write_synthetic_cube
from sdmatlas.zarr_access import array, sdmatlas_attrs

KEY = "areas-1"


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("areas")
    cube = write_synthetic_cube(root / "cube.zarr", n_species=24, size=600, chunk=128, seed=4)
    ids = np.asarray(cube.species_ids, np.int64)
    info = SpeciesInfo(ids=ids, protected=ids % 3 == 0, invasive=ids % 7 == 0,
                       endemic=ids % 5 == 0)  # fmt: skip
    return Path(publish(root / "cube.zarr", root / "releases", KEY, info))


@pytest.fixture(scope="module")
def ref(release: Path) -> dict[str, Any]:
    """The release read whole: level-0 codes, territory, indicators."""
    g = release_group(release)
    meta = sdmatlas_attrs(g)
    return {
        "group": g,
        "release": open_release(release),
        "grid": Grid.model_validate(meta["grid"]),
        "codes": np.asarray(array(g, "levels/0/probability")[:]),
        "territory": np.asarray(array(g, "territory")[:]) == 1,
        "indicators": {n: np.asarray(array(g, f"levels/0/{n}")[:]) for n in INDICATORS},
        "classes": {n: np.asarray(array(g, f"levels/0/{n}")[:]) for n in CLASS_LAYERS},
    }


def _star(cx: float, cy: float, r: float, n: int, rng: np.random.Generator) -> Polygon:
    ang = np.sort(rng.random(n)) * 2 * np.pi
    rad = r * rng.uniform(0.35, 1.0, n)
    return Polygon(np.column_stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)])).buffer(0)


def _shapes(grid: Grid) -> dict[str, Callable[[np.random.Generator], BaseGeometry]]:
    """Polygon makers in the grid's CRS, each a kind the issue names."""
    res, w, h = grid.res, grid.width * grid.res, grid.height * grid.res

    def at(fx: float, fy: float) -> tuple[float, float]:
        return grid.x0 + fx * w, grid.y0 - fy * h

    def concave(rng: np.random.Generator) -> BaseGeometry:
        return _star(*at(*rng.uniform(0.2, 0.8, 2)), res * rng.uniform(40, 250), 40, rng)

    def with_hole(rng: np.random.Generator) -> BaseGeometry:
        cx, cy = at(*rng.uniform(0.3, 0.7, 2))
        outer = _star(cx, cy, res * rng.uniform(150, 280), 60, rng)
        return outer.difference(Point(cx, cy).buffer(res * rng.uniform(20, 90)))

    def multi(rng: np.random.Generator) -> BaseGeometry:
        a = _star(*at(*rng.uniform(0.1, 0.4, 2)), res * 60, 25, rng)
        b = _star(*at(*rng.uniform(0.6, 0.9, 2)), res * 90, 25, rng)
        return MultiPolygon([a, b]) if not a.intersects(b) else a.union(b)

    def across_the_edge(rng: np.random.Generator) -> BaseGeometry:
        fx, fy = rng.choice([-0.02, 1.02]), rng.uniform(0, 1)
        return _star(*at(fx, fy), res * rng.uniform(60, 200), 30, rng)

    def thin_strip(rng: np.random.Generator) -> BaseGeometry:
        cx, cy = at(*rng.uniform(0.3, 0.7, 2))
        strip = box(cx - res * 250, cy - res * rng.uniform(0.6, 3.0), cx + res * 250, cy)
        return shapely.affinity.rotate(strip, rng.uniform(0, 180), origin=(cx, cy))

    def large(rng: np.random.Generator) -> BaseGeometry:
        # covers the whole top-left 512 x 512 block, with a wobbly outline beyond it
        return _star(*at(0.45, 0.45), res * 600, 200, rng).union(
            box(*at(-0.01, 0.88), *at(0.88, -0.01))
        )

    return {f.__name__: f for f in (concave, with_hole, multi, across_the_edge, thin_strip, large)}


def _reference(ref: dict[str, Any], geom: BaseGeometry) -> dict[str, Any]:
    grid = ref["grid"]
    m, r0, c0 = pixel_mask(grid, geom)
    sel = np.zeros_like(ref["territory"])
    sel[r0 : r0 + m.shape[0], c0 : c0 + m.shape[1]] = m
    sel &= ref["territory"]
    codes = ref["codes"][:, sel].astype(np.int64)
    classes = {  # pixels of each class, counted one by one
        k: [int((v[sel] == c.value).sum()) for c in CLASS_LAYERS[k].scheme.classes]
        for k, v in ref["classes"].items()
    }
    return {"n": int(sel.sum()), "sum": codes.sum(axis=1), "max": codes.max(axis=1, initial=0),
            "indicators": {k: v[sel] for k, v in ref["indicators"].items()},
            "classes": classes}  # fmt: skip


@pytest.mark.parametrize("kind", ["concave", "with_hole", "multi", "across_the_edge",
                                  "thin_strip", "large"])  # fmt: skip
def test_hierarchical_area_equals_the_pixel_exact_computation(
    ref: dict[str, Any], kind: str
) -> None:
    grid = ref["grid"]
    make = _shapes(grid)[kind]
    rng = np.random.default_rng(hash(kind) % 2**32)
    used_edges: set[int] = set()
    for _ in range(4):
        geom = make(rng)
        want = _reference(ref, geom)
        got = queries.area(ref["release"], geom)
        assert got.n_pixels == want["n"], kind
        if not want["n"]:
            continue
        sums = got.mean_probability * got.n_pixels * 254  # back to summed codes
        np.testing.assert_allclose(sums, want["sum"], rtol=1e-12, atol=1e-6)
        np.testing.assert_array_equal(np.round(got.max_probability * 254), want["max"])
        for name, values in want["indicators"].items():
            v = values[np.isfinite(values)].astype(np.float64)
            s = got.indicators[name]
            if not v.size:
                assert s is None
                continue
            assert s is not None and s.pixels == v.size
            assert s.min == pytest.approx(v.min(), abs=0) and s.max == pytest.approx(v.max(), abs=0)
            assert s.mean == pytest.approx(v.mean(), rel=1e-9, abs=1e-9)
        for name, counts in want["classes"].items():
            assert got.classes[name].tolist() == counts, name
        assert 0 <= got.pixels_exact <= got.n_pixels
        used_edges |= {e for e, n in got.blocks_aggregated.items() if n}
    if kind == "large":
        assert used_edges == {8, 64, 512}  # every level of the hierarchy took part
    if kind == "thin_strip":
        assert 512 not in used_edges and 64 not in used_edges


def test_the_cover_equals_gdal_rasterisation(ref: dict[str, Any]) -> None:
    grid = ref["grid"]
    rng = np.random.default_rng(11)
    for make in _shapes(grid).values():
        geom = make(rng)
        m, r0, c0 = pixel_mask(grid, geom)
        want = np.zeros((grid.height, grid.width), bool)
        want[r0 : r0 + m.shape[0], c0 : c0 + m.shape[1]] = m
        assert np.array_equal(cover_mask(cover(grid, geom)), want)


def test_aggregates_of_every_edge_equal_direct_reductions(ref: dict[str, Any]) -> None:
    g, codes, terr = ref["group"], ref["codes"], ref["territory"]
    values = np.stack([ref["indicators"][n] for n in sdmatlas_attrs(g)["indicator_order"]])
    assert sdmatlas_attrs(g)["aggregates"] == [8, 64, 512]
    for edge in aggregates.EDGES:
        bsum, bmax, count = aggregates.reduce_codes(codes, terr, edge)
        assert np.array_equal(np.asarray(array(g, f"blocks/{edge}/sum")[:]), bsum), edge
        assert np.array_equal(np.asarray(array(g, f"blocks/{edge}/max")[:]), bmax), edge
        assert np.array_equal(np.asarray(array(g, f"blocks/{edge}/count")[:]), count), edge
        ind = np.asarray(array(g, f"blocks/{edge}/indicators")[:])
        np.testing.assert_allclose(ind, aggregates.reduce_indicators(values, edge), rtol=1e-9)


def test_the_direct_chunk_reader_equals_zarr_on_the_cross_species_arrays(release: Path) -> None:
    g = release_group(release)
    for path in ["pixels", "territory", "blocks/8/sum", "blocks/64/max", "blocks/512/count",
                 "blocks/8/indicators"]:  # fmt: skip
        fast = local_reader(release / path)
        assert isinstance(fast, LocalChunkReader), path
        assert isinstance(chunk_reader(g, path), LocalChunkReader)
        slow = ZarrChunkReader(array(g, path))
        grid = [range(-(-n // c)) for n, c in zip(slow.shape, slow.inner, strict=True)]
        coords = list(np.stack(np.meshgrid(*grid, indexing="ij"), -1).reshape(-1, len(grid)))
        for c in coords[:: max(1, len(coords) // 60)]:
            t = tuple(int(v) for v in c)
            np.testing.assert_array_equal(fast.chunk(t), slow.chunk(t), err_msg=f"{path} {t}")
    assert fast.order is None and local_reader(release / "pixels").order == (2, 0, 1)  # type: ignore[union-attr]


def test_a_release_of_another_format_version_is_refused(tmp_path: Path) -> None:
    g = zarr.open_group(tmp_path / "old", mode="w")
    g.attrs["sdmatlas"] = {"kind": "release", "format_version": 1}
    with pytest.raises(IncompleteReleaseError, match=r"format version 1.*publish it again"):
        open_release(tmp_path / "old")
    g.attrs["sdmatlas"] = {"kind": "release", "format_version": 99}
    with pytest.raises(IncompleteReleaseError, match=r"format version 99; this sdmatlas reads"):
        open_release(tmp_path / "old")


# -- through the API: budgets and stored territory reports ---------------------------------------


def _lonlat(grid: Grid, geom: BaseGeometry) -> BaseGeometry:
    t = Transformer.from_crs(grid.crs, 4326, always_xy=True)
    return shapely.transform(geom, lambda xy: np.column_stack(t.transform(xy[:, 0], xy[:, 1])))


@pytest.fixture(scope="module")
def api(
    release: Path, ref: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[TestClient, Catalog, Path]]:
    tmp = tmp_path_factory.mktemp("areas-api")
    s = Settings(data_dir=tmp, database_url=f"sqlite:///{tmp / 'catalog.sqlite'}", tile_cache=[])
    catalog = Catalog.from_settings(s)
    catalog.upgrade()
    grid = ref["grid"]
    park = _star(grid.x0 + 300 * grid.res, grid.y0 - 280 * grid.res, 200 * grid.res, 80,
                 np.random.default_rng(2))  # fmt: skip
    terr_file = tmp / "territories.geojson"
    _write_territory(terr_file, _lonlat(grid, park))
    import_territories(catalog, terr_file)
    register_release(catalog, open_release(release), str(release), "2020")
    with TestClient(create_app(s, catalog)) as c:
        yield c, catalog, terr_file
    catalog.dispose()


def _write_territory(path: Path, geom: BaseGeometry) -> None:
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [{
        "type": "Feature", "geometry": mapping(geom),
        "properties": {"code": "PARK", "name": "A park", "level": "protected_area"},
    }]}))  # fmt: skip


def test_a_stored_territory_report_equals_the_live_query_and_goes_stale(
    api: tuple[TestClient, Catalog, Path], ref: dict[str, Any]
) -> None:
    client, catalog, terr_file = api
    first = client.get("/report", params={"territory": "PARK"})
    assert first.status_code == 200 and first.headers["x-report"] == "computed"
    again = client.get("/report", params={"territory": "PARK"})
    assert again.headers["x-report"] == "stored" and again.content == first.content
    doc = first.json()
    assert doc["territory"] == "PARK" and doc["pixels"] > 50_000
    assert doc["pixels_exact"] + doc["pixels_from_aggregates"] == doc["pixels"]
    assert doc["blocks_from_aggregates"]["64"] > 0 and doc["pixels_exact"] < doc["pixels"] / 2
    # the live query of the same polygon (as stored in the catalog) gives the same report
    from sdmatlas.catalog.queries import get_territory

    with catalog.session() as s:
        geom = get_territory(s, "PARK").geom
    live = client.post("/report", json=mapping(geom)).json()
    assert {k: v for k, v in doc.items() if k != "territory"} == live
    # filtered answers come from the stored report too
    some = client.get("/report", params={"territory": "PARK", "min_mean_probability": 0.2})
    assert some.headers["x-report"] == "stored"
    assert [s["id"] for s in some.json()["species"]] == [
        s["id"] for s in doc["species"] if s["mean_probability"] >= 0.2
    ]
    # a changed territory makes the stored report stale: computed again, and different
    grid = ref["grid"]
    smaller = Point(grid.x0 + 300 * grid.res, grid.y0 - 280 * grid.res).buffer(80 * grid.res)
    _write_territory(terr_file, _lonlat(grid, smaller))
    import_territories(catalog, terr_file)
    changed = client.get("/report", params={"territory": "PARK"})
    assert changed.headers["x-report"] == "computed" and changed.json()["pixels"] < doc["pixels"]


def test_a_new_release_version_gets_its_own_report(
    api: tuple[TestClient, Catalog, Path], release: Path, tmp_path: Path
) -> None:
    """Stored reports belong to one release and one publication of it. A new version
    (here a copy of the release, published again as areas-2) is computed afresh, and a
    publication at another time or place would not match the stored stamp."""
    import shutil

    from sdmatlas.serve import reports

    client, catalog, _ = api
    client.get("/report", params={"territory": "PARK"})
    assert client.get("/report", params={"territory": "PARK"}).headers["x-report"] == "stored"
    copy = tmp_path / "areas-2"
    shutil.copytree(release, copy)
    g = zarr.open_group(copy, mode="r+")
    g.attrs["sdmatlas"] = {**sdmatlas_attrs(g), "release_id": "areas-2",
                           "published": "2027-01-01T00:00:00Z"}  # fmt: skip
    register_release(catalog, open_release(copy), str(copy), "2021")
    r = client.get("/report", params={"territory": "PARK", "release": "areas-2"})
    assert r.status_code == 200 and r.headers["x-report"] == "computed"
    assert (
        client.get("/report", params={"territory": "PARK", "release": KEY}).headers["x-report"]
        == "stored"
    )
    svc = client.app.state.services  # type: ignore[attr-defined]
    old, new = svc.reader.release(KEY, str(release)), svc.reader.release("areas-2", str(copy))
    park = Point(0, 0).buffer(1)
    assert reports.stamp(old, park) != reports.stamp(new, park)


def test_an_over_budget_area_is_refused_before_any_chunk_is_read(
    api: tuple[TestClient, Catalog, Path], ref: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    client = api[0]
    grid = ref["grid"]
    # a long, detailed outline: many 8 x 8 blocks cut
    theta = np.linspace(0, 2 * np.pi, 3000, endpoint=False)
    r = 250 * grid.res * (1 + 0.1 * np.sin(37 * theta) + 0.04 * np.sin(131 * theta))
    geom = Polygon(np.column_stack([grid.x0 + 300 * grid.res + r * np.cos(theta),
                                    grid.y0 - 300 * grid.res + r * np.sin(theta)]))  # fmt: skip
    reads: list[object] = []

    def spy(self: object, coords: tuple[int, ...]) -> np.ndarray:
        reads.append(coords)
        raise AssertionError("a chunk was read")

    monkeypatch.setattr(LocalChunkReader, "chunk", spy)
    monkeypatch.setattr(ZarrChunkReader, "chunk", spy)
    svc = client.app.state.services  # type: ignore[attr-defined]
    for setting, value, name in [
        ("max_report_values", 100_000, "SDMATLAS_MAX_REPORT_VALUES"),
        ("max_report_boundary_pixels", 100_000, "SDMATLAS_MAX_REPORT_BOUNDARY_PIXELS"),
    ]:
        monkeypatch.setattr(svc, "settings", svc.settings.model_copy(update={setting: value}))
        r = client.post("/report", json=mapping(_lonlat(grid, geom)))
        assert r.status_code == 413, r.text
        detail = r.json()["detail"]
        assert name in detail and "over the budget" in detail and " by " in detail
        assert "simplify the outline" in detail and "territory" in detail
    assert reads == []


def test_a_large_area_within_budget_runs_whatever_its_size(
    api: tuple[TestClient, Catalog, Path], ref: dict[str, Any]
) -> None:
    client = api[0]
    grid = ref["grid"]
    everything = shapely.segmentize(box(grid.x0 - 30 * grid.res, grid.y0 - 630 * grid.res,
                                        grid.x0 + 630 * grid.res, grid.y0 + 30 * grid.res),
                                    10 * grid.res)  # fmt: skip
    doc = client.post("/report", json=mapping(_lonlat(grid, everything))).json()
    assert doc["pixels"] == int(ref["territory"].sum())
    assert doc["pixels_exact"] == 0  # the territory's outline lies inside: no pixel read
    assert doc["area_km2"] == pytest.approx(doc["pixels"] * (grid.res / 1000) ** 2)
    assert NODATA == 255


def test_the_reports_command_stores_them_ahead(
    api: tuple[TestClient, Catalog, Path], release: Path
) -> None:
    from typer.testing import CliRunner

    from sdmatlas.cli import app

    client, catalog, _ = api
    settings = client.app.state.settings  # type: ignore[attr-defined]
    env = {"SDMATLAS_DATABASE_URL": settings.database_url,
           "SDMATLAS_DATA_DIR": str(settings.data_dir)}  # fmt: skip
    with catalog.session() as s:  # start from nothing stored
        from sqlalchemy import delete

        from sdmatlas.catalog.schema import TerritoryReport

        s.execute(delete(TerritoryReport))
    first = CliRunner().invoke(app, ["reports", KEY], env=env)
    assert first.exit_code == 0, first.output
    assert "PARK: computed and stored" in first.output
    again = CliRunner().invoke(app, ["reports", KEY, "--territory", "PARK"], env=env)
    assert "PARK: already stored" in again.output
    r = client.get("/report", params={"territory": "PARK", "release": KEY})
    assert r.headers["x-report"] == "stored"
    unknown = CliRunner().invoke(app, ["reports", "no-such-release"], env=env)
    assert unknown.exit_code == 2 and "no-such-release" in unknown.output
