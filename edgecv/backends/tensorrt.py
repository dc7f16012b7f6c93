"""TensorRT 10 backend: engine Builder (ONNX parser, optimization profile, timing cache) and Runner
(``execute_async_v3`` over device buffers from cuda-python; no torch).

TensorRT is imported inside functions with a real ``import tensorrt as trt`` after
:func:`edgecv._lazy.lazy_import` has checked that the real package (not only ``tensorrt-stubs``) is there, so
mypy checks every TensorRT name against the stubs while a machine without TensorRT gets the extra to install.
Classes that subclass TensorRT types (the logger) are defined inside factory functions (Polygraphy style).

:func:`trtexec_command` gives the equivalent ``trtexec`` command line, for building on a device where only
the TensorRT binaries are installed.
"""

from __future__ import annotations

import json
import shlex
import stat
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgecv._lazy import lazy_import, version_of
from edgecv.backends.base import Builder, BuildConfig, Runner
from edgecv.errors import BackendError, ConfigError, MissingDependencyError
from edgecv.types import TensorSpec

if TYPE_CHECKING:
    import tensorrt as trt

    from edgecv.bundle import Artifact, Bundle, Contract
    from edgecv.quant.calib import CalibrationSource

ENGINE_FILE = "model.engine"
TIMING_CACHE = "tensorrt/timing.cache"
SCRIPT_FILE = "trtexec.sh"
_PRECISIONS = ("fp32", "fp16", "bf16", "int8")
_QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}


def engine_rel(precision: str) -> str:
    """Where a bundle keeps the engine for ``precision``."""
    return f"tensorrt/{precision}/{ENGINE_FILE}"


def _require_tensorrt() -> None:
    """Raise :class:`MissingDependencyError` naming the extra when the real TensorRT is absent."""
    try:
        lazy_import("tensorrt")
    except MissingDependencyError as exc:
        raise MissingDependencyError(
            "TensorRT is not installed (only its type stubs, or nothing); install it with "
            "pip install 'edgecv[tensorrt]' (on Jetson it comes with JetPack), or pass --emit-trtexec to "
            "write the equivalent trtexec command"
        ) from exc


def _cudart() -> Any:
    """cuda-python's runtime module (``cuda.bindings.runtime`` in cuda-python ≥ 12.6, ``cuda.cudart`` before)."""
    try:
        from cuda.bindings import runtime

        return runtime
    except ImportError:
        pass
    try:
        from cuda import cudart

        return cudart
    except ImportError as exc:
        raise MissingDependencyError(
            f"the TensorRT runner needs cuda-python, which is not installed ({exc}); "
            "install it with: pip install 'edgecv[tensorrt]'"
        ) from exc


def _check(result: Any, what: str) -> Any:
    """Unpack a cuda-python ``(err, value…)`` tuple, raising :class:`BackendError` on an error code."""
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise BackendError(f"CUDA {what} failed: {err}")
    if not rest:
        return None
    return rest[0] if len(rest) == 1 else tuple(rest)


def _make_logger(min_severity: str = "WARNING") -> trt.ILogger:
    """A TensorRT logger that keeps error messages, so a failed build can say why in one line."""
    import tensorrt as trt

    levels = {"ERROR": trt.ILogger.Severity.ERROR, "WARNING": trt.ILogger.Severity.WARNING,
              "INFO": trt.ILogger.Severity.INFO, "VERBOSE": trt.ILogger.Severity.VERBOSE}
    threshold = levels[min_severity]

    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity: trt.ILogger.Severity, msg: str) -> None:
            if int(severity) <= int(trt.ILogger.Severity.ERROR):
                self.errors.append(msg)
            if int(severity) <= int(threshold):
                import logging

                logging.getLogger("edgecv.tensorrt").log(
                    logging.ERROR if int(severity) <= int(trt.ILogger.Severity.ERROR) else logging.WARNING, msg)

    return _Logger()


def _logger_errors(logger: Any) -> str:
    errors = getattr(logger, "errors", [])
    return "; ".join(" ".join(e.split()) for e in errors[-3:]) or "no error message from TensorRT"


