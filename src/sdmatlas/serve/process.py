"""Per-process tuning that every way of starting the app needs.

``sdmatlas serve``, uvicorn or gunicorn given ``sdmatlas.serve.app:app_from_env``, the
Docker image and the tests all go through :func:`create_app`, which calls :func:`tune`:

* **One BLAS thread per process.** Index maps are interpolated with matrix products;
  idle OpenBLAS threads spin, and with several API workers on few cores that spinning
  costs more than any parallel product saves. threadpoolctl limits the loaded BLAS at
  run time (the ``*_NUM_THREADS`` variables only act before numpy is imported).
* **Prometheus's multiprocess directory.** prometheus_client reads
  ``PROMETHEUS_MULTIPROC_DIR`` when it is imported, so the variable itself belongs to
  whoever starts the workers (``sdmatlas serve`` makes and empties one; the Docker
  image sets one). Here a directory that is named but missing is created, since
  prometheus_client fails on a missing one.
* **The compiled index-map kernels** (:mod:`sdmatlas.serve.tiles.index_kernel`) are
  loaded from numba's cache (compiled the first time after an install, ~2 s) when the
  process starts, not on its first tile request (~0.5 s: importing numba and loading).
"""

from __future__ import annotations

import os
from pathlib import Path

from threadpoolctl import threadpool_limits


def tune() -> None:
    from sdmatlas.serve.tiles.tiling import warm_kernels

    threadpool_limits(1, user_api="blas")
    warm_kernels()
    metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if metrics_dir:
        Path(metrics_dir).mkdir(parents=True, exist_ok=True)
