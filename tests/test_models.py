"""Model cards and adapters: schema checks, ONNX vs PyTorch, refusal of mismatched models."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from sdmatlas.errors import ModelCardError, ModelMismatchError
from sdmatlas.models import load_adapter, load_card
from sdmatlas.models.adapters import adapter_class, apply_activation
from sdmatlas.models.torch_adapter import TorchAdapter


def write_card(tmp_path: Path, demo_card: Path, **changes: Any) -> Path:
    """A copy of the demo card (with its model files) with some fields changed."""
    data = yaml.safe_load(demo_card.read_text())
    for f in [data["file"], *data["alternates"].values()]:
        shutil.copy(demo_card.parent / f, tmp_path / f)
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    path = tmp_path / "card.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_demo_card_is_valid(demo_card: Path) -> None:
    card = load_card(demo_card)
    assert card.n_species == 200
    assert [i.name for i in card.inputs] == [
        "elevation",
        "temperature",
        "precipitation",
        "landcover",
    ]
    assert card.n_channels == 3 + 8
    assert card.patch_size == 9 and card.halo == 4
    assert card.metrics["auc_mean"] > 0.7
    assert card.model_path().exists() and card.model_path("torchscript").exists()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"patch_size": 8}, "patch_size must be odd"),
        ({"licence": None}, "licence: Field required"),
        ({"activation": "relu"}, "activation"),
        ({"file": "missing.onnx"}, "missing.onnx, which does not exist"),
        ({"inputs": [{"name": "t", "kind": "continuous", "mean": 0, "std": 0}]}, "std"),
        (
            {"species": [{"id": 1, "name": "a"}, {"id": 1, "name": "b"}]},
            "species ids must be unique",
        ),
        ({"unknown_field": 1}, "unknown_field"),
    ],
)
def test_invalid_cards_are_refused_with_the_field_named(
    tmp_path: Path, demo_card: Path, changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(ModelCardError, match=message):
        load_card(write_card(tmp_path, demo_card, **changes))


def test_a_card_that_is_not_a_mapping(tmp_path: Path) -> None:
    p = tmp_path / "card.yaml"
    p.write_text("- just\n- a list\n")
    with pytest.raises(ModelCardError, match="must be a mapping"):
        load_card(p)


def test_adapters_are_found_by_entry_point() -> None:
    assert adapter_class("onnx").framework == "onnx"
    assert adapter_class("torchscript").framework == "torchscript"
    with pytest.raises(ModelCardError, match="no adapter for framework 'tensorflow'"):
        adapter_class("tensorflow")


def test_onnx_and_pytorch_agree(demo_card: Path, rng: np.random.Generator) -> None:
    card = load_card(demo_card)
    onnx = load_adapter(card)
    ts = load_adapter(card, framework="torchscript")
    assert (onnx.framework, ts.framework) == ("onnx", "torchscript")
    x = rng.normal(size=(1000, card.n_channels, card.patch_size, card.patch_size)).astype(
        np.float32
    )
    a, b = onnx.predict(x), ts.predict(x)
    assert a.shape == (1000, 200)
    assert np.abs(a - b).max() <= 1e-5
    assert ((a >= 0) & (a <= 1)).all()


def test_torch_adapter_takes_an_in_memory_module(demo_card: Path, rng: np.random.Generator) -> None:
    card = load_card(demo_card)
    module = torch.jit.load(str(card.model_path("torchscript")))
    adapter = TorchAdapter.from_module(module, card.activation)
    x = rng.normal(size=(8, card.n_channels, 9, 9)).astype(np.float32)
    assert np.abs(adapter.predict(x) - load_adapter(card).predict(x)).max() <= 1e-5


def test_species_count_mismatch_is_refused(tmp_path: Path, demo_card: Path) -> None:
    species = yaml.safe_load(demo_card.read_text())["species"][:199]
    card = load_card(write_card(tmp_path, demo_card, species=species))
    with pytest.raises(ModelMismatchError, match="returns 200 outputs but the card lists 199"):
        load_adapter(card)


def test_input_mismatch_is_refused(tmp_path: Path, demo_card: Path) -> None:
    inputs = yaml.safe_load(demo_card.read_text())["inputs"][:3]  # land cover dropped
    card = load_card(write_card(tmp_path, demo_card, inputs=inputs))
    with pytest.raises(
        ModelMismatchError, match=r"does not accept the card's input \[N, 3, 9, 9\]"
    ):
        load_adapter(card)


def test_patch_size_mismatch_is_refused(tmp_path: Path, demo_card: Path) -> None:
    card = load_card(write_card(tmp_path, demo_card, patch_size=3))
    # the CNN branch needs at least 5 x 5; a 3 x 3 patch cannot pass through it
    with pytest.raises(ModelMismatchError, match="patch 3"):
        load_adapter(card)


def test_activations() -> None:
    x = np.array([[-1000.0, 0.0, 1000.0]], dtype=np.float32)
    assert apply_activation(x, "sigmoid").tolist() == [[0.0, 0.5, 1.0]]
    sm = apply_activation(np.array([[1.0, 1.0]], dtype=np.float32), "softmax")
    assert np.allclose(sm, 0.5)
    assert apply_activation(x, "identity") is not None
