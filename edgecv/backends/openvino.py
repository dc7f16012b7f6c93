"""OpenVINO backend: a Runner over a compiled model (CPU, GPU, NPU, AUTO) and a Builder for IR artifacts.

The runner always sets ``INFERENCE_PRECISION_HINT`` explicitly, because OpenVINO's CPU plugin otherwise runs
in bf16 on CPUs that have it (AMX / AVX512-BF16): an "fp32" run that silently computes in bf16 would make
every accuracy number wrong. The precision it reports is read back from the compiled model.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgecv._io import describe_write_error
from edgecv._lazy import lazy_import, version_of
from edgecv.backends.base import AsyncInfer, BuildConfig, Builder, Done, Runner, check_onnx_file
from edgecv.errors import BackendError, ConfigError, one_line
from edgecv.types import TensorSpec

if TYPE_CHECKING:
    from edgecv.bundle import Artifact, Bundle

# edgecv precision → OpenVINO inference precision hint (element type name)
_HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16", "int8": "f32"}
# OpenVINO element type name → edgecv precision
_OV_PRECISION = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}
# OpenVINO element type name → numpy dtype name
_OV_DTYPES = {
    "f32": "float32",
    "f16": "float16",
    "f64": "float64",
    "u8": "uint8",
    "i8": "int8",
    "i32": "int32",
    "i64": "int64",
    "boolean": "bool",
    "bf16": "bfloat16",
}
_VIRTUAL_DEVICES = ("AUTO", "MULTI", "HETERO", "BATCH")
_QUANT_OPS = {"FakeQuantize", "FakeConvert"}


def _spec(port: Any) -> TensorSpec:
    pshape = port.get_partial_shape()
    dims = tuple(None if d.is_dynamic else int(d.get_length()) for d in pshape)
    dtype = _OV_DTYPES.get(port.get_element_type().get_type_name(), "float32")
    return TensorSpec(port_name(port), dims, dtype)


def port_name(port: Any) -> str:
    """The graph's name for a port. A tensor that is both an exporter-internal value and a graph output carries
    several names (``/Unsqueeze_output_0`` and ``boxes``), and ``get_any_name`` may return the internal one; the
    ONNX graph's own names never start with ``/``."""
    names = sorted(str(n) for n in port.get_names())
    plain = [n for n in names if not n.startswith("/")]
    return plain[0] if plain else str(port.get_any_name())


