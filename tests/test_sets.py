"""Species sets and their conformal calibration; IUCN categories (issue 18, in part)."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import served_catalog
from sdmatlas.calibration import calibrate, read_surveys
from sdmatlas.errors import InvalidInputError
from sdmatlas.quantize import NODATA, SCALE
from sdmatlas.sets import SetRule, conformal_threshold, species_sets
from sdmatlas.storage import open_release

BIN = Path(sys.executable).parent


# -- the conformal threshold ---------------------------------------------------------------------


def test_conformal_threshold_is_the_textbook_quantile() -> None:
    """n = 9 presences with p = 0.1 ... 0.9. Scores 1 - p sorted: 0.1 ... 0.9. For
    alpha = 0.2 the rank is ceil(10 x 0.8) = 8, q = 0.8, lambda = 0.2: the set p >= 0.2
    keeps 8 of the 9 (0.89 >= 0.8). For alpha = 0.5, rank ceil(5) = 5, q = 0.5,
    lambda = 0.5. For alpha = 0.05 the rank 10 exceeds n: lambda 0, every species."""
    p = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1])
    assert conformal_threshold(p, 0.2) == pytest.approx(0.2)
    assert conformal_threshold(p, 0.5) == pytest.approx(0.5)
    assert conformal_threshold(p, 0.05) == 0.0
    # with ties: four presences all at 0.6 -> lambda 0.6 whatever alpha (rank <= n)
    assert conformal_threshold(np.full(4, 0.6), 0.3) == pytest.approx(0.6)


@pytest.mark.parametrize("alpha", [0.0, 1.0, -0.1, 1.5, float("nan")])
def test_alpha_outside_the_open_interval_is_refused(alpha: float) -> None:
    with pytest.raises(InvalidInputError, match="strictly between 0 and 1"):
        conformal_threshold(np.array([0.5]), alpha)


def test_no_presence_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="no presence"):
        conformal_threshold(np.array([]), 0.1)


# -- sets against a plain reference --------------------------------------------------------------


def _reference(codes: np.ndarray, rule: SetRule, not_native: np.ndarray) -> np.ndarray:
    """One pixel at a time, in plain Python: the set as the rule's words say."""
    out = np.zeros(codes.shape, bool)
    for n in range(codes.shape[0]):
        cand = []
        for k in range(codes.shape[1]):
            c = int(codes[n, k])
            if c == NODATA:
                continue
            p = c * SCALE
            own = (rule.species_thresholds or {}).get(k, rule.threshold)  # ids = columns here
            if p < own - 1e-12:
                continue
            if rule.floor is not None and p < rule.floor - 1e-12:
                continue
            if rule.native_only and not_native[k]:
                continue
            cand.append((-p, k))
        cand.sort()
        if rule.top_k is not None:
            cand = cand[: rule.top_k]
        for _, k in cand:
            out[n, k] = True
    return out


@pytest.mark.parametrize(
    "rule",
    [
        SetRule(threshold=0.3),
        SetRule(threshold=0.3, top_k=3),
        SetRule(threshold=0.1, top_k=2, floor=0.4, native_only=True),
        SetRule(threshold=0.0),
        SetRule(threshold=1.0),
        SetRule(threshold=0.3, species_thresholds={0: 0.0, 2: 0.8, 5: 76 * SCALE}),
        SetRule(threshold=0.2, top_k=2, species_thresholds={1: 0.9, 3: 0.05}),
    ],
)
def test_sets_equal_the_reference_with_ties_and_empty_sets(rule: SetRule) -> None:
    rng = np.random.default_rng(5)
    codes = rng.choice(np.array([0, 10, 76, 77, 127, 200, 254, NODATA], np.uint8), (300, 9))
    codes[0] = NODATA  # no prediction at all: an empty set
    codes[1] = 76  # every species tied
    not_native = np.array([False, True] * 4 + [False])
    sets = species_sets(codes, rule, not_native, species_ids=np.arange(codes.shape[1]))
    ref = _reference(codes, rule, not_native)
    np.testing.assert_array_equal(sets.member, ref)
    assert not sets.member[0].any() and sets.size[0] == 0
    # renormalised weights: sum 1 over a set with some probability, 0 elsewhere (a set of
    # p = 0 species only, possible with a threshold of 0, has no weight to renormalise)
    sums = sets.weight.sum(axis=1)
    mass = (sets.member & (codes > 0) & (codes != NODATA)).any(axis=1)
    np.testing.assert_allclose(sums[mass], 1.0)
    assert (sums[~mass] == 0).all() and (sets.weight[~sets.member] == 0).all()


