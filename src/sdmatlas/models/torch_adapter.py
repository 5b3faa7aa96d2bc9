"""PyTorch adapter: a TorchScript file, or an ``nn.Module`` handed over in Python.

PyTorch is an optional extra (``pip install sdmatlas[torch]``); it is imported
only when this adapter is used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from sdmatlas.errors import ModelCardError
from sdmatlas.models.adapters import Activation, Device, ModelAdapter


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ModelCardError(
            "the PyTorch adapter needs PyTorch: pip install 'sdmatlas[torch]'"
        ) from exc
    return torch


class TorchAdapter(ModelAdapter):
    framework = "torchscript"

    def __init__(
        self,
        path: Path,
        activation: Activation,
        device: Device = "auto",
        threads: int = 1,
        module: Any | None = None,
    ) -> None:
        super().__init__(path, activation, device, threads)
        torch = _torch()
        use_cuda = device in ("auto", "cuda") and torch.cuda.is_available()
        if device == "cuda" and not use_cuda:
            raise ModelCardError("device 'cuda' asked for, but PyTorch sees no CUDA device")
        self._device = "cuda" if use_cuda else "cpu"
        if not use_cuda:
            torch.set_num_threads(threads)
        if module is None:
            try:
                module = torch.jit.load(str(path), map_location=self._device)
            except Exception as exc:
                raise ModelCardError(f"PyTorch cannot load {path} as TorchScript: {exc}") from exc
        self._module = module.to(self._device).eval()

    @classmethod
    def from_module(
        cls, module: Any, activation: Activation, device: Device = "auto", threads: int = 1
    ) -> TorchAdapter:
        """Wrap an in-memory ``torch.nn.Module`` (research code, no export needed)."""
        return cls(Path("<module>"), activation, device, threads, module=module)

    @property
    def device(self) -> str:
        return self._device

    def raw(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        torch = _torch()
        with torch.inference_mode():
            out = self._module(torch.from_numpy(x).to(self._device))
        return np.asarray(out.float().cpu().numpy(), dtype=np.float32)
