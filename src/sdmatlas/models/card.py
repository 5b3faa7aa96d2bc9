"""Model cards: what a plugged model expects and produces.

A card is a YAML or JSON file next to the model file. It says which covariates
the model reads, in which order and with which normalisation, on which CRS and
resolution, with which patch size, and which species its outputs are. The
model's input is ``float32[N, C, P, P]``: one channel per continuous covariate
(``(value - mean) / std``) and one channel per class of each categorical
covariate (one-hot), in the card's order; ``P`` is the patch size (1 for
per-pixel models). Its output is ``[N, S]``, one column per species in the
card's order, passed through the card's ``activation``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sdmatlas.errors import ModelCardError, NotFoundError

CARD_SCHEMA_VERSION: Literal[1] = 1


class ContinuousInput(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    kind: Literal["continuous"] = "continuous"
    units: str | None = None
    mean: float
    std: float = Field(gt=0)

    @property
    def n_channels(self) -> int:
        return 1


class CategoricalInput(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    kind: Literal["categorical"] = "categorical"
    classes: list[int] = Field(min_length=1, max_length=1024)
    labels: list[str] | None = None

    @field_validator("classes")
    @classmethod
    def _unique(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError("categorical classes must be unique")
        return v

    @property
    def n_channels(self) -> int:
        return len(self.classes)


CovariateInput = Annotated[ContinuousInput | CategoricalInput, Field(discriminator="kind")]


class SpeciesOutput(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: int = Field(ge=0, description="Stable species id (the catalog's key)")
    name: str = Field(min_length=1, max_length=256)


class CardGrid(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    crs: str = Field(description="CRS the covariates must be in, e.g. EPSG:3035")
    resolution: float = Field(gt=0, description="Covariate pixel size the model was trained at")


class ModelCard(BaseModel):
    """A validated model card."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    schema_version: Literal[1] = CARD_SCHEMA_VERSION
    name: str = Field(min_length=1, max_length=128)
    version: str = Field(min_length=1, max_length=64)
    description: str = ""
    licence: str = Field(min_length=1, description="Licence of the model weights (SPDX id)")
    framework: str = Field(description="Adapter that runs the file: 'onnx', 'torchscript', ...")
    file: str = Field(description="Model file, relative to the card")
    alternates: dict[str, str] = Field(
        default_factory=dict, description="Other exports of the same weights: framework -> file"
    )
    grid: CardGrid
    inputs: list[CovariateInput] = Field(min_length=1)
    patch_size: int = Field(ge=1, le=255)
    activation: Literal["sigmoid", "softmax", "identity"]
    species: list[SpeciesOutput] = Field(min_length=1)
    metrics: dict[str, Any] = Field(default_factory=dict)
    training: dict[str, Any] = Field(default_factory=dict)

    # Set by load_card, not part of the file.
    source: Path | None = Field(default=None, exclude=True)

    @field_validator("patch_size")
    @classmethod
    def _odd(cls, v: int) -> int:
        if v % 2 != 1:
            raise ValueError("patch_size must be odd so that the patch is centred on its pixel")
        return v

    @model_validator(mode="after")
    def _unique_names(self) -> ModelCard:
        names = [i.name for i in self.inputs]
        if len(set(names)) != len(names):
            raise ValueError(f"input names must be unique, got {names}")
        ids = [s.id for s in self.species]
        if len(set(ids)) != len(ids):
            raise ValueError("species ids must be unique")
        return self

    @property
    def n_channels(self) -> int:
        return sum(i.n_channels for i in self.inputs)

    @property
    def n_species(self) -> int:
        return len(self.species)

    @property
    def halo(self) -> int:
        """Pixels a patch reaches beyond its centre pixel."""
        return self.patch_size // 2

    @property
    def species_ids(self) -> list[int]:
        return [s.id for s in self.species]

    def model_path(self, framework: str | None = None) -> Path:
        """Absolute path of the model file for ``framework`` (the card's own by default)."""
        base = self.source.parent if self.source else Path.cwd()
        if framework is None or framework == self.framework:
            rel = self.file
        elif framework in self.alternates:
            rel = self.alternates[framework]
        else:
            have = [self.framework, *self.alternates]
            raise ModelCardError(f"card {self.name!r} has no {framework!r} file; it has {have}")
        return (base / rel).resolve()

    def digest(self) -> str:
        """SHA-256 of the card's content and of its model file."""
        h = hashlib.sha256(self.model_dump_json(exclude={"metrics", "training"}).encode())
        path = self.model_path()
        if path.exists():
            h.update(path.read_bytes())
        return h.hexdigest()


M = TypeVar("M", bound=BaseModel)


def read_card(path: Path, model: type[M], what: str = "model card") -> M:
    """A YAML or JSON card at ``path`` validated as ``model`` (its ``source`` set to the
    file), or a :class:`ModelCardError` naming every problem."""
    path = Path(path)
    if not path.exists():
        raise NotFoundError(f"{what} {path} does not exist")
    try:
        text = path.read_text()
        # libyaml's loader when PyYAML has it: a 10,000-species card parses in a
        # fraction of the pure-Python loader's time (on-demand jobs load it per job)
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        data = json.loads(text) if path.suffix == ".json" else yaml.load(text, Loader=loader)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise ModelCardError(f"{what} {path} is not readable YAML/JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelCardError(f"{what} {path} must be a mapping, got {type(data).__name__}")
    try:
        return model.model_validate({**data, "source": path.resolve()})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(card)'}: {e['msg']}" for e in exc.errors()
        )
        raise ModelCardError(f"{what} {path} is invalid: {problems}") from exc


def load_card(path: Path) -> ModelCard:
    """Read and validate a YAML or JSON model card; its model file must exist."""
    card = read_card(path, ModelCard)
    if not card.model_path().exists():
        raise ModelCardError(f"model card {path} names {card.file}, which does not exist")
    return card


def dump_card(card: ModelCard, path: Path) -> None:
    data = card.model_dump(mode="json", exclude={"source"})
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