def test_the_threshold_code_includes_ties_at_lambda() -> None:
    lam = 76 * SCALE  # exactly a code's probability
    rule = SetRule(threshold=lam)
    assert rule.threshold_code == 76
    codes = np.array([[75, 76, 77]], np.uint8)
    assert species_sets(codes, rule).member.tolist() == [[False, True, True]]


# -- calibration on a release --------------------------------------------------------------------


@pytest.fixture(scope="module")
def release(cube: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sets")
    served_catalog(cube, root, [("sets-1", "2020")])
    return root / "releases" / "sets-1"


def _draw_surveys(path: Path, release: Path, n: int, seed: int, extra: str = "",
                  under: np.ndarray | None = None) -> None:  # fmt: skip
    """Presence drawn from the release's own probabilities at random territory pixels:
    the model is the truth here, so a calibrated set must cover 1 - alpha of them.
    ``under``: species the model under-predicts (found with probability sqrt(p))."""
    from sdmatlas.calibration import codes_at

    rel = open_release(str(release))
    g = rel.grid
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, g.height, n * 4)
    cols = rng.integers(0, g.width, n * 4)
    codes = codes_at(rel, rows, cols)
    inside = np.flatnonzero(codes[:, 0] != NODATA)[:n]
    rows, cols, codes = rows[inside], cols[inside], codes[inside]
    p = codes * SCALE
    if under is not None:
        p = np.where(under[None, :], np.sqrt(p), p)
    presence = rng.random(codes.shape) < p
    x, y = g.xy(rows, cols)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["site_id", "x", "y", "split", *(f"sp{i}" for i in rel.species_ids)]
                   + ([extra] if extra else []))  # fmt: skip
        for i in range(len(rows)):
            w.writerow([i + 1, x[i], y[i], "cal", *presence[i].astype(int).tolist()]
                       + (["1"] if extra else []))  # fmt: skip


@pytest.mark.parametrize("alpha", [0.1, 0.05])
def test_calibrated_sets_cover_fresh_surveys(release: Path, tmp_path: Path, alpha: float) -> None:
    cal, fresh = tmp_path / "cal.csv", tmp_path / "fresh.csv"
    _draw_surveys(cal, release, 1500, seed=1)
    _draw_surveys(fresh, release, 1500, seed=2)
    rel = open_release(str(release))
    report = calibrate(rel, cal, alpha, test=fresh, holdout=0.25)
    assert report["target_coverage"] == pytest.approx(1 - alpha)
    assert report["rule"]["alpha"] == alpha
    assert abs(report["test"]["coverage"] - (1 - alpha)) < 0.02, report["test"]
    assert abs(report["held_out"]["coverage"] - (1 - alpha)) < 0.03, report["held_out"]
    assert 0 < report["test"]["mean_set_size"] <= len(rel.species_ids)
    # lambda really is the conformal quantile of the calibration sites' presences
    assert report["threshold_code"] == SetRule(threshold=report["rule"]["threshold"]).threshold_code


