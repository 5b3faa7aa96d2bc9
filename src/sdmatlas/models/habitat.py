"""Habitat classifiers: a card and an adapter, like species models, over a pixel's species.

A habitat classifier reads what the species models predicted at a pixel and scores a
hierarchical list of habitat types (EUNIS: level 1 ``T``, level 2 ``T1``, level 3
``T17``). Its card (YAML or JSON beside the model file) gives:

- ``input``: ``kind: probabilities`` (the probability of each of the card's ``species``,
  in the card's order, ``float32[N, S]``), or ``kind: names`` (the pixel's species names
  ordered by probability, at most ``top_k``, with their probabilities: for a text model
  such as Pl@ntBERT, whose adapter tokenizes them);
- ``classes``: every class of the hierarchy (code, name, colour, parent code);
- ``outputs``: the codes the model scores, in its output order: the finest level.

The adapter for the card's ``framework`` turns a batch into scores ``[N, K]``; the
classifier takes the best-scoring output, and each coarser level is that class's
ancestor (a code's parent, as EUNIS derives levels 1 and 2 from level 3). Adapters are
found like model adapters, by entry point (group ``sdmatlas.habitat_adapters``); ONNX
over probabilities is built in. docs/habitats.md shows a text adapter plugged in.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, model_validator

from sdmatlas.classes import ClassEntry, ClassScheme
from sdmatlas.errors import ModelCardError
from sdmatlas.models.card import SpeciesOutput, read_card

ENTRY_POINT_GROUP = "sdmatlas.habitat_adapters"
F32 = npt.NDArray[np.float32]


class HabitatInput(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["probabilities", "names"]
    species: list[SpeciesOutput] = Field(min_length=1)
    top_k: int | None = Field(default=None, ge=1, description="names: at most this many")


class HabitatClass(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    code: str = Field(min_length=1, max_length=32)
    name: str = Field(min_length=1, max_length=300)
    color: str = Field(pattern=r"^#[0-9a-fA-F]{6}$")
    parent: str | None = None


class HabitatCard(BaseModel):
    """A validated habitat classifier card."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    schema_version: Literal[1] = 1
    kind: Literal["habitat-classifier"] = "habitat-classifier"
    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    version: str = Field(min_length=1, max_length=64)
    description: str = ""
    licence: str = Field(min_length=1)
    framework: str
    file: str
    input: HabitatInput
    classes: list[HabitatClass] = Field(min_length=1, max_length=2000)
    outputs: list[str] = Field(min_length=1, max_length=254)
    metrics: dict[str, Any] = Field(default_factory=dict)
    training: dict[str, Any] = Field(default_factory=dict)
    source: Path | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _hierarchy(self) -> HabitatCard:
        codes = [c.code for c in self.classes]
        if len(set(codes)) != len(codes):
            raise ValueError("class codes must be unique")
        known = set(codes)
        for c in self.classes:
            if c.parent is not None and c.parent not in known:
                raise ValueError(f"class {c.code}: parent {c.parent!r} is not a class")
        missing = [o for o in self.outputs if o not in known]
        if missing:
            raise ValueError(f"outputs {missing[:5]} are not in the class list")
        if len(set(self.outputs)) != len(self.outputs):
            raise ValueError("outputs must be unique")
        depths = {self.depth(o) for o in self.outputs}
        if len(depths) != 1:
            raise ValueError(f"outputs must all be at the finest level; depths {sorted(depths)}")
        return self

    def depth(self, code: str) -> int:
        """1 for a root class, 2 for its children, ..."""
        parent = {c.code: c.parent for c in self.classes}
        d, cur, seen = 1, parent[code], {code}
        while cur is not None:
            if cur in seen:
                raise ValueError(f"class {code}: its parents form a cycle")
            seen.add(cur)
            d, cur = d + 1, parent[cur]
        return d

    @property
    def levels(self) -> int:
        return self.depth(self.outputs[0])

    def ancestor(self, code: str, depth: int) -> str:
        parent = {c.code: c.parent for c in self.classes}
        while self.depth(code) > depth:
            code = str(parent[code])
        return code

    def level_classes(self, depth: int) -> list[HabitatClass]:
        """The classes at ``depth`` that outputs descend from, in the card's order."""
        used = {self.ancestor(o, depth) for o in self.outputs}
        return [c for c in self.classes if c.code in used and self.depth(c.code) == depth]

    def scheme(self, depth: int) -> ClassScheme:
        """The class layer scheme of ``depth`` (values: positions in :meth:`level_classes`)."""
        return ClassScheme(
            classes=tuple(
                ClassEntry(value=i, code=c.code, name=c.name, color=c.color, parent=c.parent)
                for i, c in enumerate(self.level_classes(depth))
            ),
            empty="no habitat (no species data)",
        )

    def output_values(self, depth: int) -> npt.NDArray[np.uint8]:
        """For each output, the value of its class at ``depth`` in :meth:`scheme`."""
        pos = {c.code: i for i, c in enumerate(self.level_classes(depth))}
        return np.asarray([pos[self.ancestor(o, depth)] for o in self.outputs], np.uint8)

    def model_path(self) -> Path:
        base = self.source.parent if self.source else Path.cwd()
        return (base / self.file).resolve()


