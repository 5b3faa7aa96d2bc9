"""Habitat maps through a plugged classifier: the card, the adapter contract (a text
classifier's too), the habitat class layers of a publish against ONNX Runtime run
directly, the derived levels, and bad cards."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import yaml

from sdmatlas.demo import DEMO_HABITATS
from sdmatlas.demo.build import grid_fields
from sdmatlas.demo.habitats import LEVEL3, hierarchy, true_habitat
from sdmatlas.errors import ModelCardError
from sdmatlas.models.habitat import (
    HabitatAdapter,
    HabitatCard,
    HabitatClassifier,
    SpeciesBatch,
    load_habitat_card,
)
from sdmatlas.predict.cube import open_cube
from sdmatlas.publish.indicators import SpeciesInfo
from sdmatlas.publish.release import PublishOptions, publish
from sdmatlas.quantize import NODATA
from sdmatlas.release import layout
from sdmatlas.storage import open_release


def _card_data() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(DEMO_HABITATS.read_text())
    return data


def _write_card(tmp_path: Path, data: dict[str, Any]) -> Path:
    (tmp_path / "m.onnx").write_bytes((DEMO_HABITATS.parent / data["file"]).read_bytes())
    path = tmp_path / "card.yaml"
    path.write_text(yaml.safe_dump({**data, "file": "m.onnx"}))
    return path


def test_the_demo_card_describes_a_three_level_hierarchy() -> None:
    card = load_habitat_card(DEMO_HABITATS)
    assert card.levels == 3 and card.outputs == [c for c, _, _ in LEVEL3]
    assert card.ancestor("T17", 2) == "T1" and card.ancestor("T17", 1) == "T"
    assert [c.code for c in card.level_classes(1)] == ["T", "R", "S", "Q", "U", "V", "J"]
    s2 = card.scheme(2)
    assert {c.code: c.parent for c in s2.classes}["T3"] == "T"
    # each output's value at level 2 is its parent's
    values = card.output_values(2)
    for out, v in zip(card.outputs, values, strict=True):
        assert s2.classes[v].code == out[:2]
    assert len(hierarchy()) == 7 + 11 + 13


_ORPHAN = {"code": "Z9", "name": "z", "color": "#000000", "parent": "Z"}


def _info(ids: np.ndarray) -> SpeciesInfo:
    none = np.zeros(len(ids), bool)
    return SpeciesInfo(ids=ids, protected=none, invasive=none, endemic=none)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(outputs=d["outputs"][:-1]), "12 outputs"),  # the model gives 13
        (lambda d: d["classes"].append(_ORPHAN), "parent 'Z' is not a class"),
        (lambda d: d.update(outputs=[*d["outputs"][:-1], "XX"]), "not in the class list"),
        (lambda d: d.update(outputs=[*d["outputs"][:-1], "T1"]), "finest level"),
        (lambda d: d.update(framework="tensorflow"), "no adapter for framework"),
    ],
    ids=["class-list-vs-outputs", "unknown-parent", "unknown-output", "mixed-levels", "framework"],
)
def test_a_bad_card_is_refused_with_the_reason(tmp_path: Path, change: Any, message: str) -> None:
    data = _card_data()
    change(data)
    with pytest.raises(ModelCardError, match=message):
        HabitatClassifier(load_habitat_card(_write_card(tmp_path, data)))


def test_a_classifier_of_other_species_is_refused_before_any_work(
    tmp_path: Path, cube: Path
) -> None:
    data = _card_data()
    data["input"]["species"][0]["id"] = 99_999
    card = _write_card(tmp_path, data)
    ids = np.asarray(open_cube(cube).species_ids, np.int64)
    info = _info(ids)
    with pytest.raises(ModelCardError, match="1 species the release does not have"):
        publish(cube, tmp_path / "rel", "h", info, PublishOptions(habitats=card))
    assert not (tmp_path / "rel").exists() or not any((tmp_path / "rel").iterdir())


def test_habitat_layers_equal_the_classifier_run_directly(tmp_path: Path, cube: Path) -> None:
    """habitat_l3 at every territory pixel is the argmax of ONNX Runtime's scores on the
    pixel's probabilities (code / 254, in the card's species order); levels 2 and 1 are
    the ancestors; off the territory, no class. On this window the classifier beats the
    majority class against the demo world's true habitats."""
    c = open_cube(cube)
    ids = np.asarray(c.species_ids, np.int64)
    info = _info(ids)
    publish(cube, tmp_path, "h", info, PublishOptions(habitats=DEMO_HABITATS, min_level_size=16))
    rel = open_release(str(tmp_path / "h"))
    assert list(rel.manifest.class_layers) == [
        "set_worst_status", "habitat_l3", "habitat_l2", "habitat_l1"
    ]  # fmt: skip
    card = load_habitat_card(DEMO_HABITATS)
    codes = c.read()  # [S, H, W]
    land = codes[0] != NODATA
    row = {int(s): i for i, s in enumerate(ids)}
    order = [row[s.id] for s in card.input.species]
    probs = (codes[order][:, land].T / 254).astype(np.float32)
    session = ort.InferenceSession(str(card.model_path()), providers=["CPUExecutionProvider"])
    want = session.run(None, {"probabilities": probs})[0].argmax(1)
    l3 = rel.read(layout.level_array(0, "habitat_l3"))
    np.testing.assert_array_equal(l3[land], want)
    assert (l3[~land] == 255).all()
    for depth in (2, 1):
        got = rel.read(layout.level_array(0, f"habitat_l{depth}"))
        np.testing.assert_array_equal(got[land], card.output_values(depth)[want])
    truth = true_habitat(grid_fields(c.grid)[2])[land]
    majority = np.bincount(truth).max() / truth.size
    accuracy = float((want == truth).mean())
    assert accuracy > majority + 0.2, (accuracy, majority)


