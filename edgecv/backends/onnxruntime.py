"""ONNX Runtime backend: a Runner over an ``InferenceSession`` and a Builder for fp16 / int8 ONNX artifacts.

The fp32 model is the bundle's ``model.onnx``; other precisions are separate ONNX files recorded in the
manifest (``onnxruntime/<precision>/model.onnx``). onnxruntime and onnx are imported lazily.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgecv._lazy import lazy_import, version_of
from edgecv.backends.base import BuildConfig, Builder, Runner
from edgecv.errors import BackendError, ConfigError, MissingDependencyError
from edgecv.types import TensorSpec

if TYPE_CHECKING:
    from edgecv.bundle import Artifact, Bundle
    from edgecv.quant.calib import CalibrationSource

# ONNX Runtime's NodeArg.type strings → numpy dtype names
_ORT_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(uint8)": "uint8",
    "tensor(int8)": "int8",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(bool)": "bool",
    "tensor(bfloat16)": "bfloat16",
}

# what a user may pass as device → the execution providers to ask for, best first
_DEVICE_PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}

_PROVIDER_DEVICE = {
    "CPUExecutionProvider": "CPU",
    "CUDAExecutionProvider": "cuda",
    "TensorrtExecutionProvider": "tensorrt",
}


def _dim(d: Any) -> int | None:
    # symbolic dims come back as strings ("batch") or None
    return int(d) if isinstance(d, int) and d > 0 else None


def onnx_precision(path: str | Path) -> str | None:
    """The precision an ONNX file computes in, read from the graph: ``int8`` when it holds quantize ops,
    ``fp16`` when its weights are float16, else ``fp32``. None when onnx is not installed."""
    try:
        onnx = lazy_import("onnx")
    except MissingDependencyError:
        return None
    model = onnx.load(str(path), load_external_data=False)
    quant_ops = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger"}
    if any(n.op_type in quant_ops for n in model.graph.node):
        return "int8"
    f16 = onnx.TensorProto.FLOAT16
    if any(init.data_type == f16 for init in model.graph.initializer):
        return "fp16"
    return "fp32"


class OnnxRuntimeRunner(Runner):
    """Runs an ONNX file with ONNX Runtime.

    Args:
        model_path: the ``.onnx`` file.
        precision: the precision the file was built for, checked against the graph when onnx is installed;
            None reads it from the graph (``int8`` for Q/DQ models, ``fp16`` for half weights, else ``fp32``).
        device: ``"CPU"``, ``"cuda"`` / ``"cuda:N"`` or ``"tensorrt"``; None picks CUDA when its provider is
            present, else CPU.
        threads: ``SessionOptions.intra_op_num_threads`` (None: ONNX Runtime's default).
    """

    name = "onnxruntime"
    concurrent_infer = True  # InferenceSession.run is thread-safe; async_queue overlaps calls on one session

    def __init__(
        self,
        model_path: str | Path,
        precision: str | None = None,
        device: str | None = None,
        threads: int | None = None,
    ) -> None:
        super().__init__()
        self.model_path = Path(model_path)
        self.requested_precision = precision
        self.precision = precision or "fp32"
        self.requested_device = device
        self.threads = threads
        self._session: Any = None
        self._output_names: list[str] = []

    @classmethod
    def from_bundle(
        cls, bundle: Bundle, precision: str = "fp32", device: str | None = None, threads: int | None = None, **kw: Any
    ) -> OnnxRuntimeRunner:
        """A runner for ``bundle``: ``model.onnx`` for fp32, the compiled ONNX artifact otherwise."""
        if kw:
            raise ConfigError(f"onnxruntime runner: unexpected options {sorted(kw)}")
        if precision == "fp32":
            return cls(bundle.onnx_path, precision, device, threads)
        art = bundle.artifact("onnxruntime", precision)
        if art is None:
            have = sorted(a.precision for a in bundle.manifest.artifacts.values() if a.backend == "onnxruntime")
            raise BackendError(
                f"bundle '{bundle.root}' has no onnxruntime {precision} model (has: fp32"
                f"{''.join(', ' + p for p in have)}); build it with: "
                f"edgecv compile {bundle.root} --backend onnxruntime --precision {precision}"
            )
        return cls(bundle.file(art.path), precision, device, threads)

    # ------------------------------------------------------------------ lifecycle
    def _providers(self, ort: Any) -> tuple[list[Any], str]:
        available = ort.get_available_providers()
        dev = (self.requested_device or "").strip()
        kind, _, index = dev.lower().partition(":")
        if not dev:
            kind = "cuda" if "CUDAExecutionProvider" in available else "cpu"
        if kind not in _DEVICE_PROVIDERS:
            raise ConfigError(f"onnxruntime device: expected one of CPU, cuda, cuda:N, tensorrt; found '{dev}'")
        wanted = _DEVICE_PROVIDERS[kind]
        if wanted[0] not in available:
            raise BackendError(
                f"onnxruntime device '{dev}' needs {wanted[0]}, which this onnxruntime does not have "
                f"(available: {', '.join(available)})"
            )
        providers: list[Any] = []
        for p in wanted:
            if p not in available:
                continue
            if index and p in ("CUDAExecutionProvider", "TensorrtExecutionProvider"):
                providers.append((p, {"device_id": int(index)}))
            else:
                providers.append(p)
        return providers, kind

    def _load(self) -> None:
        ort = lazy_import("onnxruntime")
        if not self.model_path.is_file():
            raise BackendError(f"onnxruntime: expected an ONNX file, found nothing at '{self.model_path}'")
        opts = ort.SessionOptions()
        if self.threads is not None:
            if self.threads < 1:
                raise ConfigError(f"threads: expected a positive number, found {self.threads}")
            opts.intra_op_num_threads = int(self.threads)
            opts.inter_op_num_threads = 1
        opts.log_severity_level = 3  # errors only; warnings about unused initializers are noise here
        providers, _ = self._providers(ort)
        try:
            self._session = ort.InferenceSession(str(self.model_path), sess_options=opts, providers=providers)
        except Exception as exc:  # ORT raises its own exception types (Fail, InvalidGraph, …)
            raise BackendError(f"onnxruntime could not load '{self.model_path}': {_one_line(exc)}") from exc
        self._input_spec = [
            TensorSpec(i.name, tuple(_dim(d) for d in i.shape), _ORT_DTYPES.get(i.type, "float32"))
            for i in self._session.get_inputs()
        ]
        self._output_spec = [
            TensorSpec(o.name, tuple(_dim(d) for d in o.shape), _ORT_DTYPES.get(o.type, "float32"))
            for o in self._session.get_outputs()
        ]
        self._output_names = [o.name for o in self._output_spec]
        # ORT falls back to CPU silently when a provider fails to initialise: report the one it kept
        active = self._session.get_providers()[0]
        self.device = _PROVIDER_DEVICE.get(active, active)
        if self.device != "CPU" and self.requested_device and ":" in self.requested_device:
            self.device = self.requested_device.lower()
        graph_precision = onnx_precision(self.model_path)
        if graph_precision is not None and self.requested_precision not in (None, graph_precision):
            raise BackendError(
                f"onnxruntime: '{self.model_path}' computes in {graph_precision}, "
                f"expected a {self.requested_precision} model"
            )
        self.precision = graph_precision or self.requested_precision or "fp32"

    def _close(self) -> None:
        self._session = None

    def _infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._infer_outputs(feed, self._output_names)

    def _infer_outputs(self, feed: dict[str, np.ndarray], names: list[str]) -> dict[str, np.ndarray]:
        outs = self._session.run(names, feed)  # ORT fetches only the outputs asked for
        return dict(zip(names, outs))


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:500]


def _top(rel: str) -> str:
    """``onnxruntime/fp16/model.onnx`` → ``onnxruntime/fp16`` (the folder recorded in the manifest)."""
    return str(Path(rel).parent)


class OnnxRuntimeBuilder(Builder):
    """Builds ONNX Runtime artifacts: fp16 (weights and compute in float16, float32 inputs/outputs kept) or
    int8 (delegated to :func:`edgecv.quant.api.compile_int8`). fp32 needs no build: it is ``model.onnx``."""

    name = "onnxruntime"

    def build(self, bundle: Bundle, config: BuildConfig, calib: CalibrationSource | None = None) -> Artifact:
        from edgecv.bundle import Artifact

        if config.precision == "int8":
            return _delegate_int8(bundle, "onnxruntime", config, calib)
        if config.precision == "fp32":
            # the bundle's model.onnx is the fp32 model; record it so compile reports it like any artifact
            art = Artifact(
                backend="onnxruntime",
                precision="fp32",
                path="model.onnx",
                device=config.device,
                build_flags={},
                versions=_versions(),
            )
            return bundle.add_artifact(art, {})
        if config.precision != "fp16":
            raise ConfigError(f"onnxruntime precision: expected fp32, fp16 or int8, found '{config.precision}'")
        onnx = lazy_import("onnx")
        float16 = lazy_import("onnxruntime.transformers.float16", extra="onnxruntime")
        src = config.onnx_path or bundle.onnx_path
        t0 = time.perf_counter()
        model = onnx.load(str(src))
        # keep_io_types: callers keep feeding float32 and reading float32; casts sit at the graph edges
        model16 = float16.convert_float_to_float16(model, keep_io_types=True)
        rel_dir = f"onnxruntime/{config.precision}"
        with bundle.scratch() as tmp:
            out_dir = Path(tmp) / "out"
            out_dir.mkdir()
            onnx.save(model16, str(out_dir / "model.onnx"))
            art = Artifact(
                backend="onnxruntime",
                precision=config.precision,
                path=f"{rel_dir}/model.onnx",
                device=config.device,
                build_flags={
                    "keep_io_types": True,
                    "converter": "onnxruntime.transformers.float16",
                    "build_time_s": round(time.perf_counter() - t0, 3),
                },
                versions=_versions(),
                extra={"source": str(Path(src).name)},
            )
            return bundle.add_artifact(art, {rel_dir: out_dir})


def _versions() -> dict[str, str | None]:
    from edgecv import __version__

    return {"edgecv": __version__, "onnxruntime": version_of("onnxruntime"), "onnx": version_of("onnx")}


def _delegate_int8(bundle: Bundle, backend: str, config: BuildConfig, calib: Any) -> Artifact:
    """int8 is the quant module's job (calibration, QDQ placement, accuracy budget); call it lazily."""
    try:
        from edgecv.quant.api import compile_int8
    except ImportError as exc:
        raise MissingDependencyError(
            f"int8 for {backend} needs edgecv.quant.api.compile_int8, which this edgecv does not have ({exc})"
        ) from exc
    if calib is None:
        raise ConfigError(f"{backend} int8: expected calibration data (--calib PATH), found none")
    return compile_int8(bundle, backend=backend, calib=calib, device=config.device)  # type: ignore[no-any-return]
