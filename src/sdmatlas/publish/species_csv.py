"""Species status flags from a CSV (until the catalog holds them).

Columns: ``species_id``, any of ``protected``, ``invasive``, ``endemic``
(1/0, true/false, yes/no), optionally ``iucn`` (an IUCN Red List category), and
optionally ``genus`` and ``family`` (for group indicators). Missing columns or
species mean "not flagged", "unknown".
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from sdmatlas.errors import InvalidInputError, NotFoundError
from sdmatlas.publish.indicators import SpeciesInfo
from sdmatlas.status import parse_iucn

FLAGS = ("protected", "invasive", "endemic")
_TRUE = {"1", "true", "yes", "y", "t"}
_FALSE = {"0", "false", "no", "n", "f", ""}


def species_info_from_csv(path: Path | None, species_ids: list[int]) -> SpeciesInfo:
    """Flags for ``species_ids`` (in that order) read from ``path``; no file: no flags."""
    n = len(species_ids)
    flags = {f: np.zeros(n, dtype=bool) for f in FLAGS}
    genus, family, iucn = [""] * n, [""] * n, [""] * n
    if path is not None:
        if not Path(path).exists():
            raise NotFoundError(f"species file {path} does not exist")
        index = {sid: i for i, sid in enumerate(species_ids)}
        with Path(path).open(newline="") as fh:
            reader = csv.DictReader(fh)
            if "species_id" not in (reader.fieldnames or []):
                raise InvalidInputError(f"{path} needs a species_id column")
            for line, row in enumerate(reader, start=2):
                try:
                    sid = int(row["species_id"])
                except ValueError:
                    raise InvalidInputError(
                        f"{path}, line {line}: species_id {row['species_id']!r} is not an integer"
                    ) from None
                if sid not in index:
                    continue
                genus[index[sid]] = (row.get("genus") or "").strip()
                iucn[index[sid]] = parse_iucn(row.get("iucn"), f"{path}, line {line}") or ""
                family[index[sid]] = (row.get("family") or "").strip()
                for f in FLAGS:
                    value = (row.get(f) or "").strip().lower()
                    if value not in _TRUE | _FALSE:
                        raise InvalidInputError(
                            f"{path}, line {line}: {f}={value!r} is not a yes/no value"
                        )
                    flags[f][index[sid]] = value in _TRUE
    return SpeciesInfo(
        ids=np.asarray(species_ids, dtype=np.int64),
        protected=flags["protected"],
        invasive=flags["invasive"],
        endemic=flags["endemic"],
        genus=np.asarray(genus, dtype=object),
        family=np.asarray(family, dtype=object),
        iucn=np.asarray(iucn, dtype=object),
    )