def is_qdq(onnx_path: str | Path) -> bool:
    """True when the ONNX graph holds explicit Q/DQ nodes (an int8 model from edgecv.quant)."""
    onnx = lazy_import("onnx")
    model = onnx.load(str(onnx_path), load_external_data=False)
    return any(n.op_type in _QDQ_OPS for n in model.graph.node)


def _batch_range(contract: Contract, config: BuildConfig) -> tuple[int, int, int]:
    br = config.batch_range or tuple(contract.batch_range)
    lo, opt, hi = (int(b) for b in br)
    if not 1 <= lo <= opt <= hi:
        raise ConfigError(f"batch_range: expected min <= opt <= max, all >= 1; found {list(br)}")
    return lo, opt, hi


def _dims(dims: trt.Dims) -> list[int]:
    """A TensorRT ``Dims`` as a list (-1 marks a dynamic dim); Dims is indexable, not iterable, in the stubs."""
    return [int(dims[k]) for k in range(len(dims))]


def _shape_str(contract: Contract, batch: int) -> str:
    return "x".join(str(d) for d in (batch, *contract.input_shape[1:]))


# ====================================================================== trtexec
def trtexec_command(bundle: Bundle, config: BuildConfig, relative: bool = False) -> str:
    """The ``trtexec`` command line that builds the same engine as :class:`TensorRTBuilder`.

    Args:
        bundle: the bundle whose ONNX model is built.
        config: precision, batch range, workspace, timing cache and kept-float layers.
        relative: paths relative to the bundle folder (for a script that ``cd``s there first).

    Returns:
        One shell-quoted command line.
    """
    if config.precision not in _PRECISIONS:
        raise ConfigError(f"tensorrt precision: expected one of {', '.join(_PRECISIONS)}, found '{config.precision}'")
    contract = bundle.contract
    root = Path(".") if relative else bundle.root.resolve()
    onnx_path = (Path(config.onnx_path) if config.onnx_path else bundle.onnx_path).resolve()
    try:
        onnx_arg = str(root / onnx_path.relative_to(bundle.root.resolve()))
    except ValueError:  # a model outside the bundle (e.g. a QDQ file being tried out): keep its absolute path
        onnx_arg = str(onnx_path)
    cache = Path(config.timing_cache) if config.timing_cache else root / TIMING_CACHE
    args = ["trtexec", f"--onnx={onnx_arg}", f"--saveEngine={root / engine_rel(config.precision)}"]
    strongly_typed = config.precision == "int8"
    if strongly_typed:
        # an int8 model is a QDQ graph: its types say what runs where (TensorRT 10's recommended mode)
        args.append("--stronglyTyped")
    elif config.precision == "fp16":
        args.append("--fp16")
    elif config.precision == "bf16":
        args.append("--bf16")
    if contract.dynamic_batch or config.batch_range:
        lo, opt, hi = _batch_range(contract, config)
        name = contract.input_name
        args += [f"--minShapes={name}:{_shape_str(contract, lo)}", f"--optShapes={name}:{_shape_str(contract, opt)}",
                 f"--maxShapes={name}:{_shape_str(contract, hi)}"]
    args += [f"--timingCacheFile={cache}", f"--memPoolSize=workspace:{int(config.workspace_mb)}M"]
    if config.keep_float and not strongly_typed:
        # in a strongly typed (QDQ) build the kept-float layers are the ones without Q/DQ: nothing to add
        args += ["--precisionConstraints=obey",
                 "--layerPrecisions=" + ",".join(f"{n}:fp32" for n in config.keep_float),
                 "--layerOutputTypes=" + ",".join(f"{n}:fp32" for n in config.keep_float)]
    return " ".join(shlex.quote(a) for a in args)