def test_mondrian_calibration_covers_each_iucn_group(
    release: Path, cube: Path, tmp_path: Path
) -> None:
    """A group the model under-predicts (its species found with probability sqrt(p)) is
    covered less than 1 - alpha by the marginal lambda; one lambda per IUCN group covers
    each group at 1 - alpha on fresh surveys, and the published rule applies them."""
    from sdmatlas.calibration import codes_at, iucn_groups
    from sdmatlas.publish.indicators import SpeciesInfo
    from sdmatlas.publish.release import PublishOptions, publish
    from sdmatlas.release import layout

    rel = open_release(str(release))
    ids = np.asarray(rel.species_ids, np.int64)
    cats = np.array([["LC", "NT", "VU", "EN", "CR", ""][i % 6] for i in range(len(ids))], object)
    info = SpeciesInfo(ids=ids, protected=np.zeros(len(ids), bool),
                       invasive=np.zeros(len(ids), bool), endemic=np.zeros(len(ids), bool),
                       iucn=cats)  # fmt: skip
    under = cats == "EN"
    cal, fresh = tmp_path / "cal.csv", tmp_path / "fresh.csv"
    _draw_surveys(cal, release, 1500, seed=11, under=under)
    _draw_surveys(fresh, release, 3000, seed=12, under=under)
    alpha = 0.1
    marginal = calibrate(rel, cal, alpha, test=fresh, holdout=0.0, info=info)
    mondrian = calibrate(rel, cal, alpha, test=fresh, holdout=0.0, info=info, mondrian="iucn")
    assert marginal["test"]["by_status"]["iucn:EN"]["coverage"] < 1 - alpha - 0.03
    rule = SetRule.model_validate(mondrian["rule"])
    assert rule.group_by == "iucn" and set(rule.groups or {}) == {*iucn_groups(info, len(ids))}
    assert rule.groups is not None and rule.groups["EN"] < rule.groups["LC"]
    assert rule.species_thresholds == {int(i): rule.groups[c or "unassessed"]
                                       for i, c in zip(ids, cats, strict=True)}  # fmt: skip
    for cat in ("LC", "NT", "VU", "EN", "CR"):
        got = mondrian["test"]["by_status"][f"iucn:{cat}"]["coverage"]
        assert abs(got - (1 - alpha)) < 0.03, (cat, got)
    # the rule in a publish: the set size equals the sets of the per-species thresholds
    out = tmp_path / "rel"
    publish(cube, out, "m", info, PublishOptions(species_set=rule, min_level_size=16))
    pub = open_release(str(out / "m"))
    assert pub.manifest.species_set == rule
    size = pub.read(layout.level_array(0, "set_size"))
    rows, cols = np.nonzero(np.isfinite(size))
    pick = np.linspace(0, len(rows) - 1, 50).astype(int)
    codes = codes_at(pub, rows[pick], cols[pick])
    want = species_sets(codes, rule, species_ids=ids).size
    np.testing.assert_array_equal(size[rows[pick], cols[pick]], want)
    with pytest.raises(InvalidInputError, match="needs the species' categories"):
        calibrate(rel, cal, alpha, mondrian="iucn")


def test_bad_surveys_name_what_is_wrong(release: Path, tmp_path: Path) -> None:
    rel = open_release(str(release))
    good = tmp_path / "good.csv"
    _draw_surveys(good, release, 50, seed=3)
    rows = list(csv.reader(good.open()))
    # unknown species: counted and named
    bad = tmp_path / "unknown.csv"
    with bad.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow([*rows[0], "sp999991", "sp999992"])
        w.writerows([[*r, "0", "1"] for r in rows[1:]])
    with pytest.raises(InvalidInputError, match=r"2 species column\(s\).*sp999991, sp999992"):
        read_surveys(bad, rel)
    # sites off the grid: counted, with examples
    off = tmp_path / "off.csv"
    with off.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(rows[0])
        for r in rows[1:]:
            w.writerow(r)
        for i in range(7):
            w.writerow([f"far{i}", "0", "0", *r[3:]])
    with pytest.raises(
        InvalidInputError, match=r"7 site\(s\) lie off.*far0, far1, far2, far3, far4, \.\.\."
    ):
        read_surveys(off, rel)


def test_the_command_line(release: Path, tmp_path: Path) -> None:
    cal = tmp_path / "cal.csv"
    _draw_surveys(cal, release, 400, seed=4)
    sd = str(BIN / "sdmatlas")
    out = tmp_path / "report.json"
    ok = subprocess.run([sd, "calibrate", str(release), "--surveys", str(cal), "--alpha",
                         "0.1", "--out", str(out)], capture_output=True, text=True)  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert '"alpha": 0.1' in out.read_text()
    for args, words in [
        (["--alpha", "1.2"], "strictly between 0 and 1"),
        (["--alpha", "0"], "strictly between 0 and 1"),
        (["--split", "nope"], "no site with split 'nope'"),
    ]:
        bad = subprocess.run([sd, "calibrate", str(release), "--surveys", str(cal), *args],
                             capture_output=True, text=True)  # fmt: skip
        assert bad.returncode == 2 and words in " ".join(bad.stderr.split()), (args, bad.stderr)


