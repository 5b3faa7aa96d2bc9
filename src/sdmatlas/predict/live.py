"""Live point prediction: one covariate patch read around a pixel, one model call.

The patch is read, checked and encoded exactly as a chunk task does
(:func:`sdmatlas.predict.tasks.chunk_codes`), and the probabilities are quantised the
same way, so a live answer equals the cube's code at that pixel (a test checks it).
One :class:`LivePredictor` per API process keeps the models' sessions, the covariate
handles (per thread) and a bounded cache of answers keyed by the model digest, the
covariates' checksums and the pixel.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from sdmatlas import quantize
from sdmatlas.catalog.covariates import CovariateSet, request_digest
from sdmatlas.errors import CovariateError, NotFoundError, StorageUnavailableError
from sdmatlas.models.adapters import Device, ModelAdapter, load_adapter
from sdmatlas.models.card import ModelCard
from sdmatlas.predict.covariates import CovariateStack
from sdmatlas.predict.inputs import check_values, encode, patches


@dataclass(frozen=True)
class LivePoint:
    inside: bool
    row: int
    col: int
    species_ids: npt.NDArray[np.int64]
    species_names: list[str]
    codes: npt.NDArray[np.uint8]
    cached: bool


@dataclass(frozen=True)
class _Model:
    """What every live prediction of one registration reuses (made once per process)."""

    card: ModelCard
    adapter: ModelAdapter
    stack: CovariateStack
    ids: npt.NDArray[np.int64]
    names: list[str]
    key: str  # model digest and covariate checksums: the answers' cache key prefix


class LivePredictor:
    """Per-process state of live predictions (thread-safe)."""

    def __init__(self, device: Device = "cpu", cache_bytes: int = 32 * 2**20) -> None:
        self.device: Device = device
        self.cache_bytes = cache_bytes
        self._cached = 0
        self._models: dict[tuple[int, str], _Model] = {}
        self._answers: OrderedDict[tuple[str, int, int], npt.NDArray[np.uint8]] = OrderedDict()
        self._lock = threading.Lock()
        self._local = threading.local()

    def _model(self, cov: CovariateSet) -> _Model:
        # re-registering the same model and period with other files gives other
        # checksums, so another entry: a stale model is never reused
        key = f"{cov.model_digest}:{request_digest(cov.checksums)}"
        with self._lock:
            hit = self._models.get((cov.id, key))
        if hit is not None:
            return hit
        card = cov.card()
        if card.digest() != cov.model_digest:
            raise StorageUnavailableError(
                f"model {cov.model}'s files changed since its covariates were registered: "
                "register them again"
            )
        try:
            stack = cov.stack()
        except NotFoundError as exc:
            # a server-side fault: the file's path goes to the log, not to the client
            raise StorageUnavailableError(
                f"a covariate of model {cov.model} for {cov.period} is missing on the "
                "server (see its log)"
            ) from exc
        made = _Model(
            card,
            load_adapter(card, device=self.device, threads=1),
            stack,
            np.asarray(card.species_ids, np.int64),
            [sp.name for sp in card.species],
            key,
        )
        with self._lock:
            return self._models.setdefault((cov.id, key), made)

    def _inside_coverage(self, cov: CovariateSet, row: int, col: int) -> bool:
        import rasterio
        from rasterio.windows import Window

        handles: dict[int, Any] | None = getattr(self._local, "coverage", None)
        if handles is None:
            handles = self._local.coverage = {}
        src = handles.get(cov.id)
        if src is None:
            src = handles[cov.id] = rasterio.open(cov.territory_path)
        value = src.read(1, window=Window(col, row, 1, 1), masked=True)
        return bool(value.filled(0)[0, 0] != 0)

    def predict(self, cov: CovariateSet, lon: float, lat: float) -> LivePoint:
        m = self._model(cov)
        card, grid = m.card, cov.grid
        r, c = (int(v) for v in grid.rowcol_from_lonlat(lon, lat))
        key = (m.key, r, c)
        with self._lock:  # only pixels inside the coverage are cached
            hit = self._answers.get(key)
            if hit is not None:
                self._answers.move_to_end(key)
        if hit is not None:
            return LivePoint(True, r, c, m.ids, m.names, hit, cached=True)
        nodata = np.full(len(m.ids), quantize.NODATA, np.uint8)
        outside = LivePoint(False, r, c, m.ids, m.names, nodata, cached=False)
        if not grid.contains(r, c) or not self._inside_coverage(cov, r, c):
            return outside
        h = card.halo
        try:
            windows = {
                spec.name: m.stack.read(spec.name, grid, r - h, r + h + 1, c - h, c + h + 1)
                for spec in card.inputs
            }
        except OSError as exc:
            raise StorageUnavailableError(
                f"the covariates of model {cov.model} for {cov.period} cannot be read"
            ) from exc
        centre = {k: v[h : h + 1, h : h + 1] for k, v in windows.items()}
        try:
            check_values(card, centre, np.ones((1, 1), bool), where=" at this point")
        except CovariateError:
            return outside
        x = patches(encode(card, windows), np.array([0]), np.array([0]), card.patch_size)
        codes = quantize.quantize(m.adapter.predict(x))[0]
        with self._lock:
            if key not in self._answers:
                self._answers[key] = codes
                self._cached += codes.nbytes
            while self._answers and self._cached > self.cache_bytes:
                self._cached -= self._answers.popitem(last=False)[1].nbytes
        return LivePoint(True, r, c, m.ids, m.names, codes, cached=False)
