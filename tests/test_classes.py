"""Class layers: the mode pyramid against a plain reference, schemes, counts, palettes."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from sdmatlas.classes import (
    NO_CLASS,
    ClassEntry,
    ClassScheme,
    block_class_counts,
    class_counts,
    mode_downsample,
    palette,
)
from sdmatlas.publish.categorical import WORST_STATUS


def mode_reference(classes: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The mode rule in words, one block at a time: among the (up to four) children of a
    2 x 2 block that have a class and territory below them, the class whose children
    stand for the most level-0 territory pixels; ties to the lowest class value; none:
    no class."""
    h, w = classes.shape
    out = np.full((-(-h // 2), -(-w // 2)), NO_CLASS, np.uint8)
    for by in range(out.shape[0]):
        for bx in range(out.shape[1]):
            total: dict[int, int] = {}
            for y in range(2 * by, min(2 * by + 2, h)):
                for x in range(2 * bx, min(2 * bx + 2, w)):
                    c, wt = int(classes[y, x]), int(weights[y, x])
                    if c != NO_CLASS and wt > 0:
                        total[c] = total.get(c, 0) + wt
            if total:
                out[by, bx] = min(total, key=lambda c: (-total[c], c))
    return out


@pytest.mark.parametrize("shape", [(8, 8), (7, 9), (1, 5), (33, 2)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_mode_pyramid_equals_the_reference(shape: tuple[int, int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    # few classes and small weights: ties are frequent
    classes = rng.choice([0, 1, 2, 7, NO_CLASS], size=shape).astype(np.uint8)
    weights = rng.integers(0, 4, size=shape)
    weights[classes == NO_CLASS] = rng.integers(0, 2, size=int((classes == NO_CLASS).sum()))
    got = mode_downsample(classes, weights)
    np.testing.assert_array_equal(got, mode_reference(classes, weights))


def test_ties_go_to_the_lowest_class_and_weights_count() -> None:
    c = np.array([[3, 1], [1, 3]], np.uint8)
    assert mode_downsample(c, np.ones((2, 2), np.int64))[0, 0] == 1  # a tie: lowest
    w = np.array([[4, 1], [1, 1]])
    assert mode_downsample(c, w)[0, 0] == 3  # 5 level-0 pixels against 2
    only = np.array([[NO_CLASS, NO_CLASS], [NO_CLASS, 2]], np.uint8)
    assert mode_downsample(only, np.ones((2, 2)))[0, 0] == 2  # the one valid child
    none = np.full((2, 2), NO_CLASS, np.uint8)
    assert mode_downsample(none, np.ones((2, 2)))[0, 0] == NO_CLASS


def test_a_pyramid_never_invents_a_class() -> None:
    """A level-k pixel holds a class present among the level-0 pixels below it."""
    rng = np.random.default_rng(5)
    level0 = rng.choice([0, 4, 9, NO_CLASS], size=(64, 48), p=[0.5, 0.2, 0.1, 0.2])
    level0 = level0.astype(np.uint8)
    weights = (level0 != NO_CLASS).astype(np.int64)
    cur, w, f = level0, weights, 1
    for _ in range(5):
        nxt = mode_downsample(cur, w)
        w = np.pad(w, [(0, w.shape[0] % 2), (0, w.shape[1] % 2)])
        w = w.reshape(w.shape[0] // 2, 2, w.shape[1] // 2, 2).sum(axis=(1, 3))
        cur, f = nxt, f * 2
        for y, x in np.argwhere(cur != NO_CLASS):
            below = level0[y * f : (y + 1) * f, x * f : (x + 1) * f]
            assert cur[y, x] in set(below.ravel().tolist())


def test_counts_and_block_counts() -> None:
    v = np.array([[0, 0, 4, NO_CLASS], [5, 1, 4, 4], [0, 2, 3, 1]], np.uint8)
    assert class_counts(v, WORST_STATUS).tolist() == [3, 2, 1, 1, 3, 1]
    b = block_class_counts(v, WORST_STATUS, 2)
    assert b.shape == (2, 2, 6)
    assert b[0, 0].tolist() == [2, 1, 0, 0, 0, 1] and b[0, 1].tolist() == [0, 0, 0, 0, 3, 0]
    assert b[1, 0].tolist() == [1, 0, 1, 0, 0, 0] and b.sum() == v.size - 1


def test_the_palette_gives_each_class_its_colour_and_clears_the_rest() -> None:
    pal = palette(WORST_STATUS)
    assert pal[4].tolist() == [0xD8, 0x1E, 0x05, 255]  # CR, the Red List's red
    assert pal[NO_CLASS, 3] == 0 and pal[100, 3] == 0


def test_a_scheme_refuses_bad_classes() -> None:
    ok = ClassEntry(value=0, code="A", name="a", color="#AABBCC")
    assert ok.color == "#aabbcc"
    with pytest.raises(ValidationError, match="0-254"):
        ClassEntry(value=255, code="A", name="a", color="#aabbcc")
    with pytest.raises(ValidationError, match="rrggbb"):
        ClassEntry(value=0, code="A", name="a", color="red")
    with pytest.raises(ValidationError, match="unique"):
        ClassScheme(classes=(ok, ok))