class OpenVINORunner(Runner):
    """Runs an OpenVINO IR (``.xml``) or an ONNX file with OpenVINO.

    Args:
        model_path: ``model.xml`` or ``model.onnx``.
        precision: fp32, fp16, bf16 (the inference precision hint) or int8 (an NNCF-quantized IR; the layers
            left in float run in f32).
        device: ``CPU``, ``GPU``, ``GPU.1``, ``NPU`` or ``AUTO`` (default ``CPU``).
        threads: ``INFERENCE_NUM_THREADS`` (None: OpenVINO's default).
        config: extra OpenVINO properties, applied after edgecv's (for experiments; the precision hint and
            performance hint cannot be overridden here).
        performance: ``latency`` (one request at a time: validate, bench, one stream) or ``throughput``
            (several requests in flight through :meth:`async_queue`: many streams batched in one process).
    """

    name = "openvino"

    def __init__(
        self,
        model_path: str | Path,
        precision: str | None = "fp32",
        device: str | None = None,
        threads: int | None = None,
        config: dict[str, Any] | None = None,
        performance: str = "latency",
        *,
        model: Any = None,
    ) -> None:
        super().__init__()
        if performance not in ("latency", "throughput"):
            raise ConfigError(f"openvino performance hint: expected latency or throughput, found '{performance}'")
        self.performance = performance
        if precision is not None and precision not in _HINTS:
            raise ConfigError(f"openvino precision: expected one of {', '.join(_HINTS)}, found '{precision}'")
        self.model_path = Path(model_path)
        self._model = model  # an in-memory ov.Model / ov.CompiledModel (from_path), else None
        # None: read the precision from the model (int8 when it holds FakeQuantize), computing in f32
        self.requested_precision = precision
        self.precision = precision or "fp32"
        dev = device or "CPU"
        # OpenVINO device names are upper case ("GPU.1"); accept "gpu" from a command line
        self.device = dev.upper() if dev.split(".")[0].split(":")[0].lower() in ("cpu", "gpu", "npu", "auto") else dev
        self.threads = threads
        self.extra_config = dict(config or {})
        self._compiled: Any = None
        self._request: Any = None
        self._output_names: list[str] = []
        self.compile_config: dict[str, Any] = {}

    @classmethod
    def from_bundle(
        cls, bundle: Bundle, precision: str = "fp32", device: str | None = None, threads: int | None = None, **kw: Any
    ) -> OpenVINORunner:
        """A runner for ``bundle``: the compiled IR for ``precision`` if the bundle has one, else ``model.onnx``
        with the precision as a runtime hint. int8 needs a compiled (quantized) IR."""
        art = bundle.artifact("openvino", precision)
        if art is not None:
            return cls(bundle.file(art.path), precision, device, threads, **kw)
        if precision == "int8":
            raise BackendError(
                f"bundle '{bundle.root}' has no openvino int8 model; build it with: "
                f"edgecv compile {bundle.root} --backend openvino --precision int8 --calib PATH"
            )
        return cls(bundle.onnx_path, precision, device, threads, **kw)

    @classmethod
    def from_path(
        cls,
        model: str | Path | Any,
        precision: str | None = None,
        device: str | None = None,
        threads: int | None = None,
    ) -> OpenVINORunner:
        """A runner over a model that is no bundle artifact (yet): an IR/ONNX file, an ``ov.Model`` or an
        ``ov.CompiledModel`` (NNCF's accuracy control hands those out). ``precision`` None reads it from the model.
        This is how quant scores its candidates."""
        if isinstance(model, (str, Path)):
            return cls(model, precision, device, threads)
        return cls("<in-memory model>", precision, device, threads, model=model)

    # ------------------------------------------------------------------ lifecycle
    def _load(self) -> None:
        ov = lazy_import("openvino")
        if self._model is None and not self.model_path.is_file():
            raise BackendError(f"openvino: expected a model file (.xml or .onnx), found nothing at '{self.model_path}'")
        core = ov.Core()
        base = self.device.split(":")[0].split(".")[0].upper()
        if base not in _VIRTUAL_DEVICES:
            available = list(core.available_devices)
            if self.device.upper() not in available and base not in {d.split(".")[0] for d in available}:
                raise BackendError(
                    f"openvino device '{self.device}' is not available; this machine has: {', '.join(available)}"
                )
        if isinstance(self._model, ov.CompiledModel):  # compiled by its maker: its own properties hold
            self._compiled = self._model
            self._request = self._compiled.create_infer_request()
            self._input_spec = [_spec(p) for p in self._compiled.inputs]
            self._output_spec = [_spec(p) for p in self._compiled.outputs]
            self._output_names = [s.name for s in self._output_spec]
            self.precision = self.requested_precision or "int8"
            return
        if self._model is not None:
            model = self._model
        else:
            check_onnx_file(self.model_path)
            try:
                model = core.read_model(str(self.model_path))
            except Exception as exc:  # OpenVINO raises RuntimeError subclasses with multi-line text
                raise BackendError(
                    f"openvino could not read '{self.model_path}': {one_line(exc, 500, with_type=False)}"
                ) from exc
        hints = lazy_import("openvino.properties.hint", extra="openvino")
        props = lazy_import("openvino.properties", extra="openvino")
        cfg: dict[str, Any] = dict(self.extra_config)
        cfg[hints.inference_precision()] = getattr(ov.Type, _HINTS[self.requested_precision or "fp32"])
        cfg[hints.performance_mode()] = (
            hints.PerformanceMode.THROUGHPUT if self.performance == "throughput" else hints.PerformanceMode.LATENCY
        )
        if self.threads is not None:
            if self.threads < 1:
                raise ConfigError(f"threads: expected a positive number, found {self.threads}")
            cfg[props.inference_num_threads()] = int(self.threads)
        self.compile_config = {
            str(k): v.get_type_name() if hasattr(v, "get_type_name") else str(v) for k, v in cfg.items()
        }
        try:
            self._compiled = core.compile_model(model, self.device, cfg)
        except Exception as exc:
            raise BackendError(
                f"openvino could not compile '{self.model_path.name}' for {self.device} at "
                f"{self.requested_precision or 'fp32'}: {one_line(exc, 500, with_type=False)}"
            ) from exc
        self._request = self._compiled.create_infer_request()
        self._input_spec = [_spec(p) for p in self._compiled.inputs]
        self._output_spec = [_spec(p) for p in self._compiled.outputs]
        self._output_names = [s.name for s in self._output_spec]
        self.precision = self._read_precision(model)
        try:
            devices = list(self._compiled.get_property("EXECUTION_DEVICES"))
            if devices:
                self.device = ",".join(devices) if base in _VIRTUAL_DEVICES else self.device
        except Exception:  # noqa: BLE001, S110 - not every plugin reports it; keep the requested device
            pass

    def _read_precision(self, model: Any) -> str:
        """The precision the compiled model runs, as OpenVINO reports it (not as we asked)."""
        quantized = any(op.get_type_name() in _QUANT_OPS for op in model.get_ordered_ops())
        if quantized:
            # NNCF's FakeQuantize layers run in int8; the hint (f32) covers the layers left in float
            return "int8"
        if self.requested_precision == "int8":
            raise BackendError(f"openvino: '{self.model_path}' holds no quantized layers; expected an int8 IR")
        try:
            actual = self._compiled.get_property("INFERENCE_PRECISION_HINT")
        except Exception:  # noqa: BLE001 - AUTO/MULTI may not expose it; trust the hint we set
            return self.requested_precision or "fp32"
        name = actual.get_type_name() if hasattr(actual, "get_type_name") else str(actual)
        return _OV_PRECISION.get(name, name)

    def _close(self) -> None:
        self._request = None
        self._compiled = None

    def _infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._infer_outputs(feed, self._output_names)

    def _infer_outputs(self, feed: dict[str, np.ndarray], names: list[str]) -> dict[str, np.ndarray]:
        self._request.infer(feed)
        # copy: the request reuses its output buffers on the next call (only the outputs asked for are copied)
        return {n: np.array(self._request.get_output_tensor(i).data, copy=True) for i, n in self._indexed(names)}

    def _indexed(self, names: list[str]) -> list[tuple[int, str]]:
        return [(self._output_names.index(n), n) for n in names]

    def optimal_requests(self) -> int:
        """How many requests OpenVINO wants in flight for the compiled hint (1 when it does not say)."""
        self._require_loaded()
        try:
            return max(1, int(self._compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
        except Exception:  # noqa: BLE001 - not every plugin reports it
            return 1

    def async_queue(self, requests: int | None = None, outputs: Sequence[str] | None = None) -> AsyncInfer:
        """OpenVINO's ``AsyncInferQueue`` with ``requests`` infer requests (None: the compiled model's optimal
        number, which the throughput hint raises with the cores it may use, and at least 2, so that the caller
        prepares the next batch while one runs)."""
        self._require_loaded()
        names = self.check_outputs(outputs) if outputs is not None else self._output_names
        return _OVAsyncInfer(self, requests or max(2, self.optimal_requests()), names)

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["config"] = self.compile_config
        return d


class _OVAsyncInfer(AsyncInfer):
    """``openvino.AsyncInferQueue``: ``start_async`` blocks only while every request is busy."""

    def __init__(self, runner: OpenVINORunner, requests: int, outputs: list[str]) -> None:
        super().__init__(runner, requests)
        ov = lazy_import("openvino")
        self.kind = "openvino AsyncInferQueue"
        self._names = runner._indexed(outputs)
        self._q = ov.AsyncInferQueue(runner._compiled, int(requests))
        self.requests = len(self._q)
        self._q.set_callback(self._callback)

    def _callback(self, request: Any, userdata: Any) -> None:
        data, done = userdata
        try:
            try:
                # copy: the request reuses its output buffers on its next run
                out = {name: np.array(request.get_output_tensor(i).data, copy=True) for i, name in self._names}
            except BaseException as exc:  # noqa: BLE001 - handed to the callback
                done(data, None, exc)
                return
            done(data, out, None)
        finally:
            self._end()

    def submit(self, feed: dict[str, np.ndarray], userdata: Any, done: Done) -> None:
        self.runner.check_feed(feed)
        self._begin()
        try:
            self._q.start_async(feed, (userdata, done))
        except Exception as exc:  # noqa: BLE001 - an inference error surfaces here or in wait_all
            self._end()
            done(
                userdata, None, BackendError(f"openvino async inference failed: {one_line(exc, 500, with_type=False)}")
            )

    def wait_all(self) -> None:
        self._q.wait_all()


class OpenVINOBuilder(Builder):
    """Converts the bundle's ONNX to an OpenVINO IR under ``openvino/<precision>/`` (``model.xml`` + ``.bin``).

    fp16 stores weights compressed to float16; fp32 and bf16 store float32 weights (bf16 is a runtime hint,
    recorded in the artifact's flags). int8 converts a QDQ ONNX model (``config.onnx_path``): OpenVINO reads its
    Q/DQ pairs as FakeQuantize. ``edgecv compile -b openvino -p int8`` does not come here: NNCF quantizes the
    OpenVINO graph itself (:func:`edgecv.quant.quantize`).
    """

    name = "openvino"

    def build(self, bundle: Bundle, config: BuildConfig) -> Artifact:
        from edgecv.bundle import Artifact

        if config.precision == "int8":
            from edgecv.backends.onnxruntime import onnx_precision

            if config.onnx_path is None or onnx_precision(config.onnx_path) not in (None, "int8"):
                raise ConfigError(
                    "openvino int8: expected a QDQ ONNX model (BuildConfig.onnx_path) or edgecv compile -b openvino "
                    f"-p int8 --calib DATA (NNCF), found {config.onnx_path or 'none'}"
                )
        if config.precision not in _HINTS:
            raise ConfigError(f"openvino precision: expected one of {', '.join(_HINTS)}, found '{config.precision}'")
        ov = lazy_import("openvino")
        src = Path(config.onnx_path or bundle.onnx_path)
        compress = config.precision == "fp16"
        rel_dir = f"openvino/{config.precision}"
        t0 = time.perf_counter()
        check_onnx_file(src)
        try:
            model = ov.convert_model(str(src))
        except Exception as exc:
            raise BackendError(f"openvino could not convert '{src}': {one_line(exc, 500, with_type=False)}") from exc
        # the whole folder is written in a temporary place inside the bundle, then renamed in one step:
        # an interrupted build leaves no model.xml without its .bin and no manifest entry
        with bundle.scratch() as tmp:
            out_dir = Path(tmp) / "ir"
            out_dir.mkdir()
            try:
                ov.save_model(model, str(out_dir / "model.xml"), compress_to_fp16=compress)
            except Exception as exc:
                raise BackendError(
                    f"could not write the OpenVINO IR into {bundle.root}: {describe_write_error(exc, out_dir)}"
                ) from exc
            build_time = time.perf_counter() - t0
            from edgecv import __version__

            art = Artifact(
                backend="openvino",
                precision=config.precision,
                path=f"{rel_dir}/model.xml",
                device=config.device or "CPU",
                build_flags={
                    "compress_to_fp16": compress,
                    "inference_precision_hint": _HINTS[config.precision],
                    "build_time_s": round(build_time, 3),
                },
                versions={"edgecv": __version__, "openvino": version_of("openvino")},
                extra={"source": src.name},
            )
            return bundle.add_artifact(art, {rel_dir: out_dir})
