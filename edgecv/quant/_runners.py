"""Minimal runners over a model *file* (or an in-memory OpenVINO model), for measuring candidates while quantizing.

The quantizer has to score many intermediate models (each method, each set of kept-float layers) that are not
bundle artifacts yet, so it cannot go through ``Runner.from_bundle``. These two implement the same
:class:`~edgecv.backends.base.Runner` interface, so task metrics take either them or any backend runner.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgecv._lazy import lazy_import
from edgecv.backends.base import Runner
from edgecv.types import TensorSpec

_ORT_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(uint8)": "uint8",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int8)": "int8",
}


def _dims(shape: Any) -> tuple[int | None, ...]:
    return tuple(d if isinstance(d, int) and d > 0 else None for d in shape)


class OrtFileRunner(Runner):
    """ONNX Runtime CPU session over an ``.onnx`` path; ``extra_outputs`` exposes intermediate tensors."""

    name = "onnxruntime"

    def __init__(
        self, path: str | Path, threads: int | None = None, precision: str = "fp32", model_bytes: bytes | None = None
    ) -> None:
        super().__init__()
        self.path = Path(path)
        self.threads = threads
        self.precision = precision
        self._model_bytes = model_bytes
        self._sess: Any = None

    def _load(self) -> None:
        ort = lazy_import("onnxruntime")
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if self.threads:
            opts.intra_op_num_threads = self.threads
            opts.inter_op_num_threads = 1
        src = self._model_bytes if self._model_bytes is not None else str(self.path)
        self._sess = ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])
        self._input_spec = [
            TensorSpec(i.name, _dims(i.shape), _ORT_DTYPES.get(i.type, "float32")) for i in self._sess.get_inputs()
        ]
        self._output_spec = [
            TensorSpec(o.name, _dims(o.shape), _ORT_DTYPES.get(o.type, "float32")) for o in self._sess.get_outputs()
        ]
        self.device = "CPU"

    def _close(self) -> None:
        self._sess = None

    def _infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [o.name for o in self._output_spec]
        return dict(zip(names, self._sess.run(names, feed)))


class OpenVINOModelRunner(Runner):
    """OpenVINO runner over an ``ov.Model``, an ``ov.CompiledModel`` or an IR/ONNX path."""

    name = "openvino"

    def __init__(
        self, model: Any, device: str | None = None, threads: int | None = None, precision: str = "fp32"
    ) -> None:
        super().__init__()
        self.model = model
        self.device = device or "CPU"
        self.threads = threads
        self.precision = precision
        self._compiled: Any = None
        self._request: Any = None

    def _load(self) -> None:
        ov = lazy_import("openvino")
        core = ov.Core()
        cfg: dict[str, Any] = {}
        if self.threads:
            cfg["INFERENCE_NUM_THREADS"] = int(self.threads)
        if self.precision in ("fp32", "int8") and self.device.upper().startswith("CPU"):
            # keep fp32 really fp32: OpenVINO CPU otherwise runs bf16 on AVX512-BF16/AMX machines. For int8 the
            # hint covers the layers left in float: unset, they ran in bf16, scoring a different model from the one
            # edgecv's runner deploys (and int8 deconvolutions feeding bf16 failed to compile on OpenVINO 2026.4)
            cfg["INFERENCE_PRECISION_HINT"] = "f32"
        if isinstance(self.model, ov.CompiledModel):  # NNCF's accuracy control hands us compiled models
            self._compiled = self.model
        else:
            model = self.model if not isinstance(self.model, (str, Path)) else core.read_model(str(self.model))
            self._compiled = core.compile_model(model, self.device, cfg)
        self._request = self._compiled.create_infer_request()
        from edgecv.backends.openvino import port_name

        self._input_spec = [TensorSpec(port_name(p), _ov_dims(p), _ov_dtype(p)) for p in self._compiled.inputs]
        self._output_spec = [TensorSpec(port_name(p), _ov_dims(p), _ov_dtype(p)) for p in self._compiled.outputs]

    def _close(self) -> None:
        self._request = None
        self._compiled = None

    def _infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        res = self._request.infer(feed)
        return {spec.name: np.asarray(res[port]) for spec, port in zip(self._output_spec, self._compiled.outputs)}


def _ov_dims(port: Any) -> tuple[int | None, ...]:
    ps = port.get_partial_shape()
    return tuple(d.get_length() if d.is_static else None for d in ps)


def _ov_dtype(port: Any) -> str:
    name = port.get_element_type().get_type_name()
    return {"f32": "float32", "f16": "float16", "u8": "uint8", "i64": "int64", "i32": "int32"}.get(name, "float32")
