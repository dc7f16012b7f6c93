"""ONNX Runtime backend: a Runner over an ``InferenceSession`` and a Builder for fp16 / int8 ONNX artifacts.

The fp32 model is the bundle's ``model.onnx``; other precisions are separate ONNX files recorded in the
manifest (``onnxruntime/<precision>/model.onnx``). onnxruntime and onnx are imported lazily.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgecv._lazy import lazy_import, version_of
from edgecv.backends.base import AsyncInfer, BuildConfig, Builder, Runner
from edgecv.errors import BackendError, ConfigError, MissingDependencyError, one_line
from edgecv.types import TensorSpec

if TYPE_CHECKING:
    from edgecv.bundle import Artifact, Bundle

#: where an INT8 (QDQ) ONNX model is recorded in a bundle
INT8_PATH = "onnxruntime/int8/model.qdq.onnx"

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


def onnx_precision(path: str | Path | bytes) -> str | None:
    """The precision an ONNX file (or serialized model) computes in, read from the graph: ``int8`` when it holds
    quantize ops, ``fp16`` when its weights are float16, else ``fp32``. None when onnx is not installed."""
    try:
        onnx = lazy_import("onnx")
    except MissingDependencyError:
        return None
    if isinstance(path, bytes):
        model = onnx.load_from_string(path)
    else:
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
        threads: ``SessionOptions.intra_op_num_threads`` (None: ONNX Runtime's default); with the throughput
            hint, the number of requests run at once instead.
        performance: ``latency`` (one request at a time, ``threads`` threads inside it: validate, bench, one
            stream) or ``throughput`` (ONNX Runtime's equivalent of OpenVINO's throughput hint: one thread per
            request and ``threads`` requests at once through :meth:`async_queue`, each ``Run`` on its own calling
            thread: many streams batched in one process). On a small loaded CPU an intra-op pool spins against the
            decoders and the other requests; measured on 2 shared cores (shapes_detector, batch 8): 2 requests x
            1 thread 100-130 frames/s, 2 requests x 2 threads 70 frames/s, 1 request x 2 threads 47-54 frames/s.
    """

    name = "onnxruntime"
    concurrent_infer = True  # InferenceSession.run is thread-safe; async_queue overlaps calls on one session

    def __init__(
        self,
        model_path: str | Path,
        precision: str | None = None,
        device: str | None = None,
        threads: int | None = None,
        *,
        model_bytes: bytes | None = None,
        performance: str = "latency",
    ) -> None:
        super().__init__()
        if performance not in ("latency", "throughput"):
            raise ConfigError(f"onnxruntime performance hint: expected latency or throughput, found '{performance}'")
        self.performance = performance
        self.model_path = Path(model_path)
        self._model_bytes = model_bytes
        self.requested_precision = precision
        self.precision = precision or "fp32"
        self.requested_device = device
        self.threads = threads
        self._session: Any = None
        self._output_names: list[str] = []

    @classmethod
    def from_bundle(
        cls,
        bundle: Bundle,
        precision: str = "fp32",
        device: str | None = None,
        threads: int | None = None,
        performance: str = "latency",
        **kw: Any,
    ) -> OnnxRuntimeRunner:
        """A runner for ``bundle``: ``model.onnx`` for fp32, the compiled ONNX artifact otherwise."""
        if kw:
            raise ConfigError(f"onnxruntime runner: unexpected options {sorted(kw)}")
        if precision == "fp32":
            return cls(bundle.onnx_path, precision, device, threads, performance=performance)
        art = bundle.artifact("onnxruntime", precision)
        if art is None:
            have = sorted(a.precision for a in bundle.manifest.artifacts.values() if a.backend == "onnxruntime")
            raise BackendError(
                f"bundle '{bundle.root}' has no onnxruntime {precision} model (has: fp32"
                f"{''.join(', ' + p for p in have)}); build it with: "
                f"edgecv compile {bundle.root} --backend onnxruntime --precision {precision}"
            )
        return cls(bundle.file(art.path), precision, device, threads, performance=performance)

    @classmethod
    def from_path(
        cls,
        model: str | Path | bytes,
        precision: str | None = None,
        device: str | None = None,
        threads: int | None = None,
    ) -> OnnxRuntimeRunner:
        """A runner over a loose ONNX model that is no bundle artifact (yet): a file, or a serialized
        ``ModelProto`` (bytes) such as a graph with extra outputs. ``precision`` None reads it from the graph.
        This is how quant scores its candidates (each method, each set of kept-float layers)."""
        if isinstance(model, bytes):
            return cls("<in-memory model>", precision, device, threads, model_bytes=model)
        return cls(model, precision, device, threads)

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
        if self._model_bytes is None and not self.model_path.is_file():
            raise BackendError(f"onnxruntime: expected an ONNX file, found nothing at '{self.model_path}'")
        opts = ort.SessionOptions()
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads: expected a positive number, found {self.threads}")
        if self.performance == "throughput":
            # each request runs on its own calling thread, no intra-op pool (see the class docstring)
            opts.intra_op_num_threads = 1
            opts.inter_op_num_threads = 1
        elif self.threads is not None:
            opts.intra_op_num_threads = int(self.threads)
            opts.inter_op_num_threads = 1
        opts.log_severity_level = 3  # errors only; warnings about unused initializers are noise here
        providers, _ = self._providers(ort)
        try:
            src = self._model_bytes if self._model_bytes is not None else str(self.model_path)
            self._session = ort.InferenceSession(src, sess_options=opts, providers=providers)
        except Exception as exc:  # ORT raises its own exception types (Fail, InvalidGraph, …)
            raise BackendError(
                f"onnxruntime could not load '{self.model_path}': {one_line(exc, 500, with_type=False)}"
            ) from exc
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
        graph_precision = onnx_precision(self._model_bytes if self._model_bytes is not None else self.model_path)
        if graph_precision is not None and self.requested_precision not in (None, graph_precision):
            raise BackendError(
                f"onnxruntime: '{self.model_path}' computes in {graph_precision}, "
                f"expected a {self.requested_precision} model"
            )
        self.precision = graph_precision or self.requested_precision or "fp32"

    def _close(self) -> None:
        self._session = None

    def async_queue(self, requests: int | None = None, outputs: Sequence[str] | None = None) -> AsyncInfer:
        """Worker threads calling ``Run`` on the one session. None: with the throughput hint, one request per
        thread the run may use (``threads``, else the usable CPUs); else 2 (the caller prepares the next batch while
        one runs)."""
        if requests is None and self.performance == "throughput":
            requests = self.threads or _usable_cpus()
        return super().async_queue(requests, outputs)

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["performance"] = self.performance
        return d

    def _infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._infer_outputs(feed, self._output_names)

    def _infer_outputs(self, feed: dict[str, np.ndarray], names: list[str]) -> dict[str, np.ndarray]:
        outs = self._session.run(names, feed)  # ORT fetches only the outputs asked for
        return dict(zip(names, outs))