def write_trtexec_script(bundle: Bundle, config: BuildConfig) -> Path:
    """Write ``tensorrt/<precision>/trtexec.sh`` into the bundle (executable, hash in the manifest).

    The script ``cd``s into the bundle, so it works wherever the bundle is copied.
    """
    from edgecv.bundle import now_iso

    cmd = trtexec_command(bundle, config, relative=True)
    rel = f"tensorrt/{config.precision}/{SCRIPT_FILE}"
    text = ("#!/bin/sh\n"
            f"# Builds the TensorRT {config.precision} engine for this bundle (written by edgecv {_edgecv_version()}).\n"
            "# Run it on the target device; the engine lands beside this script.\n"
            "set -e\n"
            'cd "$(dirname "$0")/../.."\n'
            f"mkdir -p tensorrt/{config.precision}\n"
            f"{cmd}\n")
    with bundle.scratch() as tmp, bundle.update() as manifest:
        src = Path(tmp) / SCRIPT_FILE
        src.write_text(text)
        src.chmod(src.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        dst = bundle.add_file(rel, src)
        manifest.history.append({"event": "trtexec_script", "path": rel, "precision": config.precision,
                                 "command": cmd, "time": now_iso()})
    return dst


def adopt_engine(bundle: Bundle, precision: str) -> str:
    """Record an engine that ``trtexec.sh`` built on the device in the manifest (hash included); returns its path."""
    from edgecv._io import sha256_path
    from edgecv.bundle import Artifact, now_iso

    rel = engine_rel(precision)
    with bundle.update() as manifest:
        path = bundle.write_path(rel)
        digest = sha256_path(path)
        manifest.files[rel] = digest
        manifest.artifacts[f"tensorrt:{precision}"] = Artifact(
            backend="tensorrt", precision=precision, path=rel, sha256=digest, device="cuda",
            created=now_iso(), extra={"built_by": f"tensorrt/{precision}/{SCRIPT_FILE} on the device"})
        manifest.history.append({"event": "artifact", "key": f"tensorrt:{precision}", "time": now_iso(),
                                 "adopted": rel})
    return rel


def _edgecv_version() -> str:
    from edgecv import __version__

    return __version__


# ====================================================================== build
def build_serialized_engine(onnx_path: Path, contract: Contract, config: BuildConfig,
                            timing_cache: bytes | None = None) -> tuple[bytes, bytes, dict[str, Any]]:
    """Parse ``onnx_path`` and build a serialized engine.

    Returns:
        ``(engine bytes, timing cache bytes, build flags)``.

    Raises:
        MissingDependencyError: TensorRT is not installed.
        BackendError: the parser or the builder failed (the message carries TensorRT's errors).
    """
    _require_tensorrt()
    import tensorrt as trt

    logger = _make_logger()
    builder = trt.Builder(logger)
    strongly_typed = config.strongly_typed or is_qdq(onnx_path)
    if config.precision == "int8" and not strongly_typed:
        raise ConfigError(
            f"tensorrt int8: expected a QDQ ONNX model (from edgecv.quant), found no Q/DQ nodes in '{onnx_path}'"
        )
    flags = 0
    if strongly_typed:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [" ".join(str(parser.get_error(i)).split()) for i in range(parser.num_errors)]
        raise BackendError(f"TensorRT could not parse '{onnx_path}': {'; '.join(errors[:3]) or _logger_errors(logger)}")

    cfg = builder.create_builder_config()
    cfg.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(config.workspace_mb) << 20)
    # DETAILED lets the runner read back each layer's precision from the engine inspector
    cfg.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    build_flags: dict[str, Any] = {"strongly_typed": strongly_typed, "workspace_mb": int(config.workspace_mb)}
    if not strongly_typed:
        if config.precision == "fp16":
            cfg.set_flag(trt.BuilderFlag.FP16)
        elif config.precision == "bf16":
            cfg.set_flag(trt.BuilderFlag.BF16)
    build_flags["precision_flag"] = None if strongly_typed or config.precision == "fp32" else config.precision

    if config.keep_float and strongly_typed:
        # a strongly typed network takes every type from the graph (TensorRT rejects layer precisions there);
        # the quantizer keeps a layer float by leaving its Q/DQ out, so the QDQ file already says it
        build_flags["keep_float"] = sorted(config.keep_float)
    elif config.keep_float:
        wanted = set(config.keep_float)
        found: set[str] = set()
        for i in range(network.num_layers):
            layer = network.get_layer(i)
            # the ONNX parser names a node's layer after the node; nodes that become several layers add suffixes
            owner = next((w for w in wanted if layer.name == w or layer.name.startswith(w + "_")), None)
            if owner is not None:
                layer.precision = trt.DataType.FLOAT
                for j in range(layer.num_outputs):
                    layer.set_output_type(j, trt.DataType.FLOAT)
                found.add(owner)
        missing = sorted(wanted - found)
        if missing:
            names = [network.get_layer(i).name for i in range(min(network.num_layers, 8))]
            raise ConfigError(f"keep_float: layers {missing} are not in the TensorRT network (first layers: {names})")
        # without OBEY the builder may still pick a faster half kernel for those layers
        cfg.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        build_flags["keep_float"] = sorted(found)

    dynamic = any(any(d < 0 for d in _dims(network.get_input(i).shape)) for i in range(network.num_inputs))
    if dynamic:
        lo, opt, hi = _batch_range(contract, config)
        profile = builder.create_optimization_profile()
        for i in range(network.num_inputs):
            tensor = network.get_input(i)
            dims = _dims(tensor.shape)
            if any(d < 0 for d in dims[1:]):
                raise ConfigError(f"tensorrt: input '{tensor.name}' has dynamic dims {dims}; expected only the batch "
                                  "dim to be dynamic")
            profile.set_shape(tensor.name, trt.Dims([lo, *dims[1:]]), trt.Dims([opt, *dims[1:]]),
                              trt.Dims([hi, *dims[1:]]))
        cfg.add_optimization_profile(profile)
        build_flags["batch_range"] = [lo, opt, hi]

    cache = cfg.create_timing_cache(timing_cache or b"")
    cfg.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, cfg)
    if serialized is None:
        raise BackendError(f"TensorRT could not build an engine from '{onnx_path}': {_logger_errors(logger)}")
    cache_bytes = bytes(memoryview(cfg.get_timing_cache().serialize()))
    return bytes(memoryview(serialized)), cache_bytes, build_flags


