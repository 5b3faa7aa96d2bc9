"""Where each array lives inside a release: the only place that spells a path.

Release layout (one Zarr v3 group; the TileDB engine stores the same arrays under the
same names)::

    zarr.json                    attrs: "sdmatlas" (the manifest), "multiscales"
    levels/<k>/probability       uint8 [species, y, x] at 2^k times the grid resolution
    levels/<k>/<indicator>       float32 [y, x], NaN outside the territory
    levels/<k>/<class layer>     uint8 [y, x], 255 no class (format 4; mode pyramid)
    levels/<k>/x, y, spatial_ref georeferencing of the level
    pixels                       uint8 [y, x, species], chunks [8, 8, S]: one chunk read
                                 answers "every species at this point"
    blocks/<edge>/<name>         block aggregates at edges 8, 64 and 512
                                 (sdmatlas.publish.aggregates); blocks/<edge>/classes:
                                 uint32 [by, bx, class] pixels of each class of each
                                 class layer (format 4)
    territory                    uint8 [y, x]: 1 on territory pixels
    species                      int64 [species] ids, in cube order; attrs "names"
    stats/<name>                 per-species histogram, presence and extent boxes

Every other module asks this one for a path (``tests/test_release_format.py`` greps the
code base for layout strings elsewhere).
"""

from __future__ import annotations

FORMAT_VERSION = 4
"""Release format this sdmatlas writes (the manifest's ``format_version``). Version 3
added the species-set rule and the species' IUCN categories to the manifest, and the
set-based indicators; version 4 the class layers (``class_layers`` in the manifest, their
level arrays and ``blocks/<edge>/classes``). Older releases are read as they are (their
manifest lists the layers they have)."""
KNOWN_VERSIONS = frozenset({2, 3, FORMAT_VERSION})

MANIFEST_ATTR = "sdmatlas"
"""The root group attribute that holds the manifest."""
MULTISCALES_ATTR = "multiscales"
NAMES_ATTR = "names"
"""Attribute of the species array: scientific names, in species order."""

PROBABILITY = "probability"
PIXELS = "pixels"
TERRITORY = "territory"
SPECIES = "species"
STATS = ("histogram", "presence", "extent")
AGGREGATES = ("sum", "max", "count", "indicators")
CLASS_COUNTS = "classes"
"""The block aggregate of class pixel counts (format 4)."""


def level_group(level: int) -> str:
    """The group of one pyramid level (its arrays and georeferencing)."""
    return f"levels/{level}"


def level_array(level: int, var: str) -> str:
    """``probability`` or an indicator at ``level``."""
    return f"{level_group(level)}/{var}"


def probability(level: int) -> str:
    return level_array(level, PROBABILITY)


def aggregate(edge: int, name: str) -> str:
    """One block aggregate (``sum``, ``max``, ``count``, ``indicators``) of ``edge``."""
    return f"blocks/{edge}/{name}"


def stats_group() -> str:
    return "stats"


def stats(name: str) -> str:
    return f"{stats_group()}/{name}"


def metadata_key(array_path: str) -> str:
    """The Zarr v3 metadata document of a node."""
    return f"{array_path}/zarr.json" if array_path else "zarr.json"
