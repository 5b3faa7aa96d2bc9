"""``sdmatlas calibrate``: the species-set threshold of a release, calibrated by split
conformal prediction on presence/absence surveys, with a report of what it achieves.

Surveys are a CSV with one row per site: ``site_id``, the site's position (``x``, ``y``
in the release's CRS, or ``lon``, ``lat``), an optional ``split`` column, and one
``sp<species id>`` column per surveyed species (1 found, 0 not found). The release's
code at each site's pixel is read from its pixel-major copy (one 8 x 8 x S chunk per
site). Of the calibration sites, a random ``holdout`` share is kept aside: lambda is
computed on the others, and the report gives its coverage (the share of (site, species)
presences inside the set) and mean set size on the held-out sites, per IUCN category
and status flag, and on independent test surveys when given.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from sdmatlas.errors import InvalidInputError, NotFoundError
from sdmatlas.publish.indicators import SpeciesInfo
from sdmatlas.quantize import NODATA, SCALE
from sdmatlas.release import Release
from sdmatlas.sets import SetRule, check_alpha, conformal_threshold, species_sets
from sdmatlas.status import ASSESSED

MAX_EXAMPLES = 5
_SPECIES = re.compile(r"^sp\d{1,9}$")


@dataclass(frozen=True)
class Surveys:
    """Sites on a release's grid: ``presence [sites, S]`` aligned with the release's
    species (columns of species that were not surveyed are all False in ``surveyed``)."""

    site_ids: list[str]
    rows: npt.NDArray[np.int64]
    cols: npt.NDArray[np.int64]
    presence: npt.NDArray[np.bool_]
    surveyed: npt.NDArray[np.bool_]  # [S]: the species the file has a column for
    split: list[str]

    def select(self, keep: npt.NDArray[np.bool_]) -> Surveys:
        idx = np.flatnonzero(keep)
        return Surveys(
            [self.site_ids[i] for i in idx],
            self.rows[idx],
            self.cols[idx],
            self.presence[idx],
            self.surveyed,
            [self.split[i] for i in idx],
        )


def _examples(items: list[str]) -> str:
    shown = ", ".join(items[:MAX_EXAMPLES])
    return shown + (", ..." if len(items) > MAX_EXAMPLES else "")


def read_surveys(path: Path, release: Release) -> Surveys:
    """Sites of a survey CSV on the release's grid, checked: every species column a
    species of the release, every site on the grid and inside its territory (the
    refusals name how many and which)."""
    if not Path(path).exists():
        raise NotFoundError(f"survey file {path} does not exist")
    ids = [int(i) for i in release.species_ids]
    index = {sid: i for i, sid in enumerate(ids)}
    grid = release.grid
    with Path(path).open(newline="") as fh:
        reader = csv.reader(fh)
        try:
            header = next(reader)
        except StopIteration:
            raise InvalidInputError(f"{path} is empty") from None
        col = {h: i for i, h in enumerate(header)}
        xy = ("x", "y") if {"x", "y"} <= set(col) else ("lon", "lat")
        if not set(xy) <= set(col):
            raise InvalidInputError(f"{path}: needs x, y (the release's CRS) or lon, lat columns")
        sp_cols = [(i, h) for i, h in enumerate(header) if _SPECIES.match(h)]
        unknown = [h for _, h in sp_cols if int(h[2:]) not in index]
        if unknown:
            raise InvalidInputError(
                f"{path}: {len(unknown)} species column(s) name no species of release "
                f"{release.id}: {_examples(unknown)}"
            )
        if not sp_cols:
            raise InvalidInputError(f"{path}: no species column (sp<species id>)")
        target = np.array([index[int(h[2:])] for _, h in sp_cols])
        sites, pos, pres, split = [], [], [], []
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            try:
                pos.append((float(row[col[xy[0]]]), float(row[col[xy[1]]])))
                pres.append([int(row[i]) for i, _ in sp_cols])
            except (ValueError, IndexError):
                raise InvalidInputError(
                    f"{path}, line {line}: {xy[0]}, {xy[1]} must be numbers and species "
                    "columns 0 or 1"
                ) from None
            sites.append(row[col["site_id"]] if "site_id" in col else str(line))
            split.append(row[col["split"]] if "split" in col else "")
    if not sites:
        raise InvalidInputError(f"{path} has no site")
    p = np.array(pos, dtype=np.float64)
    if xy == ("lon", "lat"):
        rows, cols = grid.rowcol_from_lonlat(p[:, 0], p[:, 1])
    else:
        rows, cols = grid.rowcol(p[:, 0], p[:, 1])
    off = ~grid.contains(rows, cols)
    if off.any():
        bad = [sites[i] for i in np.flatnonzero(off)]
        raise InvalidInputError(
            f"{path}: {len(bad)} site(s) lie off release {release.id}'s grid: {_examples(bad)}"
        )
    values = np.asarray(pres)
    if not np.isin(values, (0, 1)).all():
        raise InvalidInputError(f"{path}: species columns hold 0 or 1 only")
    presence = np.zeros((len(sites), len(ids)), dtype=bool)
    presence[:, target] = values.astype(bool)
    surveyed = np.zeros(len(ids), dtype=bool)
    surveyed[target] = True
    return Surveys(sites, rows.astype(np.int64), cols.astype(np.int64), presence, surveyed, split)


def codes_at(release: Release, rows: npt.NDArray[np.int64], cols: npt.NDArray[np.int64]) -> Any:
    """Every species' code at each pixel ``[N, S]``: one pixel-major chunk per 8 x 8 block
    (sites in one block share it)."""
    pixels = release.pixels()
    bh, bw, _ = pixels.inner
    out = np.full((len(rows), len(release.species_ids)), NODATA, dtype=np.uint8)
    blocks: dict[tuple[int, int], list[int]] = {}
    for i, (r, c) in enumerate(zip(rows.tolist(), cols.tolist(), strict=True)):
        blocks.setdefault((r // bh, c // bw), []).append(i)
    for (br, bc), members in blocks.items():
        chunk = np.asarray(pixels.chunk((br, bc, 0)))
        for i in members:
            out[i] = chunk[rows[i] % bh, cols[i] % bw, :]
    return out


def _coverage(
    codes: npt.NDArray[np.uint8],
    presence: npt.NDArray[np.bool_],
    rule: SetRule,
    ids: npt.NDArray[np.int64],
) -> dict[str, Any]:
    sets = species_sets(codes, rule, species_ids=ids)
    n_present = int(presence.sum())
    covered = int((sets.member & presence).sum())
    return {
        "sites": len(codes),
        "presences": n_present,
        "coverage": round(covered / n_present, 4) if n_present else None,
        "mean_set_size": round(float(sets.size.mean()), 3) if len(codes) else None,
        "empty_sets": int((sets.size == 0).sum()),
    }


def _groups(info: SpeciesInfo | None, n: int) -> Iterator[tuple[str, npt.NDArray[np.bool_]]]:
    if info is None:
        return
    if len(info.iucn):
        for cat in ASSESSED:
            yield f"iucn:{cat}", info.iucn == cat
    for flag in ("protected", "invasive", "endemic"):
        yield flag, np.asarray(getattr(info, flag), dtype=bool)


def _by_group(
    codes: npt.NDArray[np.uint8],
    presence: npt.NDArray[np.bool_],
    rule: SetRule,
    ids: npt.NDArray[np.int64],
    info: SpeciesInfo | None,
) -> dict[str, Any]:
    """Coverage per IUCN category and status flag."""
    member = species_sets(codes, rule, species_ids=ids).member
    out = {}
    for name, mask in _groups(info, codes.shape[1]):
        pres = presence[:, mask]
        if pres.any():
            out[name] = {
                "presences": int(pres.sum()),
                "coverage": round(int((member[:, mask] & pres).sum()) / int(pres.sum()), 4),
            }
    return out


def iucn_groups(info: SpeciesInfo, n: int) -> dict[str, npt.NDArray[np.bool_]]:
    """The Mondrian groups by IUCN category: each assessed category the species have, and
    ``unassessed`` (DD, NE, EW, EX or unknown)."""
    iucn = np.asarray(info.iucn if len(info.iucn) else np.full(n, "", object))
    groups = {c: iucn == c for c in ASSESSED if (iucn == c).any()}
    rest = ~np.isin(iucn, ASSESSED)
    if rest.any():
        groups["unassessed"] = rest
    return groups


def calibrate(
    release: Release,
    surveys: Path,
    alpha: float,
    *,
    split: str | None = None,
    holdout: float = 0.25,
    seed: int = 0,
    test: Path | None = None,
    info: SpeciesInfo | None = None,
    mondrian: str | None = None,
) -> dict[str, Any]:
    """The conformal lambda for ``alpha`` and the calibration report (a JSON document).
    ``mondrian="iucn"``: one lambda per IUCN group (Mondrian conformal prediction), so that
    each group's presences, not only all of them together, are covered at 1 - alpha."""
    alpha = check_alpha(alpha)
    if mondrian not in (None, "iucn"):
        raise InvalidInputError(f"mondrian {mondrian!r}: the groups can be 'iucn'")
    if mondrian is not None and (info is None or not len(info.iucn)):
        raise InvalidInputError("Mondrian calibration by IUCN needs the species' categories")
    if not 0.0 <= holdout < 1.0:
        raise InvalidInputError(f"holdout {holdout} must be in [0, 1)")
    s = read_surveys(surveys, release)
    if split is not None:
        s = s.select(np.array([v == split for v in s.split]))
        if not s.site_ids:
            raise InvalidInputError(f"{surveys}: no site with split {split!r}")
    codes = codes_at(release, s.rows, s.cols)
    outside = codes[:, 0] == NODATA
    if outside.any():
        bad = [s.site_ids[i] for i in np.flatnonzero(outside)]
        raise InvalidInputError(
            f"{surveys}: {len(bad)} site(s) lie outside release {release.id}'s territory "
            f"(no prediction there): {_examples(bad)}"
        )
    rng = np.random.default_rng(seed)
    held = rng.random(len(codes)) < holdout
    cal = ~held
    present_p = codes[cal][s.presence[cal]].astype(np.float64) * SCALE
    lam = conformal_threshold(present_p, alpha)
    rule = SetRule(threshold=lam, alpha=alpha)
    ids = np.asarray(release.species_ids, np.int64)
    if mondrian is not None:
        assert info is not None
        per_group: dict[str, float] = {}
        own: dict[int, float] = {}
        for name, mask in iucn_groups(info, len(ids)).items():
            pres = s.presence[cal][:, mask]
            if not pres.any():
                continue  # no presence of the group: its species keep the marginal lambda
            per_group[name] = conformal_threshold(
                codes[cal][:, mask][pres].astype(np.float64) * SCALE, alpha
            )
            own.update({int(i): per_group[name] for i in ids[mask]})
        rule = SetRule(threshold=lam, alpha=alpha, species_thresholds=own, groups=per_group,
                       group_by=mondrian)  # fmt: skip
    report: dict[str, Any] = {
        "release": release.id,
        "alpha": alpha,
        "target_coverage": round(1 - alpha, 4),
        "rule": rule.model_dump(),
        "threshold_code": rule.threshold_code,
        "calibration": {
            "surveys": str(surveys),
            "split": split,
            "sites": int(cal.sum()),
            "presences": int(present_p.size),
        },
        "held_out": _coverage(codes[held], s.presence[held], rule, ids) if held.any() else None,
    }
    if held.any():
        report["held_out_by_status"] = _by_group(codes[held], s.presence[held], rule, ids, info)
    if test is not None:
        t = read_surveys(test, release)
        tc = codes_at(release, t.rows, t.cols)
        inside = tc[:, 0] != NODATA
        report["test"] = {
            "surveys": str(test),
            **_coverage(tc[inside], t.presence[inside], rule, ids),
            "sites_outside_territory": int((~inside).sum()),
            "by_status": _by_group(tc[inside], t.presence[inside], rule, ids, info),
        }
    return report
