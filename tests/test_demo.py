"""The demo world, the virtual species, and how well the committed model recovers them."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sdmatlas.demo import region, world
from sdmatlas.demo.build import (
    DemoPaths,
    build_demo,
    load_species,
    read_surveys,
    sample_surveys,
)
from sdmatlas.demo.metrics import per_species_auc, roc_auc
from sdmatlas.demo.train import survey_patches
from sdmatlas.grid import Grid
from sdmatlas.models import load_adapter, load_card
from sdmatlas.predict.covariates import CovariateStack
from sdmatlas.territory import territory_from_mask_raster


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoPaths:
    return build_demo(tmp_path_factory.mktemp("demo"))


def test_a_window_of_the_world_equals_the_same_window_of_a_larger_one() -> None:
    big = Grid(crs="EPSG:3035", res=500.0, x0=4_600_000, y0=2_600_000, width=60, height=50)
    small = Grid(
        crs="EPSG:3035",
        res=500.0,
        x0=4_600_000 + 10 * 500,
        y0=2_600_000 - 7 * 500,
        width=20,
        height=15,
    )
    fb = world.covariate_fields(*np.meshgrid(*big.pixel_centres()))
    fs = world.covariate_fields(*np.meshgrid(*small.pixel_centres()))
    for name in world.COVARIATES:
        assert np.array_equal(np.asarray(fb[name])[7:22, 10:30], fs[name]), name


def test_fields_are_plausible() -> None:
    g = region.demo_grid(res=2000.0)
    f = world.covariate_fields(*np.meshgrid(*g.pixel_centres()))
    z, t = f["elevation"], f["temperature"]
    assert z.min() >= 0 and 1500 < z.max() < 4000
    # temperature falls with elevation (lapse rate) and northwards
    assert np.corrcoef(z.ravel(), t.ravel())[0, 1] < -0.8
    assert set(np.unique(f["landcover"])) <= set(world.LANDCOVER_CLASSES)


def test_real_land_mask_has_the_adriatic() -> None:
    g = region.demo_grid(res=2000.0)
    m = region.land_mask(g)
    assert 0.7 < m.mean() < 0.9
    trieste = g.rowcol_from_lonlat(13.77, 45.65)  # the city: land
    gulf = g.rowcol_from_lonlat(13.2, 44.9)  # open sea west of Istria
    assert m[trieste] and not m[gulf]


def test_virtual_species_are_named_plainly_artificial(demo: DemoPaths) -> None:
    species = load_species(demo)
    assert len(species) == 200
    assert all(re.fullmatch(r"[A-Z][a-z]+ vs\d{4}", s.scientific_name) for s in species)
    assert len({s.genus for s in species}) >= 20 and len({s.family for s in species}) == 5
    assert all(s.scientific_name.startswith(s.genus) for s in species)
    flags = [sum(getattr(s, f) for s in species) for f in ("protected", "invasive", "endemic")]
    assert all(n >= 5 for n in flags), flags


@pytest.mark.slow
def test_demo_build_is_reproducible(demo: DemoPaths, tmp_path: Path) -> None:
    again = build_demo(tmp_path / "again")
    assert again.species.read_bytes() == demo.species.read_bytes()
    assert again.surveys.read_bytes() == demo.surveys.read_bytes()


def test_auc_matches_a_pairwise_count(rng: np.random.Generator) -> None:
    y = rng.random(300) < 0.3
    s = np.round(rng.random(300), 1)  # many ties
    pos, neg = s[y], s[~y]
    pairs = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    assert roc_auc(y, s) == pytest.approx(pairs / (len(pos) * len(neg)))
    assert roc_auc(y, y.astype(float)) == 1.0
    assert np.isnan(roc_auc(np.ones(5), np.arange(5)))


@given(st.lists(st.booleans(), min_size=2, max_size=50))
def test_auc_of_reversed_scores_is_one_minus_auc(labels: list[bool]) -> None:
    y = np.array(labels)
    if y.all() or not y.any():
        return
    s = np.arange(len(y), dtype=float)
    assert roc_auc(y, s) + roc_auc(y, -s) == pytest.approx(1.0)


def test_card_auc_is_reproduced_from_the_demo_surveys(demo: DemoPaths, demo_card: Path) -> None:
    """The AUC the card (and README) reports is recomputed here, not copied."""
    card = load_card(demo_card)
    grid = territory_from_mask_raster(demo.territory).grid
    rows, cols, presence, is_test, ids = read_surveys(demo.surveys, grid)
    assert ids == card.species_ids
    stack = CovariateStack(demo.covariate_paths())
    x = survey_patches(card, stack, demo, rows[is_test], cols[is_test])
    auc = per_species_auc(presence[is_test], load_adapter(card).predict(x))
    assert np.nanmean(auc) == pytest.approx(card.metrics["auc_mean"], abs=2e-3)


def test_model_recovers_virtual_species_on_fresh_surveys(demo: DemoPaths, demo_card: Path) -> None:
    card = load_card(demo_card)
    territory = territory_from_mask_raster(demo.territory)
    species = load_species(demo)
    rows, cols, presence, _ = sample_surveys(species, territory, n_sites=3000, seed=2026)
    x = survey_patches(card, CovariateStack(demo.covariate_paths()), demo, rows, cols)
    auc = per_species_auc(presence, load_adapter(card).predict(x))
    chance = 0.5
    assert np.nanmean(auc) > chance + 0.25
    assert np.nanmean(auc) > 0.95 * card.metrics["oracle_auc_mean"]
