from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from sdmatlas import quantize


@given(arrays(np.float32, st.integers(1, 200), elements=st.floats(0, 1, width=32)))
def test_round_trip_error_is_at_most_half_a_step(p: np.ndarray) -> None:
    q = quantize.quantize(p)
    assert q.max() <= quantize.MAX_CODE
    assert np.abs(quantize.dequantize(q) - p).max() <= 0.5 / 254 + 1e-6


def test_nodata_and_clipping() -> None:
    q = quantize.quantize(np.array([np.nan, -0.2, 0.0, 1.0, 1.7], dtype=np.float32))
    assert q.tolist() == [255, 0, 0, 254, 254]
    p = quantize.dequantize(q)
    assert np.isnan(p[0]) and p[3] == 1.0


def test_codes_are_exact_at_steps() -> None:
    k = np.arange(255)
    assert (quantize.quantize(k / 254.0) == k).all()
