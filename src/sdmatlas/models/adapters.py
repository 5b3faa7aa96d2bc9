"""The adapter contract between sdmatlas and a trained model.

An adapter runs one model file: ``predict(x)`` takes ``float32[N, C, P, P]``
(already normalised, see :mod:`sdmatlas.models.card`) and returns
``float32[N, S]`` probabilities, the card's activation applied. Adapters are
found by framework name through the ``sdmatlas.adapters`` entry-point group,
so a research team can ship its own in a separate package without touching
sdmatlas (as xarray finds its storage backends).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from functools import cache
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import numpy.typing as npt

from sdmatlas.errors import ModelCardError, ModelMismatchError
from sdmatlas.models.card import ModelCard

Activation = Literal["sigmoid", "softmax", "identity"]
Device = Literal["auto", "cpu", "cuda"]

ENTRY_POINT_GROUP = "sdmatlas.adapters"


def apply_activation(
    raw: npt.NDArray[np.float32], activation: Activation
) -> npt.NDArray[np.float32]:
    """Turn raw model outputs into probabilities (numerically stable forms)."""
    x: npt.NDArray[np.float32] = np.asarray(raw, dtype=np.float32)
    if activation == "identity":
        return x
    if activation == "sigmoid":
        # exp of a non-positive number never overflows
        e = np.exp(-np.abs(x))
        return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(np.float32)
    shifted = x - x.max(axis=1, keepdims=True)
    ex = np.exp(shifted)
    out: npt.NDArray[np.float32] = (ex / ex.sum(axis=1, keepdims=True)).astype(np.float32)
    return out


class ModelAdapter(ABC):
    """Runs one model file on batches of normalised patches."""

    framework: ClassVar[str]

    def __init__(
        self, path: Path, activation: Activation, device: Device = "auto", threads: int = 1
    ) -> None:
        self.path = Path(path)
        self.activation: Activation = activation
        self.requested_device: Device = device
        self.threads = threads

    @property
    @abstractmethod
    def device(self) -> str:
        """Where the model actually runs ('cpu', 'cuda')."""

    @abstractmethod
    def raw(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """The model's own output for a batch."""

    def predict(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Probabilities ``[N, S]`` for a batch ``[N, C, P, P]``."""
        if x.ndim != 4:
            raise ModelMismatchError(f"model input must be [N, C, P, P], got shape {x.shape}")
        if x.shape[0] == 0:
            return np.zeros((0, self.output_width(x.shape[1], x.shape[2])), np.float32)
        return apply_activation(
            self.raw(np.ascontiguousarray(x, dtype=np.float32)), self.activation
        )

    def output_width(self, channels: int, patch: int) -> int:
        """Number of model outputs, found by running one zero patch."""
        probe = np.zeros((1, channels, patch, patch), np.float32)
        return int(self.raw(probe).shape[1])


def adapter_class(framework: str) -> type[ModelAdapter]:
    """The adapter class registered for ``framework``."""
    registry = _registry()
    if framework not in registry:
        raise ModelCardError(
            f"no adapter for framework {framework!r}; installed: {sorted(registry)}"
        )
    cls = registry[framework].load()  # an importlib.metadata.EntryPoint
    if not (isinstance(cls, type) and issubclass(cls, ModelAdapter)):
        raise ModelCardError(f"entry point {framework!r} is not a ModelAdapter subclass")
    return cls


@cache
def _registry() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def load_adapter(
    card: ModelCard, framework: str | None = None, device: Device = "auto", threads: int = 1
) -> ModelAdapter:
    """Open the card's model (or one of its alternates) and check it against the card.

    The model is probed with one zero patch of the card's shape: a model that
    refuses that shape, or returns another number of outputs than the card has
    species, is refused here, before any prediction work starts.
    """
    fw = framework or card.framework
    cls = adapter_class(fw)
    adapter = cls(card.model_path(fw), card.activation, device=device, threads=threads)
    try:
        width = adapter.output_width(card.n_channels, card.patch_size)
    except ModelMismatchError:
        raise
    except Exception as exc:
        raise ModelMismatchError(
            f"model {adapter.path.name} does not accept the card's input "
            f"[N, {card.n_channels}, {card.patch_size}, {card.patch_size}] "
            f"({len(card.inputs)} covariates, patch {card.patch_size}): {exc}"
        ) from exc
    if width != card.n_species:
        raise ModelMismatchError(
            f"model {adapter.path.name} returns {width} outputs but the card lists "
            f"{card.n_species} species"
        )
    return adapter