# -- IUCN categories ------------------------------------------------------------------------------


def test_an_unknown_iucn_category_is_a_line_numbered_error(tmp_path: Path) -> None:
    from sdmatlas.catalog.imports import read_species_csv
    from sdmatlas.publish.species_csv import species_info_from_csv

    path = tmp_path / "species.csv"
    path.write_text(
        "species_id,scientific_name,protected,iucn\n"
        "1,Abies alba,0,LC\n2,Fagus sylvatica,1,vu\n3,Quercus robur,0,XX\n"
    )
    with pytest.raises(InvalidInputError, match=r"line 4: iucn='XX' is not an IUCN"):
        read_species_csv(path)
    with pytest.raises(InvalidInputError, match=r"line 4: iucn='XX'"):
        species_info_from_csv(path, [1, 2, 3])
    path.write_text(path.read_text().replace("XX", ""))
    info = species_info_from_csv(path, [1, 2, 3])
    assert info.iucn.tolist() == ["LC", "VU", ""]
    rows = read_species_csv(path)
    assert [r.flags["iucn"] if r.flags else None for r in rows] == ["LC", "VU", None]


def test_iucn_categories_reach_the_catalog(tmp_path: Path) -> None:
    from sqlalchemy import select

    from conftest import ROOT
    from sdmatlas.catalog.db import Catalog
    from sdmatlas.catalog.imports import import_species, import_territories
    from sdmatlas.catalog.schema import SpeciesStatus

    c = Catalog(f"sqlite:///{tmp_path / 'c.sqlite'}")
    c.upgrade()
    import_territories(c, ROOT / "src" / "sdmatlas" / "demo" / "territories.geojson")
    path = tmp_path / "species.csv"
    path.write_text("species_id,scientific_name,iucn\n1,Abies alba,EN\n2,Fagus sylvatica,\n")
    import_species(c, path, territory="demo-region")
    with c.session() as s:
        got = {st.species_id: st.iucn for st in s.scalars(select(SpeciesStatus))}
    assert got == {1: "EN", 2: None}
    path.write_text("species_id,scientific_name,iucn\n1,Abies alba,CR\n2,Fagus sylvatica,LC\n")
    import_species(c, path, territory="demo-region")  # an update, not a second row
    with c.session() as s:
        got = {st.species_id: st.iucn for st in s.scalars(select(SpeciesStatus))}
    assert got == {1: "CR", 2: "LC"}
    c.dispose()


def test_the_demo_species_get_a_plausible_simulated_iucn_mix() -> None:
    from collections import Counter

    from sdmatlas.demo.virtual_species import VirtualSpecies, simulated_iucn

    def sp(i: int, **flags: bool) -> VirtualSpecies:
        return VirtualSpecies(i, f"Fictus vs{i}", "Fictus", "Fictaceae", 10, 3, 1000, 300,
                              500, 0.01, **flags)  # fmt: skip

    plain = Counter(simulated_iucn(sp(i)) for i in range(2000))
    endemic = Counter(simulated_iucn(sp(i, endemic=True)) for i in range(2000))
    assert set(plain) == {"LC", "NT", "VU", "EN", "CR"} and plain["LC"] > 1000
    threatened = sum(plain[c] for c in ("VU", "EN", "CR"))
    assert threatened < sum(endemic[c] for c in ("VU", "EN", "CR"))
    assert {simulated_iucn(sp(i, invasive=True)) for i in range(50)} == {"LC"}
    assert simulated_iucn(sp(7)) == simulated_iucn(sp(7))  # its own stream: reproducible


# -- set-based indicators in publish -------------------------------------------------------------