class _GenusVotes(HabitatAdapter):
    """A stand-in for a text classifier (Pl@ntBERT-like): it reads the pixel's species
    names ranked by probability, as text, and scores each habitat by the names of the
    genera it lists: only what the names say, nothing of the probability vector."""

    framework = "genus-votes"

    def __init__(self, card: HabitatCard, words: dict[str, int]) -> None:
        super().__init__(card)
        self.words = words
        self.seen: list[str] = []

    def scores(self, batch: SpeciesBatch) -> np.ndarray:
        out = np.zeros((len(batch.probabilities), len(self.card.outputs)), np.float32)
        for i, ranked in enumerate(batch.ranked(self.card.input.top_k)):
            text = ", ".join(name for name, _ in ranked)  # the sentence a tokenizer reads
            self.seen.append(text)
            for rank, word in enumerate(text.split(", ")):
                genus = word.split()[0] if word else ""
                if genus in self.words:
                    out[i, self.words[genus]] += 1.0 / (1 + rank)
        return out


def test_a_text_classifier_plugs_in_through_the_same_interface() -> None:
    data = _card_data()
    data["input"]["kind"] = "names"
    data["input"]["top_k"] = 3
    card = HabitatCard.model_validate({**data, "framework": "genus-votes"})
    names = [s.name for s in card.input.species]
    genus_of = {n.split()[0] for n in names}
    words = {g: i % len(card.outputs) for i, g in enumerate(sorted(genus_of))}
    adapter = _GenusVotes(card, words)
    clf = HabitatClassifier(card, adapter)
    probs = np.zeros((2, len(names)), np.float32)
    probs[0, [5, 9, 2, 7]] = [0.9, 0.6, 0.3, 0.1]
    best = clf.classify(probs)
    # the first pixel's sentence: its three likeliest species, most likely first
    assert adapter.seen[-2] == ", ".join(names[i] for i in (5, 9, 2))
    assert adapter.seen[-1] == ""  # no species: an empty sentence
    assert best[0] == words[names[5].split()[0]]