def load_habitat_card(path: Path) -> HabitatCard:
    """Read and validate a habitat classifier card; its model file must exist."""
    path = Path(path)
    card = read_card(path, HabitatCard, "habitat card")
    if not card.model_path().exists():
        raise ModelCardError(f"habitat card {path} names {card.file}, which does not exist")
    return card


@dataclass(frozen=True)
class SpeciesBatch:
    """What a habitat adapter reads for N pixels: the card's species' probabilities."""

    probabilities: F32
    """``[N, S]`` in the card's species order."""
    names: list[str]
    """The card's species names, in its order."""

    def ranked(self, top_k: int | None) -> list[list[tuple[str, float]]]:
        """Per pixel: (name, probability) of the species with p > 0, most probable first,
        at most ``top_k`` (what a text classifier reads)."""
        out = []
        for row in self.probabilities:
            order = np.argsort(-row, kind="stable")
            keep = [i for i in order[: top_k or len(order)] if row[i] > 0]
            out.append([(self.names[i], float(row[i])) for i in keep])
        return out


class HabitatAdapter(ABC):
    """Scores habitat outputs for a batch of pixels."""

    framework: ClassVar[str]

    def __init__(self, card: HabitatCard, threads: int = 1) -> None:
        self.card = card
        self.threads = threads

    @abstractmethod
    def scores(self, batch: SpeciesBatch) -> F32:
        """``[N, K]`` scores over the card's outputs (higher is likelier)."""


class OnnxHabitatAdapter(HabitatAdapter):
    """An ONNX model over the probability vector: ``float32[N, S]`` in, ``[N, K]`` out."""

    framework = "onnx"

    def __init__(self, card: HabitatCard, threads: int = 1) -> None:
        import onnxruntime as ort

        super().__init__(card, threads)
        if card.input.kind != "probabilities":
            raise ModelCardError(
                f"habitat card {card.name}: the onnx adapter reads probabilities, not "
                f"{card.input.kind} (a text model needs its own adapter with its tokenizer)"
            )
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(
                str(card.model_path()), sess_options=opts, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:
            raise ModelCardError(f"ONNX Runtime cannot load {card.model_path()}: {exc}") from exc
        self._input = self._session.get_inputs()[0].name

    def scores(self, batch: SpeciesBatch) -> F32:
        x = np.ascontiguousarray(batch.probabilities, dtype=np.float32)
        return np.asarray(self._session.run(None, {self._input: x})[0], dtype=np.float32)


@cache
def _adapters() -> dict[str, type[HabitatAdapter]]:
    found: dict[str, type[HabitatAdapter]] = {OnnxHabitatAdapter.framework: OnnxHabitatAdapter}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found[ep.name] = ep.load()
    return found


class HabitatClassifier:
    """A card, its adapter, and the checks that they agree."""

    BATCH = 4096
    """Pixels a model call (bounds the probability batch: 4,096 x 10,000 species x 4 B)."""

    def __init__(self, card: HabitatCard, adapter: HabitatAdapter | None = None) -> None:
        self.card = card
        if adapter is None:
            cls = _adapters().get(card.framework)
            if cls is None:
                raise ModelCardError(
                    f"habitat card {card.name}: no adapter for framework {card.framework!r}; "
                    f"known: {sorted(_adapters())}"
                )
            adapter = cls(card)
        self.adapter = adapter
        self.names = [s.name for s in card.input.species]
        probe = self.adapter.scores(SpeciesBatch(np.zeros((2, len(self.names)), np.float32),
                                                 self.names))  # fmt: skip
        if probe.ndim != 2 or probe.shape != (2, len(card.outputs)):
            raise ModelCardError(
                f"habitat card {card.name}: the model gives {probe.shape[-1]} scores per "
                f"pixel, the card lists {len(card.outputs)} outputs; the class list must "
                "match the model's outputs, in order"
            )

    def rows_in(self, release_ids: npt.NDArray[np.int64]) -> npt.NDArray[np.intp]:
        """The release's species rows of the card's species (each must be there)."""
        row = {int(s): i for i, s in enumerate(release_ids)}
        missing = [s.id for s in self.card.input.species if s.id not in row]
        if missing:
            raise ModelCardError(
                f"habitat card {self.card.name} reads {len(missing)} species the release does "
                f"not have (ids {missing[:5]}); use a classifier trained on this species list"
            )
        return np.asarray([row[s.id] for s in self.card.input.species], np.intp)

    def classify(self, probabilities: F32) -> npt.NDArray[np.intp]:
        """The best output of each pixel ``probabilities[N, S]`` (card order)."""
        out = np.empty(len(probabilities), np.intp)
        for a in range(0, len(probabilities), self.BATCH):
            part = probabilities[a : a + self.BATCH]
            out[a : a + len(part)] = self.adapter.scores(SpeciesBatch(part, self.names)).argmax(1)
        return out


_classifiers: dict[str, HabitatClassifier] = {}
_lock = threading.Lock()


def classifier_for(card_path: Path) -> HabitatClassifier:
    """One classifier per card file and process (publish workers load it once)."""
    key = str(Path(card_path).resolve())
    with _lock:
        hit = _classifiers.get(key)
    if hit is None:
        hit = HabitatClassifier(load_habitat_card(Path(key)))
        with _lock:
            _classifiers.setdefault(key, hit)
    return hit
