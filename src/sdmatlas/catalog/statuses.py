"""A release's species information from the catalog: genus, family, status flags and IUCN
categories, in one territory or across all of them.

What ``publish --statuses TERRITORY`` and on-demand jobs use instead of a species CSV:
the statuses the catalog holds (``sdmatlas import-species ... --territory``), so that a
release's indicators, sets and native-range filter follow the catalog.
"""

from __future__ import annotations

import numpy as np
from sqlalchemy import select

from sdmatlas.catalog import queries
from sdmatlas.catalog.db import Catalog
from sdmatlas.catalog.schema import Species, SpeciesStatus
from sdmatlas.publish.indicators import SpeciesInfo
from sdmatlas.status import IUCN

FLAGS = ("protected", "invasive", "endemic")
#: rank of each category when territories disagree: the most threatened assessed one wins
_RANK = {c: i for i, c in enumerate(("DD", "NE", "LC", "NT", "VU", "EN", "CR", "EW", "EX"))}
_BATCH = 5000  # ids per IN (...) list: under SQLite's and PostgreSQL's parameter limits


def species_info(catalog: Catalog, ids: list[int], territory: str | None = None) -> SpeciesInfo:
    """Genus, family, flags and IUCN category of ``ids`` (in that order). With a
    ``territory`` (a catalog code), that territory's statuses; without, a flag holds when
    the species has it in any territory, and the category is the most threatened one
    recorded (the conservative reading when regional assessments differ). Species the
    catalog does not have, or has no status for, are unflagged and unassessed."""
    index = {int(sid): i for i, sid in enumerate(ids)}
    n = len(ids)
    genus, family = np.full(n, "", dtype=object), np.full(n, "", dtype=object)
    iucn = np.full(n, "", dtype=object)
    flags = {f: np.zeros(n, bool) for f in FLAGS}
    with catalog.session() as s:
        terr_id = queries.get_territory(s, territory).id if territory is not None else None
        keys = list(index)
        for a in range(0, len(keys), _BATCH):
            part = keys[a : a + _BATCH]
            for sp in s.scalars(select(Species).where(Species.id.in_(part))):
                genus[index[sp.id]] = sp.genus or ""
                family[index[sp.id]] = sp.family or ""
            stmt = select(SpeciesStatus).where(SpeciesStatus.species_id.in_(part))
            if terr_id is not None:
                stmt = stmt.where(SpeciesStatus.territory_id == terr_id)
            for st in s.scalars(stmt):
                i = index[st.species_id]
                for f, arr in flags.items():
                    arr[i] |= bool(getattr(st, f))
                if st.iucn in IUCN and _RANK[st.iucn] > _RANK.get(iucn[i], -1):
                    iucn[i] = st.iucn
    return SpeciesInfo(
        ids=np.asarray(ids, np.int64),
        protected=flags["protected"],
        invasive=flags["invasive"],
        endemic=flags["endemic"],
        genus=genus,
        family=family,
        iucn=iucn,
    )
