"""Conservation status: the IUCN Red List categories, in order of increasing threat."""

from __future__ import annotations

from sdmatlas.errors import InvalidInputError

#: Every IUCN Red List category (3.1): assessed ones from least to most threatened, then
#: Data Deficient and Not Evaluated, which rank nowhere.
IUCN = ("LC", "NT", "VU", "EN", "CR", "EW", "EX", "DD", "NE")
#: The categories the set-based indicators count (the living, assessed ones).
ASSESSED = ("LC", "NT", "VU", "EN", "CR")
THREATENED = ("VU", "EN", "CR")
NAMES = {
    "LC": "Least Concern",
    "NT": "Near Threatened",
    "VU": "Vulnerable",
    "EN": "Endangered",
    "CR": "Critically Endangered",
    "EW": "Extinct in the Wild",
    "EX": "Extinct",
    "DD": "Data Deficient",
    "NE": "Not Evaluated",
}


def parse_iucn(value: str | None, where: str) -> str | None:
    """An IUCN category code (case-insensitive; empty: unknown), or a line-numbered error."""
    text = (value or "").strip().upper()
    if not text:
        return None
    if text not in IUCN:
        raise InvalidInputError(
            f"{where}: iucn={value!r} is not an IUCN Red List category; use one of "
            f"{', '.join(IUCN)} (or leave it empty)"
        )
    return text