def _usable_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def _top(rel: str) -> str:
    """``onnxruntime/fp16/model.onnx`` → ``onnxruntime/fp16`` (the folder recorded in the manifest)."""
    return str(Path(rel).parent)


class OnnxRuntimeBuilder(Builder):
    """Builds ONNX Runtime artifacts from an ONNX file (``config.onnx_path``, default the bundle's ``model.onnx``):
    fp16 (weights and compute in float16, float32 inputs/outputs kept), or int8 from a QDQ model (the file
    :func:`edgecv.quant.quantize` writes, recorded as it is). fp32 needs no build: it is ``model.onnx``."""

    name = "onnxruntime"

    def build(self, bundle: Bundle, config: BuildConfig) -> Artifact:
        from edgecv.bundle import Artifact

        if config.precision == "int8":
            return _record_qdq(bundle, config)
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


def _record_qdq(bundle: Bundle, config: BuildConfig) -> Artifact:
    """int8: ONNX Runtime runs a QDQ model as it is; record the given one as ``onnxruntime/int8``."""
    from edgecv.bundle import Artifact

    src = config.onnx_path
    if src is None or not Path(src).is_file():
        raise ConfigError(
            "onnxruntime int8: expected a QDQ ONNX model to record (made by edgecv.quant.quantize: "
            f"edgecv compile -b onnxruntime -p int8 --calib DATA), found {'none' if src is None else repr(str(src))}"
        )
    kind = onnx_precision(src)
    if kind not in (None, "int8"):
        raise ConfigError(f"onnxruntime int8: expected Q/DQ nodes in '{src}', found a {kind} model")
    art = Artifact(
        backend="onnxruntime",
        precision="int8",
        path=INT8_PATH,
        device=config.device,
        build_flags={"format": "QDQ"},
        versions=_versions(),
        extra={"source": Path(src).name},
    )
    return bundle.add_artifact(art, {INT8_PATH: Path(src)})


def _versions() -> dict[str, str | None]:
    from edgecv import __version__

    return {"edgecv": __version__, "onnxruntime": version_of("onnxruntime"), "onnx": version_of("onnx")}
