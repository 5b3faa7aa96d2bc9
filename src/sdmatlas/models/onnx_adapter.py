"""ONNX Runtime adapter: the default for deployment, on CPU or a CUDA GPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from sdmatlas.errors import ModelCardError
from sdmatlas.models.adapters import Activation, Device, ModelAdapter


class OnnxAdapter(ModelAdapter):
    framework = "onnx"

    def __init__(
        self, path: Path, activation: Activation, device: Device = "auto", threads: int = 1
    ) -> None:
        super().__init__(path, activation, device, threads)
        available = ort.get_available_providers()
        want_cuda = device in ("auto", "cuda") and "CUDAExecutionProvider" in available
        if device == "cuda" and not want_cuda:
            raise ModelCardError(
                f"device 'cuda' asked for, but ONNX Runtime offers only {available} "
                "(install onnxruntime-gpu)"
            )
        providers = (
            ["CUDAExecutionProvider", "CPUExecutionProvider"]
            if want_cuda
            else ["CPUExecutionProvider"]
        )
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        # Idle inference threads must not spin: between model calls the same cores
        # extract patches, quantise and compress (measured in bench/predict.py).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self._session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        except Exception as exc:
            raise ModelCardError(f"ONNX Runtime cannot load {path}: {exc}") from exc
        self._input = self._session.get_inputs()[0].name
        self._device = "cuda" if want_cuda else "cpu"

    @property
    def device(self) -> str:
        return self._device

    def raw(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        out = self._session.run(None, {self._input: x})[0]
        return np.asarray(out, dtype=np.float32)
