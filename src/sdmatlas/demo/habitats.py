"""The demo world's virtual habitats: a three-level, EUNIS-like hierarchy, and the true
habitat of every point from its land cover and climate.

Simulated, like the rest of the demo world. The codes and names follow the EUNIS 2020
habitat classification (level 1 a letter, level 2 a letter and a digit, level 3 one more
character, each code's parent its prefix), but which types exist here and where they
are is defined by the rules below, not by field data. Each level-3 habitat's
*characteristic species* are those of the virtual species most concentrated in it (a
fidelity index computed by the training script, ``scripts/train_demo_habitats.py``).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from sdmatlas.classes import ClassEntry

F64 = npt.NDArray[np.float64]

#: (code, name, colour), level 1
LEVEL1 = (
    ("T", "Forests and other wooded land", "#1b7837"),
    ("R", "Grasslands and lands dominated by forbs, mosses or lichens", "#a6d96a"),
    ("S", "Heathland, scrub and tundra", "#bf812d"),
    ("Q", "Wetlands", "#4393c3"),
    ("U", "Inland habitats with no or little soil and mostly with sparse vegetation", "#bdbdbd"),
    ("V", "Vegetated man-made habitats", "#fee08b"),
    ("J", "Constructed, industrial and other artificial habitats", "#762a83"),
)
LEVEL2 = (
    ("T1", "Deciduous broadleaved forest", "#238b45"),
    ("T3", "Coniferous forest", "#00441b"),
    ("R1", "Dry grasslands", "#d9ef8b"),
    ("R2", "Mesic grasslands", "#66bd63"),
    ("R4", "Alpine and subalpine grasslands", "#b8e186"),
    ("S3", "Temperate and mediterranean-montane scrub", "#dfc27d"),
    ("S5", "Maquis, arborescent matorral and thermo-Mediterranean scrub", "#8c510a"),
    ("Q5", "Helophyte beds", "#4393c3"),
    ("U2", "Screes", "#bdbdbd"),
    ("V1", "Arable land and market gardens", "#fee08b"),
    ("J1", "Buildings of cities, towns and villages", "#762a83"),
)
LEVEL3 = (
    ("T17", "Fagus forest on non-acid soils", "#41ab5d"),
    ("T19", "Temperate and submediterranean thermophilous deciduous forest", "#78c679"),
    ("T31", "Temperate mountain Picea forest", "#005a32"),
    ("T32", "Temperate mountain Abies forest", "#238443"),
    ("R1A", "Semi-dry perennial calcareous grassland", "#e6f598"),
    ("R22", "Low and medium altitude hay meadow", "#66bd63"),
    ("R43", "Temperate acidophilous alpine grassland", "#b8e186"),
    ("S36", "Submediterranean deciduous scrub", "#dfc27d"),
    ("S51", "Mediterranean maquis", "#8c510a"),
    ("U22", "Temperate high-mountain siliceous scree", "#bdbdbd"),
    ("Q51", "Tall helophyte bed", "#4393c3"),
    ("V11", "Intensive unmixed crops", "#fee08b"),
    ("J11", "Residential buildings of city and town centres", "#762a83"),
)


def hierarchy() -> list[ClassEntry]:
    """Every class of the three levels, each with its parent's code (values: position)."""
    out: list[ClassEntry] = []
    for level in (LEVEL1, LEVEL2, LEVEL3):
        for code, name, color in level:
            parent = None if len(code) == 1 else code[:-1]
            out.append(ClassEntry(value=len(out), code=code, name=name, color=color,
                                  parent=parent))  # fmt: skip
    return out


def true_habitat(fields: dict[str, npt.NDArray[np.generic]]) -> npt.NDArray[np.uint8]:
    """The index (into :data:`LEVEL3`) of each point's true level-3 habitat, from its land
    cover (sdmatlas.demo.world) and climate."""
    lc = np.asarray(fields["landcover"])
    t = np.asarray(fields["temperature"], np.float64)
    p = np.asarray(fields["precipitation"], np.float64)
    z = np.asarray(fields["elevation"], np.float64)
    code = {c: i for i, (c, _, _) in enumerate(LEVEL3)}
    out = np.full(lc.shape, code["R22"], np.uint8)
    grass = lc == 2
    out[grass & (p < 1100)] = code["R1A"]
    out[grass & (z >= 1500)] = code["R43"]
    out[lc == 3] = np.where(t[lc == 3] < 9.5, code["T17"], code["T19"])
    out[lc == 4] = np.where(p[lc == 4] >= 1700, code["T31"], code["T32"])
    out[lc == 5] = np.where(t[lc == 5] >= 13.0, code["S51"], code["S36"])
    out[lc == 6] = code["U22"]
    out[lc == 8] = code["Q51"]
    out[lc == 1] = code["V11"]
    out[lc == 7] = code["J11"]
    return out