class TensorRTBuilder(Builder):
    """Builds ``tensorrt/<precision>/model.engine`` into a bundle (or, with ``emit_only``, a trtexec script).

    int8 builds a strongly typed engine from a QDQ model: ``config.onnx_path`` when given (what
    :func:`edgecv.quant.api.compile_int8` passes), otherwise the quant module is asked to make one.
    """

    name = "tensorrt"

    def build(self, bundle: Bundle, config: BuildConfig,
              calib: CalibrationSource | None = None) -> Artifact:
        from edgecv.bundle import Artifact

        if config.precision not in _PRECISIONS:
            raise ConfigError(f"tensorrt precision: expected one of {', '.join(_PRECISIONS)}, "
                              f"found '{config.precision}'")
        if config.emit_only:
            path = write_trtexec_script(bundle, config)
            # describes the script; it is recorded as a file in the manifest, not as a runnable artifact
            return Artifact(backend="tensorrt", precision=config.precision,
                            path=str(path.relative_to(bundle.root)), device=config.device,
                            build_flags={"emit_only": True}, extra={"command": trtexec_command(bundle, config)})
        if config.precision == "int8" and config.onnx_path is None:
            from edgecv.backends.onnxruntime import _delegate_int8

            return _delegate_int8(bundle, "tensorrt", config, calib)
        _require_tensorrt()
        import tensorrt as trt

        onnx_path = Path(config.onnx_path or bundle.onnx_path)
        cache_path = Path(config.timing_cache) if config.timing_cache else bundle.path(TIMING_CACHE)
        cache_in = cache_path.read_bytes() if cache_path.is_file() else None
        t0 = time.perf_counter()
        engine, cache_out, flags = build_serialized_engine(onnx_path, bundle.contract, config, cache_in)
        flags["build_time_s"] = round(time.perf_counter() - t0, 3)
        flags["timing_cache"] = TIMING_CACHE if not config.timing_cache else str(config.timing_cache)
        rel = engine_rel(config.precision)
        with bundle.scratch() as tmp:
            engine_tmp = Path(tmp) / ENGINE_FILE
            engine_tmp.write_bytes(engine)
            files = {rel: engine_tmp}
            if not config.timing_cache:
                cache_tmp = Path(tmp) / "timing.cache"
                cache_tmp.write_bytes(cache_out)
                files[TIMING_CACHE] = cache_tmp
            elif cache_out:
                from edgecv._io import write_bytes

                write_bytes(cache_path, cache_out)
            art = Artifact(backend="tensorrt", precision=config.precision, path=rel,
                           device=config.device or "cuda:0", build_flags=flags,
                           versions={"edgecv": _edgecv_version(), "tensorrt": trt.__version__,
                                     "cuda-python": version_of("cuda")},
                           extra={"source": onnx_path.name})
            return bundle.add_artifact(art, files)


