"""Virtual species with known response curves (the virtual-species approach of SDM research).

Each species has Gaussian responses to temperature and precipitation, a
logistic response to elevation, a preference weight per land-cover class, and
optionally a geographic range limit (endemics). Environmental suitability is
the product of the responses; the probability of presence is a logistic
transform of suitability whose midpoint sets the species' prevalence
(Leroy et al. 2016, *virtualspecies*, Ecography 39:599). Species of one genus
share a niche centre, so that genera and families carry a signal.

Names are plainly artificial (genus stems built on "Virt-/Fict-/Simul-" and a
"vs" number as epithet) so that nobody mistakes them for real taxa.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from sdmatlas.demo.world import LANDCOVER_CLASSES, Fields

FAMILIES = ["Fictaceae", "Simulaceae", "Virtaceae", "Pseudoflorae", "Synthaceae"]
GENUS_STEMS = [
    "Fictanthus",
    "Simulago",
    "Virtella",
    "Pseudocarpa",
    "Synthemis",
    "Fictoria",
    "Simulopsis",
    "Virtonia",
    "Pseudolia",
    "Synthora",
    "Fictagrostis",
    "Simularia",
    "Virtonella",
    "Pseudastrum",
    "Synthaea",
    "Fictilia",
    "Simulina",
    "Virtulus",
    "Pseudanthe",
    "Synthiella",
    "Fictusa",
    "Simulorchis",
    "Virtaster",
    "Pseudoferula",
    "Synthopsis",
]


@dataclass(frozen=True)
class _Genus:
    name: str
    family: str
    t: float
    p: float
    z: float
    lc: npt.NDArray[np.float64]


@dataclass(frozen=True)
class VirtualSpecies:
    id: int
    scientific_name: str
    genus: str
    family: str
    temp_opt: float
    temp_tol: float
    prec_opt: float
    prec_tol: float
    elev_mid: float
    elev_slope: float  # > 0: favours high ground, < 0: lowlands
    landcover_pref: dict[int, float] = field(default_factory=dict)
    range_centre: tuple[float, float] | None = None  # EPSG:3035 x, y (endemics)
    range_radius: float | None = None  # metres
    alpha: float = 0.08  # logistic steepness
    beta: float = 0.5  # logistic midpoint, set from the target prevalence
    max_prob: float = 0.95
    protected: bool = False
    invasive: bool = False
    endemic: bool = False


def suitability(
    sp: VirtualSpecies,
    x: npt.NDArray[np.float64],
    y: npt.NDArray[np.float64],
    fields: Fields,
) -> npt.NDArray[np.float64]:
    t, p, z = fields["temperature"], fields["precipitation"], fields["elevation"]
    lc = np.asarray(fields["landcover"])
    s = np.exp(-0.5 * ((t - sp.temp_opt) / sp.temp_tol) ** 2)
    s = s * np.exp(-0.5 * ((p - sp.prec_opt) / sp.prec_tol) ** 2)
    s = s / (1.0 + np.exp(-sp.elev_slope * (z - sp.elev_mid) / 100.0))
    pref = np.zeros(max(LANDCOVER_CLASSES) + 1)
    for cls, w in sp.landcover_pref.items():
        pref[cls] = w
    s = s * pref[lc]
    if sp.range_centre is not None and sp.range_radius is not None:
        d2 = (x - sp.range_centre[0]) ** 2 + (y - sp.range_centre[1]) ** 2
        s = s * np.exp(-0.5 * d2 / sp.range_radius**2)
    return np.asarray(s)


def probability(
    sp: VirtualSpecies,
    x: npt.NDArray[np.float64],
    y: npt.NDArray[np.float64],
    fields: Fields,
) -> npt.NDArray[np.float32]:
    """The true probability of presence at projected points."""
    s = suitability(sp, x, y, fields)
    return (sp.max_prob / (1.0 + np.exp(-(s - sp.beta) / sp.alpha))).astype(np.float32)


def simulate_species(
    n_species: int,
    land_x: npt.NDArray[np.float64],
    land_y: npt.NDArray[np.float64],
    land_fields: Fields,
    seed: int = 42,
) -> list[VirtualSpecies]:
    """Draw ``n_species`` species whose niches sit inside the sampled environment.

    ``land_*`` are the coordinates and covariate values of land pixels; they
    are used to place niche centres in environments that exist and to set each
    species' logistic midpoint to hit its target prevalence.
    """
    rng = np.random.default_rng(seed)
    t, p, z = (np.asarray(land_fields[k]) for k in ("temperature", "precipitation", "elevation"))
    n_genera = min(len(GENUS_STEMS), max(5, n_species // 8))
    genera = []
    for gi in range(n_genera):
        i = rng.integers(len(t))  # niche centre at an existing environment
        genera.append(
            _Genus(
                name=GENUS_STEMS[gi],
                family=FAMILIES[gi % len(FAMILIES)],
                t=float(t[i]),
                p=float(p[i]),
                z=float(z[i]),
                lc=rng.dirichlet(np.full(len(LANDCOVER_CLASSES), 0.6)),
            )
        )
    out: list[VirtualSpecies] = []
    for k in range(n_species):
        g = genera[k % n_genera]
        sid = k + 1
        role = rng.random()
        protected = role < 0.10
        invasive = 0.10 <= role < 0.15
        endemic = 0.15 <= role < 0.23
        lc_w = 0.5 * g.lc + 0.5 * rng.dirichlet(np.full(len(LANDCOVER_CLASSES), 0.8))
        if invasive:  # disturbance lovers with broad tolerances
            lc_w = lc_w + np.array([0.3, 0.1, 0, 0, 0.1, 0, 0.5, 0.1])
        lc_w = lc_w / lc_w.max()
        centre = None
        radius = None
        if endemic:
            i = rng.integers(len(land_x))
            centre = (float(land_x[i]), float(land_y[i]))
            radius = float(rng.uniform(20_000, 50_000))
        sp = VirtualSpecies(
            id=sid,
            scientific_name=f"{g.name} vs{sid:04d}",
            genus=g.name,
            family=g.family,
            temp_opt=g.t + float(rng.normal(0, 1.5)),
            temp_tol=float(rng.uniform(2.0, 5.0) * (1.6 if invasive else 1.0)),
            prec_opt=g.p + float(rng.normal(0, 150)),
            prec_tol=float(rng.uniform(250, 700) * (1.6 if invasive else 1.0)),
            elev_mid=g.z + float(rng.normal(0, 200)),
            elev_slope=float(rng.choice([-1, 1]) * rng.uniform(0.1, 1.0)),
            landcover_pref={
                c: round(float(w), 4) for c, w in zip(LANDCOVER_CLASSES, lc_w, strict=True)
            },
            range_centre=centre,
            range_radius=radius,
            alpha=float(rng.uniform(0.015, 0.05)),
            protected=protected,
            invasive=invasive,
            endemic=endemic,
        )
        # Target prevalence: rare for protected species, common for invasive ones.
        prevalence = 0.03 if protected else (0.35 if invasive else float(rng.uniform(0.05, 0.3)))
        s = suitability(sp, land_x, land_y, land_fields)
        beta = float(np.quantile(s, 1.0 - prevalence))
        out.append(VirtualSpecies(**{**asdict(sp), "beta": max(beta, 1e-3)}))
    return out


#: The simulated IUCN category mix of the demo's virtual species (a plausible one for a
#: European flora: most Least Concern, a fifth threatened); endemics and protected
#: species are three times as likely to be threatened, invasive ones are never.
IUCN_MIX = {"LC": 0.58, "NT": 0.18, "VU": 0.13, "EN": 0.08, "CR": 0.03}


def simulated_iucn(sp: VirtualSpecies) -> str:
    """A species' simulated IUCN category, drawn from its own random stream (so adding
    it changed no other simulated value)."""
    if sp.invasive:
        return "LC"
    rng = np.random.default_rng(1_000_003 + sp.id)
    cats = list(IUCN_MIX)
    w = np.array([IUCN_MIX[c] for c in cats])
    if sp.endemic or sp.protected:
        w[2:] *= 3.0
    return str(rng.choice(cats, p=w / w.sum()))


def write_species_csv(species: list[VirtualSpecies], path: Path) -> None:
    """The species list with taxonomy, status flags, the simulated IUCN category and the
    true response parameters."""
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(
            [
                "species_id",
                "scientific_name",
                "genus",
                "family",
                "protected",
                "invasive",
                "endemic",
                "iucn",
                "niche",
            ]
        )
        for sp in species:
            niche = {
                k: v
                for k, v in asdict(sp).items()
                if k
                not in {
                    "id",
                    "scientific_name",
                    "genus",
                    "family",
                    "protected",
                    "invasive",
                    "endemic",
                }
            }
            w.writerow(
                [
                    sp.id,
                    sp.scientific_name,
                    sp.genus,
                    sp.family,
                    int(sp.protected),
                    int(sp.invasive),
                    int(sp.endemic),
                    simulated_iucn(sp),
                    json.dumps(niche, sort_keys=True),
                ]
            )


def read_species_csv(path: Path) -> list[VirtualSpecies]:
    out = []
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            niche = json.loads(row["niche"])
            niche["landcover_pref"] = {int(k): v for k, v in niche["landcover_pref"].items()}
            if niche.get("range_centre") is not None:
                niche["range_centre"] = tuple(niche["range_centre"])
            out.append(
                VirtualSpecies(
                    id=int(row["species_id"]),
                    scientific_name=row["scientific_name"],
                    genus=row["genus"],
                    family=row["family"],
                    protected=row["protected"] == "1",
                    invasive=row["invasive"] == "1",
                    endemic=row["endemic"] == "1",
                    **niche,
                )
            )
    return out