def _set_reference(codes_px: np.ndarray, info_iucn: np.ndarray, flags: dict[str, np.ndarray],
                   rule: SetRule, ids: np.ndarray) -> dict[str, np.ndarray]:  # fmt: skip
    """Every set-based indicator at N pixels from the pixel-major codes ``[N, S]``, by the
    words of their definitions, through ``species_sets`` (itself checked against plain
    Python above)."""
    sets = species_sets(codes_px, rule, flags["invasive"], species_ids=ids)
    m, w = sets.member, sets.weight
    size = m.sum(axis=1)
    out: dict[str, np.ndarray] = {"set_size": size.astype(float)}
    for cat in ("LC", "NT", "VU", "EN", "CR"):
        k = (m & (info_iucn == cat)[None, :]).sum(axis=1)
        out[f"set_share_{cat.lower()}"] = np.where(size > 0, k / np.maximum(size, 1), 0.0)
    thr = np.isin(info_iucn, ["VU", "EN", "CR"])
    out["set_threatened_mass"] = (w * thr[None, :]).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        out["set_shannon"] = -np.where(w > 0, w * np.log(np.where(w > 0, w, 1)), 0).sum(axis=1)
    for f, rows in flags.items():
        out[f"set_{f}_count"] = (m & rows[None, :]).sum(axis=1).astype(float)
    # the worst status, one pixel at a time: the most threatened assessed category of a
    # member; 5 ("none assessed") for a set of unassessed species; 255 for an empty set
    order = ["LC", "NT", "VU", "EN", "CR"]
    worst = []
    for row in m:
        cats = [str(c) for c in info_iucn[row]]
        ranks = [order.index(c) for c in cats if c in order]
        worst.append(max(ranks) if ranks else (5 if cats else 255))
    out["set_worst_status"] = np.array(worst)
    return out


@pytest.mark.parametrize(
    "rule",
    [
        SetRule(threshold=76 * SCALE),  # lambda on a code: ties at lambda
        SetRule(threshold=0.2, top_k=5, floor=0.3, native_only=True),
        SetRule(threshold=0.97),  # most sets empty
        # per-species thresholds (Mondrian): one at a code (ties), one at 0, a cap
        SetRule(
            threshold=0.5,
            top_k=8,
            species_thresholds={**{i: 76 * SCALE for i in range(1, 200, 3)}, 5: 0.0, 7: 0.95},
        ),
    ],
    ids=["ties", "capped", "mostly-empty", "per-species"],
)
def test_set_indicators_equal_the_reference(cube: Path, tmp_path: Path, rule: SetRule) -> None:
    from sdmatlas.predict.cube import open_cube
    from sdmatlas.publish.indicators import SET_INDICATORS, SpeciesInfo
    from sdmatlas.publish.release import PublishOptions, publish
    from sdmatlas.release import layout

    c = open_cube(cube)
    ids = np.asarray(c.species_ids, np.int64)
    n = len(ids)
    # threatened categories rare (as they are), so that sets differ in their worst status
    mix = {41: "CR", 23: "EN", 13: "VU", 7: "NT", 5: "DD", 3: ""}
    iucn = np.array([next((c for k, c in mix.items() if i % k == 1), "LC") for i in range(n)],
                    object)  # fmt: skip
    flags = {"protected": np.arange(n) % 5 == 0, "invasive": np.arange(n) % 7 == 1,
             "endemic": np.arange(n) % 11 == 2}  # fmt: skip
    info = SpeciesInfo(ids=ids, iucn=iucn, **flags)
    publish(cube, tmp_path, "s", info, PublishOptions(species_set=rule, min_level_size=16))
    rel = open_release(str(tmp_path / "s"))
    assert rel.manifest.species_set == rule and rel.manifest.format_version == 4
    assert rel.manifest.species.iucn == [str(v) for v in iucn]
    codes = c.read()  # [S, H, W]
    land = np.argwhere(codes[0] != NODATA)
    rng = np.random.default_rng(11)
    pick = land[rng.choice(len(land), min(400, len(land)), replace=False)]
    px = codes[:, pick[:, 0], pick[:, 1]].T  # [N, S]
    ref = _set_reference(px, iucn, flags, rule, ids)
    empty = ref["set_size"] == 0
    assert (~empty).any()
    if rule.threshold > 0.9:
        assert empty.mean() > 0.2  # the empty case really is exercised
    for ind in SET_INDICATORS:
        got = rel.read(layout.level_array(0, ind.name))[pick[:, 0], pick[:, 1]]
        np.testing.assert_allclose(got, ref[ind.name], rtol=1e-5, atol=1e-5, err_msg=ind.name)
        sea = rel.read(layout.level_array(0, ind.name))[codes[0] == NODATA]
        assert np.isnan(sea).all()  # outside the territory: no value, as every indicator
    if rule.top_k is not None:
        assert ref["set_size"].max() <= rule.top_k
    # the worst-status class layer (uint8, 255 for an empty set and off the territory)
    worst = rel.read(layout.level_array(0, "set_worst_status"))
    assert worst.dtype == np.uint8
    np.testing.assert_array_equal(worst[pick[:, 0], pick[:, 1]], ref["set_worst_status"])
    assert (worst[codes[0] == NODATA] == 255).all()
    if rule.threshold > 0.9:
        assert (ref["set_worst_status"] == 255).any()
    else:  # sets differ in their worst status
        assert len(set(ref["set_worst_status"].tolist())) >= 2