# ====================================================================== run
def _engine_precision(engine: trt.ICudaEngine) -> str | None:
    """The lowest precision any layer's tensors use, from the engine inspector (engines built with DETAILED
    profiling verbosity, as :class:`TensorRTBuilder` does); None when the engine does not say."""
    import tensorrt as trt

    try:
        info = json.loads(engine.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON))
    except Exception:  # noqa: BLE001 - engines built without DETAILED verbosity give only names
        return None
    layers = info.get("Layers", []) if isinstance(info, dict) else []
    # DETAILED layer entries describe each tensor as e.g. "Row major linear FP16 format" or "… Int8 …"
    formats = " ".join(json.dumps(layer) for layer in layers if isinstance(layer, dict)).lower()
    if not formats or "format" not in formats:
        return None
    for tokens, precision in ((("int8",), "int8"), (("fp16", "half"), "fp16"), (("bf16", "bfloat16"), "bf16")):
        if any(t in formats for t in tokens):
            return precision
    return "fp32"


class TensorRTRunner(Runner):
    """Runs a serialized TensorRT engine with ``execute_async_v3``; buffers and stream from cuda-python.

    Args:
        engine_path: the ``.engine`` file.
        precision: the precision it was built at (reported when the engine cannot say).
        device: ``cuda`` or ``cuda:N`` (default ``cuda:0``).
        threads: ignored (GPU), accepted for a uniform interface.
    """

    name = "tensorrt"

    def __init__(self, engine_path: str | Path, precision: str = "fp32", device: str | None = None,
                 threads: int | None = None) -> None:
        super().__init__()
        self.engine_path = Path(engine_path)
        self.requested_precision = precision
        self.precision = precision
        dev = (device or "cuda:0").lower()
        kind, _, index = dev.partition(":")
        if kind not in ("cuda", "gpu") or (index and not index.isdigit()):
            raise ConfigError(f"tensorrt device: expected cuda or cuda:N, found '{device}'")
        self.device_index = int(index or 0)
        self.device = f"cuda:{self.device_index}"
        self._runtime: trt.Runtime | None = None
        self._engine: trt.ICudaEngine | None = None
        self._context: trt.IExecutionContext | None = None
        self._stream: Any = None
        self._cudart: Any = None
        self._buffers: dict[str, tuple[int, int]] = {}  # name → (device pointer, capacity bytes)
        self._logger: trt.ILogger | None = None

    @classmethod
    def from_bundle(cls, bundle: Bundle, precision: str = "fp32", device: str | None = None,
                    threads: int | None = None, **kw: Any) -> TensorRTRunner:
        """A runner for the bundle's engine at ``precision``.

        An engine built on the device by the emitted ``trtexec.sh`` is not in the manifest; it is used when it
        sits where the script writes it.
        """
        if kw:
            raise ConfigError(f"tensorrt runner: unexpected options {sorted(kw)}")
        art = bundle.artifact("tensorrt", precision)
        if art is not None:
            return cls(bundle.file(art.path), precision, device, threads)
        fallback = bundle.path(engine_rel(precision))
        if fallback.is_file():
            # built on the device by the emitted trtexec.sh: recorded (hashed) on first use, so every later use is
            # checked like any other artifact
            return cls(bundle.file(adopt_engine(bundle, precision)), precision, device, threads)
        raise BackendError(
            f"bundle '{bundle.root}' has no tensorrt {precision} engine; build it with: edgecv compile "
            f"{bundle.root} --backend tensorrt --precision {precision} (or --emit-trtexec and run the script)"
        )

    def _load(self) -> None:
        _require_tensorrt()
        import tensorrt as trt

        cudart = _cudart()
        self._cudart = cudart
        if not self.engine_path.is_file():
            raise BackendError(f"tensorrt: expected an engine file, found nothing at '{self.engine_path}'")
        count = _check(cudart.cudaGetDeviceCount(), "cudaGetDeviceCount")
        if self.device_index >= int(count):
            raise BackendError(f"tensorrt device '{self.device}': this machine has {count} CUDA device(s)")
        _check(cudart.cudaSetDevice(self.device_index), "cudaSetDevice")
        logger = _make_logger()
        runtime = trt.Runtime(logger)
        engine = runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
        if engine is None:
            raise BackendError(
                f"TensorRT could not load '{self.engine_path}' (built by another TensorRT version or GPU?): "
                f"{_logger_errors(logger)}"
            )
        context = engine.create_execution_context()
        if context is None:
            raise BackendError(f"TensorRT could not create an execution context: {_logger_errors(logger)}")
        self._logger, self._runtime, self._engine, self._context = logger, runtime, engine, context
        self._stream = _check(cudart.cudaStreamCreate(), "cudaStreamCreate")
        inputs: list[TensorSpec] = []
        outputs: list[TensorSpec] = []
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            dims = tuple(None if d < 0 else d for d in _dims(engine.get_tensor_shape(name)))
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name))).name
            spec = TensorSpec(name, dims, dtype)
            (inputs if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else outputs).append(spec)
        self._input_spec, self._output_spec = inputs, outputs
        self.precision = _engine_precision(engine) or self.requested_precision

    def _buffer(self, name: str, nbytes: int) -> int:
        """A device buffer of at least ``nbytes`` for tensor ``name``, grown when a bigger batch comes."""
        ptr, cap = self._buffers.get(name, (0, 0))
        if cap < nbytes:
            if ptr:
                _check(self._cudart.cudaFree(ptr), "cudaFree")
            ptr = int(_check(self._cudart.cudaMalloc(max(nbytes, 1)), "cudaMalloc"))
            self._buffers[name] = (ptr, nbytes)
        return ptr

    def _infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        cudart, ctx, stream = self._cudart, self._context, self._stream
        if ctx is None:
            raise BackendError("tensorrt runner used after close()")
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        host_inputs = []
        for spec in self._input_spec:
            arr = np.ascontiguousarray(feed[spec.name])
            host_inputs.append(arr)  # keep alive until the copy has run
            if not ctx.set_input_shape(spec.name, tuple(arr.shape)):
                raise BackendError(f"tensorrt: input '{spec.name}' shape {arr.shape} is outside the engine's profile")
            ptr = self._buffer(spec.name, arr.nbytes)
            _check(cudart.cudaMemcpyAsync(ptr, arr.ctypes.data, arr.nbytes, h2d, stream), "cudaMemcpyAsync")
            ctx.set_tensor_address(spec.name, ptr)
        results: dict[str, np.ndarray] = {}
        for spec in self._output_spec:
            shape = tuple(_dims(ctx.get_tensor_shape(spec.name)))
            out = np.empty(shape, dtype=spec.dtype)
            ptr = self._buffer(spec.name, out.nbytes)
            ctx.set_tensor_address(spec.name, ptr)
            results[spec.name] = out
        if not ctx.execute_async_v3(int(stream)):
            raise BackendError(f"tensorrt: execute_async_v3 failed: {_logger_errors(self._logger)}")
        for name, out in results.items():
            ptr, _ = self._buffers[name]
            _check(cudart.cudaMemcpyAsync(out.ctypes.data, ptr, out.nbytes, d2h, stream), "cudaMemcpyAsync")
        _check(cudart.cudaStreamSynchronize(stream), "cudaStreamSynchronize")
        return results

    def _close(self) -> None:
        if self._cudart is not None:
            for ptr, _ in self._buffers.values():
                self._cudart.cudaFree(ptr)
            if self._stream is not None:
                self._cudart.cudaStreamDestroy(self._stream)
        self._buffers.clear()
        self._stream = None
        self._context = None
        self._engine = None
        self._runtime = None
