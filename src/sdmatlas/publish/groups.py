"""Species groups (a genus, a family, a status, a list of ids) and their indicators on demand.

A group resolves to rows of the species axis; any registered indicator then runs
on those rows of a release level. Reading cost: one inner chunk per group species
and output chunk, so large groups (thousands of species) belong in precomputed
layers, not on the request path.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

from sdmatlas.errors import InvalidInputError, NotFoundError
from sdmatlas.publish.indicators import get_indicator
from sdmatlas.quantize import NODATA
from sdmatlas.release import Release

GroupKind = Literal["genus", "family", "status", "ids"]
STATUSES = ("protected", "invasive", "endemic")
MAX_IDS = 10_000


def select_group(release: Release, kind: str, value: str) -> npt.NDArray[np.intp]:
    """Rows of the species axis in the group; a clear error for an unknown or empty group."""
    info, genus, family = release.species_info()
    if kind in ("genus", "family"):
        names = genus if kind == "genus" else family
        rows = np.array(
            [i for i, n in enumerate(names) if n.lower() == value.strip().lower()], dtype=np.intp
        )
        if not len(rows):
            known = sorted({n for n in names if n})
            hint = f"; known: {', '.join(known[:20])}{' ...' if len(known) > 20 else ''}"
            raise NotFoundError(f"unknown {kind} {value!r} in this release{hint if known else ''}")
        return rows
    if kind == "status":
        if value not in STATUSES:
            raise InvalidInputError(f"status must be one of {', '.join(STATUSES)}, got {value!r}")
        return np.flatnonzero(getattr(info, value)).astype(np.intp)
    if kind == "ids":
        try:
            wanted = [int(v) for v in value.split(",") if v.strip()]
        except ValueError:
            raise InvalidInputError(
                f"ids must be comma-separated integers, got {value!r}"
            ) from None
        if not wanted or len(wanted) > MAX_IDS:
            raise InvalidInputError(f"give between 1 and {MAX_IDS} species ids")
        index = {int(s): i for i, s in enumerate(info.ids)}
        missing = [w for w in wanted if w not in index]
        if missing:
            raise NotFoundError(f"species {missing[:10]} are not in this release")
        return np.array(sorted({index[w] for w in wanted}), dtype=np.intp)
    raise InvalidInputError(f"group kind must be genus, family, status or ids, got {kind!r}")


def group_layer(
    release: Release, indicator: str, rows: npt.NDArray[np.intp], level: int = 0
) -> npt.NDArray[np.float32]:
    """An indicator over the species in ``rows``, at one level of the release."""
    ind = get_indicator(indicator)
    info, _, _ = release.species_info()
    prob = release.level(level, "probability")
    _, h, w = prob.shape
    codes = np.stack(
        [prob.region((slice(r, r + 1), slice(0, h), slice(0, w)))[0] for r in [0, *rows]]
    )
    valid = codes[0] != NODATA
    return ind(codes[1:], info.select(rows), valid)
