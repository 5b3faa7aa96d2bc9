"""Publishing: pyramids, the cross-species layout, indicators, atomic publication."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from shapely.geometry import Point, Polygon

from conftest import World
from reference.compare import assert_same_release
from sdmatlas.errors import (
    BudgetExceededError,
    CorruptDataError,
    IncompleteReleaseError,
    InvalidInputError,
    NotFoundError,
    ReleaseExistsError,
)
from sdmatlas.grid import Grid
from sdmatlas.predict.cube import open_cube
from sdmatlas.publish import queries
from sdmatlas.publish.cover import cover
from sdmatlas.publish.indicators import INDICATORS, SpeciesInfo, get_indicator
from sdmatlas.publish.levels import downsample_codes, downsample_weights
from sdmatlas.publish.release import PublishOptions, publish
from sdmatlas.publish.workspace import leftovers, remove_leftover
from sdmatlas.quantize import NODATA, dequantize
from sdmatlas.storage import open_release
from sdmatlas.testing.releases import release_group
from sdmatlas.zarr_access import sdmatlas_attrs


def species_info(ids: list[int]) -> SpeciesInfo:
    rng = np.random.default_rng(7)
    n = len(ids)
    return SpeciesInfo(
        ids=np.asarray(ids, dtype=np.int64),
        protected=rng.random(n) < 0.1,
        invasive=rng.random(n) < 0.05,
        endemic=rng.random(n) < 0.08,
    )


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory, cube: Path) -> Path:
    root = tmp_path_factory.mktemp("releases")
    info = species_info(open_cube(cube).species_ids)
    # small levels so that the 70 x 90 fixture gets several
    return Path(
        publish(cube, root, "coast-1", info, PublishOptions(threshold=0.4, min_level_size=20))
    )


# -- pyramids ---------------------------------------------------------------------------------


def reference_level(codes: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The weighted 2 x 2 cascade, pixel by pixel."""
    s, h, w = codes.shape
    out = np.full((s, -(-h // 2), -(-w // 2)), NODATA, np.uint8)
    for i in range(out.shape[1]):
        for j in range(out.shape[2]):
            cells = [
                (y, x)
                for y in (2 * i, 2 * i + 1)
                for x in (2 * j, 2 * j + 1)
                if y < h and x < w and weights[y, x] > 0
            ]
            if not cells:
                continue
            wsum = sum(weights[c] for c in cells)
            for k in range(s):
                out[k, i, j] = np.rint(sum(int(codes[k][c]) * weights[c] for c in cells) / wsum)
    return out


def test_downsampling_matches_the_reference(rng: np.random.Generator) -> None:
    codes = rng.integers(0, 255, size=(3, 9, 7)).astype(np.uint8)
    valid = rng.random((9, 7)) < 0.7
    codes[:, ~valid] = NODATA
    weights = valid.astype(np.int64)
    level1 = downsample_codes(codes, weights)
    assert np.array_equal(level1, reference_level(codes, weights))
    w1 = downsample_weights(weights)
    level2 = downsample_codes(level1, w1)
    assert np.array_equal(level2, reference_level(level1, w1))
    # level 2 is within one code of the exact mean over the level-0 pixels below it
    for i in range(level2.shape[1]):
        for j in range(level2.shape[2]):
            block = codes[:, 4 * i : 4 * i + 4, 4 * j : 4 * j + 4]
            ok = block[0] != NODATA
            if ok.any():
                exact = block[:, ok].astype(float).mean(axis=1)
                assert np.abs(level2[:, i, j] - exact).max() <= 1.0
            else:
                assert (level2[:, i, j] == NODATA).all()


def test_release_levels_equal_the_cascade_of_the_cube(release: Path, cube: Path) -> None:
    rel = release_group(release)
    codes = open_cube(cube).read()
    weights = (codes[0] != NODATA).astype(np.int64)
    n = rel.attrs["sdmatlas"]["levels"]
    assert n == 4  # 70 x 90 -> 35 x 45 -> 18 x 23 -> 9 x 12
    assert np.array_equal(np.asarray(rel["levels/0/probability"][:]), codes)
    level = codes
    for k in range(1, n):
        level = downsample_codes(level, weights)
        weights = downsample_weights(weights)
        assert np.array_equal(np.asarray(rel[f"levels/{k}/probability"][:]), level), k


def test_levels_open_in_rioxarray_with_their_georeferencing(release: Path, coast: World) -> None:
    xr = pytest.importorskip("xarray")
    pytest.importorskip("rioxarray")
    g = coast.grid
    for k in (0, 2):
        ds = xr.open_zarr(
            release,
            group=f"levels/{k}",
            consolidated=False,
            decode_coords="all",
            mask_and_scale=False,
        )
        da = ds["probability"]
        assert da.rio.crs.to_epsg() == 3035
        t = da.rio.transform()
        assert (t.a, -t.e) == (g.res * 2**k, g.res * 2**k)
        assert (t.c, t.f) == (g.x0, g.y0)
        assert ds["richness"].rio.crs.to_epsg() == 3035


def test_multiscales_metadata(release: Path, coast: World) -> None:
    ms = release_group(release).attrs["multiscales"][0]
    assert [d["path"] for d in ms["datasets"]] == [f"levels/{k}" for k in range(4)]
    assert [d["resolution"] for d in ms["datasets"]] == [500.0, 1000.0, 2000.0, 4000.0]


# -- cross-species queries ----------------------------------------------------------------------


def test_point_equals_the_species_major_cube(release: Path, cube: Path, coast: World) -> None:
    rel = open_release(release)
    codes = open_cube(cube).read()
    g = coast.grid
    for r, c in [(0, 0), (5, 80), (69, 89), (33, 47), (40, 10)]:
        x, y = g.xy(r, c)
        res = queries.point(rel, float(x), float(y))
        assert (res.row, res.col) == (r, c)
        assert np.array_equal(res.codes, codes[:, r, c])
        assert res.inside == bool(coast.territory.mask[r, c])
    out = queries.point(rel, g.x0 - 10, g.y0 + 10)
    assert not out.inside and (out.codes == NODATA).all()


def direct_area(codes: np.ndarray, mask: np.ndarray, res: float) -> dict[str, np.ndarray]:
    sel = mask & (codes[0] != NODATA)
    p = codes[:, sel].astype(np.float64) / 254.0
    return {
        "n": np.array(sel.sum()),
        "mean": p.mean(axis=1),
        "area": p.sum(axis=1) * (res / 1000) ** 2,
        "max": p.max(axis=1),
    }


@pytest.mark.parametrize(
    "shape",
    [
        Point(4_602_000, 2_503_000).buffer(9_000),
        Polygon(
            [
                (4_581_000, 2_519_000),
                (4_624_000, 2_500_500),
                (4_590_000, 2_486_000),
                (4_600_000, 2_500_000),
            ]
        ),  # concave
        Point(4_580_000, 2_520_000).buffer(40_000),  # reaches past the grid's corner
    ],
)
def test_area_equals_the_species_major_cube(
    release: Path, cube: Path, coast: World, shape: Polygon
) -> None:
    from sdmatlas.territory import mask_from_geometry

    rel = open_release(release)
    codes = open_cube(cube).read()
    ref = direct_area(codes, mask_from_geometry(coast.grid, shape), coast.grid.res)
    got = queries.area(rel, shape)
    assert got.n_pixels == int(ref["n"])
    np.testing.assert_allclose(got.mean_probability, ref["mean"], rtol=1e-12)
    np.testing.assert_allclose(got.expected_area_km2, ref["area"], rtol=1e-12)
    np.testing.assert_allclose(got.max_probability, ref["max"], rtol=1e-12)
    assert got.count_above(0.5) == int((ref["max"] >= 0.5).sum())


def test_area_uses_block_aggregates_inside(release: Path) -> None:
    got = queries.area(open_release(release), Point(4_602_000, 2_503_000).buffer(12_000))
    assert sum(got.blocks_aggregated.values()) > 0 and got.blocks_read > 0
    assert 0 < got.pixels_exact < got.n_pixels


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        (Polygon([(0, 0), (1, 1), (1, 0), (0, 1)]), "valid, non-empty"),
        (Point(0, 0).buffer(1000), "does not overlap"),
        (Polygon(), "valid, non-empty"),
    ],
)
def test_bad_areas(release: Path, shape: Polygon, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        queries.area(open_release(release), shape)


def test_area_outline_budget(release: Path) -> None:
    geom = Point(4_602_000, 2_503_000).buffer(5_000)
    grid = Grid.model_validate(sdmatlas_attrs(release_group(release))["grid"])
    with pytest.raises(BudgetExceededError, match="SDMATLAS_MAX_REPORT_BOUNDARY_PIXELS"):
        cover(grid, geom, max_boundary_pixels=10)


# -- indicators ---------------------------------------------------------------------------------


def reference_indicators(
    p: np.ndarray, info: SpeciesInfo, t: float, range_km2: np.ndarray
) -> dict[str, float]:
    """Plain per-pixel formulas for one pixel's probability vector ``p``."""
    q = p / p.sum() if p.sum() > 0 else p
    return {
        "richness": float(p.sum()),
        "richness_thresholded": float((p >= t).sum()),
        "rarity_weighted_richness": float(
            sum(pi / ri for pi, ri in zip(p, range_km2, strict=True) if ri > 0)
        ),
        "shannon": float(-sum(qi * np.log(qi) for qi in q if qi > 0)),
        "protected_count": float(((p >= t) & info.protected).sum()),
        "invasive_count": float(((p >= t) & info.invasive).sum()),
        "endemic_count": float(((p >= t) & info.endemic).sum()),
    }


def test_indicators_equal_the_numpy_reference(release: Path, cube: Path, coast: World) -> None:
    rel = release_group(release)
    meta = rel.attrs["sdmatlas"]
    codes = open_cube(cube).read()
    p_all = dequantize(codes).astype(np.float64)
    info = species_info(open_cube(cube).species_ids)
    m = coast.territory.mask
    range_km2 = np.nansum(p_all, axis=(1, 2)) * (coast.grid.res / 1000) ** 2
    np.testing.assert_allclose(meta["species"]["range_km2"], range_km2, rtol=1e-5, atol=1e-3)
    layers = {name: np.asarray(rel[f"levels/0/{name}"][:]) for name in INDICATORS}
    for name, arr in layers.items():
        assert np.isnan(arr[~m]).all(), name
    for r, c in [tuple(x) for x in np.argwhere(m)[:: max(1, int(m.sum()) // 25)]]:
        ref = reference_indicators(p_all[:, r, c], info, 0.4, range_km2)
        for name, value in ref.items():
            assert layers[name][r, c] == pytest.approx(value, rel=2e-4, abs=1e-6), (name, r, c)


def test_group_indicators_are_the_same_callables_on_a_subset(cube: Path, coast: World) -> None:
    codes = open_cube(cube).read()
    info = species_info(open_cube(cube).species_ids)
    genus = np.arange(0, 200, 25)  # species 1, 26, 51, ... share a genus in the demo
    p = dequantize(codes)
    valid = coast.territory.mask
    rich = get_indicator("richness")(codes[genus], info.select(genus), valid)
    np.testing.assert_allclose(rich[valid], p[genus][:, valid].sum(axis=0), rtol=1e-6)
    assert np.isnan(rich[~valid]).all()
    none = np.array([], dtype=np.intp)
    empty = get_indicator("richness")(codes[none], info.select(none), valid)
    assert (empty[valid] == 0).all()


# -- publication ----------------------------------------------------------------------------------


def test_publishing_an_incomplete_cube_is_refused(tmp_path: Path, cube: Path) -> None:
    import shutil

    broken = tmp_path / "cube.zarr"
    shutil.copytree(cube, broken)
    c = open_cube(broken)
    c._update_meta(status="running")
    with pytest.raises(IncompleteReleaseError, match="finish its prediction"):
        publish(broken, tmp_path / "rel", "x", species_info(c.species_ids))
    assert not (tmp_path / "rel" / "x").exists()


def test_publishing_a_corrupted_cube_names_the_chunk_and_publishes_nothing(
    tmp_path: Path, cube: Path
) -> None:
    import shutil

    broken = tmp_path / "cube.zarr"
    shutil.copytree(cube, broken)
    shards = sorted(p for p in (broken / "probability" / "c").rglob("*") if p.is_file())
    victim = shards[len(shards) // 2]
    victim.write_bytes(b"\x00garbage" * 100)  # same name, undecodable bytes
    root = tmp_path / "rel"
    with pytest.raises(CorruptDataError, match=r"cube chunk rows \d+:\d+, cols \d+:\d+"):
        publish(broken, root, "x", species_info(open_cube(broken).species_ids))
    assert [p.name for p in root.iterdir() if not p.name.startswith(".")] == []
    # the finished tasks stay in a hidden workspace (for --resume), which clean removes
    (left,) = leftovers(root)
    assert left.release_id == "x" and not left.in_use and left.bytes > 0
    assert remove_leftover(root, left)
    assert list(root.iterdir()) == []


def test_existing_or_malformed_release_ids(release: Path, cube: Path) -> None:
    info = species_info(open_cube(cube).species_ids)
    with pytest.raises(ReleaseExistsError, match="already exists"):
        publish(cube, release.parent, "coast-1", info)
    for bad in ["", "../etc", "UPPER", "a/b", "x" * 101]:
        with pytest.raises(InvalidInputError, match="release id"):
            publish(cube, release.parent, bad, info)


def test_species_info_must_match_the_cube(tmp_path: Path, cube: Path) -> None:
    ids = list(reversed(open_cube(cube).species_ids))
    with pytest.raises(InvalidInputError, match="cube's order"):
        publish(cube, tmp_path, "r", species_info(ids))


def test_an_interrupted_publish_shows_nothing_and_resumes(
    tmp_path: Path, cube: Path, release: Path
) -> None:
    info = species_info(open_cube(cube).species_ids)
    root = tmp_path / "rel"
    options = PublishOptions(threshold=0.4, min_level_size=20)

    def crash(stage: str, done: int, total: int) -> None:
        if stage == "indicator statistics":  # after level 0 and rarity, before the pyramid
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        publish(cube, root, "coast-1", info, options, progress=crash)
    assert [p.name for p in root.iterdir() if not p.name.startswith(".")] == []
    with pytest.raises(ReleaseExistsError, match=r"unfinished publish .* --resume"):
        publish(cube, root, "coast-1", info, options)
    with pytest.raises(InvalidInputError, match=r"threshold: 0\.4 there, 0\.5 now"):
        publish(cube, root, "coast-1", info, replace(options, threshold=0.5, resume=True))
    publish(cube, root, "coast-1", info, replace(options, resume=True))
    assert leftovers(root) == []
    runs = release_group(root / "coast-1").attrs["sdmatlas"]["publish"]["runs"]
    assert [r.get("error", "").split(":")[0] for r in runs] == ["KeyboardInterrupt", ""]
    second = runs[1]["tasks"]
    for stage in ("base", "rarity", "hist"):
        assert (second[stage]["already_done"], second[stage]["computed"]) == (1, 0), stage
    assert (second["level1"]["already_done"], second["level1"]["computed"]) == (0, 1)
    # and the result is the uninterrupted release's
    assert_same_release(root / "coast-1", release)


# -- COG export ---------------------------------------------------------------------------------


def test_species_cog_validates_and_equals_the_cube(
    tmp_path: Path, release: Path, cube: Path, coast: World
) -> None:
    import rasterio
    from rio_cogeo.cogeo import cog_validate

    from sdmatlas.publish.export import export_cog

    c = open_cube(cube)
    sid = c.species_ids[7]
    out = export_cog(open_release(release), f"species/{sid}", tmp_path / "sp.tif", blocksize=32)
    assert cog_validate(str(out), quiet=True)[0]
    with rasterio.open(out) as src:
        assert src.crs.to_epsg() == 3035
        assert src.transform == coast.grid.transform
        assert src.nodata == NODATA and src.scales == (1 / 254,)
        assert src.overviews(1) == [2, 4]  # 90 x 70 down to one 32-pixel block
        assert np.array_equal(src.read(1), c.read()[7])
        assert src.tags()["sdmatlas_layer"] == f"species/{sid}"


def test_clipped_indicator_cog(tmp_path: Path, release: Path, coast: World) -> None:
    import rasterio
    from rio_cogeo.cogeo import cog_validate

    from sdmatlas.publish.export import export_cog

    g = coast.grid
    bbox = (g.x0 + 10 * 500 + 1, g.y0 - 30 * 500 - 1, g.x0 + 50 * 500 - 1, g.y0 - 5 * 500 + 1)
    out = export_cog(open_release(release), "indicator/shannon", tmp_path / "sh.tif", bbox=bbox)
    assert cog_validate(str(out), quiet=True)[0]
    ref = np.asarray(release_group(release)["levels/0/shannon"][4:31, 10:50])
    with rasterio.open(out) as src:
        assert (src.height, src.width) == (27, 40)
        assert src.transform.c == g.x0 + 10 * 500 and src.transform.f == g.y0 - 4 * 500
        np.testing.assert_array_equal(src.read(1), ref)


@pytest.mark.parametrize(
    ("layer", "bbox", "error", "message"),
    [
        ("species/../../etc", None, InvalidInputError, "must be 'species/<id>'"),
        ("species/99999", None, NotFoundError, "is not in (this )?release"),
        ("indicator/beauty", None, NotFoundError, "unknown indicator"),
        ("indicator/richness", (0.0, 0.0, 10.0, 10.0), InvalidInputError, "does not overlap"),
        ("indicator/richness", (10.0, 0.0, 0.0, 10.0), InvalidInputError, "right > left"),
    ],
)
def test_bad_exports(
    tmp_path: Path,
    release: Path,
    layer: str,
    bbox: tuple[float, float, float, float] | None,
    error: type[Exception],
    message: str,
) -> None:
    from sdmatlas.publish.export import export_cog

    with pytest.raises(error, match=message):
        export_cog(open_release(release), layer, tmp_path / "x.tif", bbox=bbox)
    assert not (tmp_path / "x.tif").exists()


# -- STAC ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_stac_catalog_validates(tmp_path: Path, release: Path) -> None:
    import pystac

    from sdmatlas.publish.stac import validate_stac, write_stac

    write_stac(release, tmp_path / "stac")
    assert validate_stac(tmp_path / "stac" / "collection.json") == 1 + 200 + len(INDICATORS)
    col = pystac.Collection.from_file(str(tmp_path / "stac" / "collection.json"))
    item = col.get_item("species-1", recursive=True)
    assert item is not None
    assert item.properties["proj:code"] == "EPSG:3035"
    assert item.properties["proj:shape"] == [70, 90]
    assert item.properties["title"].endswith("vs0001")
    data = item.assets["data"]
    assert Path(data.get_absolute_href() or "").exists()
    assert data.extra_fields["raster:bands"][0]["scale"] == pytest.approx(1 / 254)
    lon_min, lat_min, lon_max, lat_max = item.bbox or []
    assert 13 < lon_min < lon_max < 15 and 44 < lat_min < lat_max < 46


def test_stac_extension_check_catches_broken_items(tmp_path: Path, release: Path) -> None:
    import pystac

    from sdmatlas.publish.stac import check_extensions, write_stac

    col = write_stac(release, tmp_path / "stac", cogs=False)
    item = next(iter(col.get_items(recursive=True)))
    check_extensions(item)
    item.properties["proj:shape"] = [70]
    with pytest.raises(InvalidInputError, match="proj:shape"):
        check_extensions(item)
    assert isinstance(item, pystac.Item)


# -- synthetic scale data --------------------------------------------------------------------


def test_synthetic_cube_is_sparse_deterministic_and_publishable(tmp_path: Path) -> None:
    from sdmatlas.publish.species_csv import species_info_from_csv
    from sdmatlas.testing.synthetic import write_synthetic_cube

    a = write_synthetic_cube(tmp_path / "a.zarr", n_species=60, size=64, chunk=32, seed=3)
    b = write_synthetic_cube(tmp_path / "b.zarr", n_species=60, size=64, chunk=32, seed=3)
    assert a.is_complete
    codes = a.read()
    assert np.array_equal(codes, b.read())
    inside = codes[0] != NODATA
    assert 0.3 < inside.mean() < 0.9
    present = (codes[:, inside] > 0).mean()
    assert 0.01 < present < 0.3, "most species are absent from most pixels"
    rel = publish(a.path, tmp_path / "rel", "syn", species_info_from_csv(None, a.species_ids))
    assert release_group(Path(rel)).attrs["sdmatlas"]["status"] == "published"


def test_species_flags_from_csv(tmp_path: Path) -> None:
    from sdmatlas.publish.species_csv import species_info_from_csv

    p = tmp_path / "s.csv"
    p.write_text("species_id,protected,invasive\n2,yes,0\n3,0,TRUE\n99,1,1\n")
    info = species_info_from_csv(p, [1, 2, 3])
    assert info.protected.tolist() == [False, True, False]
    assert info.invasive.tolist() == [False, False, True]
    assert not info.endemic.any()
    p.write_text("species_id,protected\n2,maybe\n")
    with pytest.raises(InvalidInputError, match="line 2: protected='maybe'"):
        species_info_from_csv(p, [1, 2, 3])
    p.write_text("id,protected\n2,1\n")
    with pytest.raises(InvalidInputError, match="needs a species_id column"):
        species_info_from_csv(p, [1, 2])


# -- species groups ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def grouped_release(tmp_path_factory: pytest.TempPathFactory, cube: Path) -> Path:
    from sdmatlas.publish.species_csv import species_info_from_csv

    d = tmp_path_factory.mktemp("grouped")
    ids = open_cube(cube).species_ids
    lines = ["species_id,genus,family,protected"]
    lines += [f"{i},Genus{i % 25},Family{i % 5},{int(i % 10 == 0)}" for i in ids]
    (d / "species.csv").write_text("\n".join(lines) + "\n")
    info = species_info_from_csv(d / "species.csv", ids)
    return Path(publish(cube, d / "rel", "grouped", info, PublishOptions(min_level_size=20)))


@pytest.mark.parametrize(
    ("kind", "value", "expected_ids"),
    [
        ("genus", "genus3", [i for i in range(1, 201) if i % 25 == 3]),
        ("family", "Family0", [i for i in range(1, 201) if i % 5 == 0]),
        ("status", "protected", [i for i in range(1, 201) if i % 10 == 0]),
        ("ids", "5, 17,5", [5, 17]),
    ],
)
def test_species_groups(
    grouped_release: Path, kind: str, value: str, expected_ids: list[int]
) -> None:
    from sdmatlas.publish.groups import select_group

    rel = open_release(grouped_release)
    rows = select_group(rel, kind, value)
    assert (rel.species_ids[rows]).tolist() == expected_ids


def test_group_layer_equals_the_cube(grouped_release: Path, cube: Path, coast: World) -> None:
    from sdmatlas.publish.groups import group_layer, select_group

    rel = open_release(grouped_release)
    rows = select_group(rel, "genus", "Genus7")
    layer = group_layer(rel, "richness", rows)
    p = dequantize(open_cube(cube).read())
    m = coast.territory.mask
    np.testing.assert_allclose(layer[m], p[rows][:, m].sum(axis=0), rtol=1e-5)
    assert np.isnan(layer[~m]).all()
    coarse = group_layer(rel, "richness_thresholded", rows, level=2)
    assert coarse.shape == (18, 23)


@pytest.mark.parametrize(
    ("kind", "value", "error", "message"),
    [
        ("genus", "Nonexistia", NotFoundError, "unknown genus 'Nonexistia'.*known: Genus0"),
        ("family", "", NotFoundError, "unknown family"),
        ("status", "rare", InvalidInputError, "status must be one of"),
        ("ids", "1,x", InvalidInputError, "comma-separated integers"),
        ("ids", "1,9999", NotFoundError, r"species \[9999\] are not in this release"),
        ("ids", "", InvalidInputError, "between 1 and"),
        ("order", "Asterales", InvalidInputError, "group kind must be"),
    ],
)
def test_unknown_or_malformed_groups(
    grouped_release: Path, kind: str, value: str, error: type[Exception], message: str
) -> None:
    from sdmatlas.publish.groups import select_group

    with pytest.raises(error, match=message):
        select_group(open_release(grouped_release), kind, value)