def test_a_calibration_report_is_a_publish_rule(tmp_path: Path) -> None:
    from sdmatlas.sets import read_set_rule

    report = tmp_path / "calibration.json"
    report.write_text('{"alpha": 0.1, "rule": {"threshold": 0.21, "alpha": 0.1}}')
    assert read_set_rule(report) == SetRule(threshold=0.21, alpha=0.1)
    bad = tmp_path / "bad.json"
    bad.write_text('{"threshold": 1.5, "color": "red"}')
    with pytest.raises(InvalidInputError, match=r"threshold.*color|color.*threshold"):
        read_set_rule(bad)


def test_statuses_come_from_the_catalog(tmp_path: Path, cube: Path) -> None:
    """``publish --statuses TERRITORY``: the species' flags and IUCN categories as the
    catalog holds them in that territory; ``all``: any territory's flags and the most
    threatened category recorded; an unknown territory is refused before any work."""
    from typer.testing import CliRunner

    from conftest import ROOT
    from sdmatlas.catalog.db import Catalog
    from sdmatlas.catalog.imports import import_species, import_territories
    from sdmatlas.catalog.statuses import species_info
    from sdmatlas.cli import app

    db = tmp_path / "c.sqlite"
    c = Catalog(f"sqlite:///{db}")
    c.upgrade()
    import_territories(c, ROOT / "src" / "sdmatlas" / "demo" / "territories.geojson")
    csv = tmp_path / "species.csv"
    csv.write_text("species_id,scientific_name,genus,iucn,invasive\n"
                   "1,Abies alba,Abies,EN,0\n2,Fagus sylvatica,Fagus,LC,1\n")  # fmt: skip
    import_species(c, csv, territory="HR")
    csv.write_text("species_id,scientific_name,genus,iucn,invasive\n"
                   "1,Abies alba,Abies,NT,0\n3,Picea abies,Picea,VU,0\n")  # fmt: skip
    import_species(c, csv, territory="SI")
    hr = species_info(c, [3, 2, 1, 4], "HR")
    assert hr.iucn.tolist() == ["", "LC", "EN", ""]
    assert hr.invasive.tolist() == [False, True, False, False]
    assert hr.genus.tolist() == ["Picea", "Fagus", "Abies", ""]
    anywhere = species_info(c, [3, 2, 1, 4])
    assert anywhere.iucn.tolist() == ["VU", "LC", "EN", ""]  # EN beats NT
    c.dispose()
    env = {"SDMATLAS_DATA_DIR": str(tmp_path), "SDMATLAS_DATABASE_URL": f"sqlite:///{db}"}
    runner = CliRunner()
    args = ["publish", str(cube), "--id", "st", "--root", str(tmp_path / "rel"), "--workers", "0"]
    done = runner.invoke(app, [*args, "--statuses", "HR"], env=env)
    assert done.exit_code == 0, done.output
    rel = open_release(str(tmp_path / "rel" / "st"))
    ids = rel.manifest.species.ids
    iucn = dict(zip(ids, rel.manifest.species.iucn or [], strict=True))
    assert (iucn[1], iucn[2], iucn[3]) == ("EN", "LC", "")
    bad = runner.invoke(app, [*args[:3], "st2", *args[4:], "--statuses", "XX"], env=env)
    assert bad.exit_code == 2 and "XX" in bad.output
    both = runner.invoke(app, [*args[:3], "st3", *args[4:], "--statuses", "HR", "--species",
                               str(csv)], env=env)  # fmt: skip
    assert both.exit_code == 2 and "not both" in both.output
