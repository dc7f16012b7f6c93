"""TensorRT backend (8.6 to 11): engine Builder (ONNX parser, optimization profile, timing cache, DLA, provenance
sidecar) and Runner (``execute_async_v3`` over device buffers from cuda-python; no torch), guarded by the sidecar.

Only the name-based I/O API is used (``num_io_tensors``, ``get_tensor_name``, ``set_input_shape``,
``set_tensor_address``, ``execute_async_v3``: all present since 8.5). What differs between versions is detected
by feature (:class:`~edgecv.backends.tensorrt_plan.TrtFeatures`), and every build decision is made once by
:func:`~edgecv.backends.tensorrt_plan.make_plan`, which the builder applies and the trtexec script renders.

TensorRT is imported inside functions with a real ``import tensorrt as trt`` after
:func:`edgecv._lazy.lazy_import` has checked that the real package (not only ``tensorrt-stubs``) is there, so
mypy checks every TensorRT name against the stubs while a machine without TensorRT gets the extra to install.
Classes that subclass TensorRT types (the logger) are defined inside factory functions (Polygraphy style).

:func:`trtexec_command` gives the equivalent ``trtexec`` command line, for building on a device where only
the TensorRT binaries are installed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import stat
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgecv._lazy import lazy_import, version_of
from edgecv.backends.base import BuildConfig, Builder, Runner

# the sidecar writer (run alone by trtexec.sh) owns these; re-exported because the builder and runner use them
from edgecv.backends.tensorrt_guard import cudart_module as _cudart
from edgecv.backends.tensorrt_guard import layer_placement
from edgecv.backends.tensorrt_plan import (
    PRECISIONS,
    TYPED,
    TYPED_ONLY,
    TYPED_ONLY_DLA,
    BuildPlan,
    TrtFeatures,
    get_target,
    make_plan,
    parse_device,
    render_script,
    script_variants,
    shell_join,
    trtexec_args,
)
from edgecv.errors import BackendError, ConfigError, MissingDependencyError
from edgecv.types import TensorSpec

if TYPE_CHECKING:
    import tensorrt as trt

    from edgecv.bundle import Artifact, Bundle, Contract

#: environment switch the user sets to let a version-compatible engine run its embedded lean runtime (host code)
TRUST_ENGINE_CODE_ENV = "EDGECV_TRUST_ENGINE_CODE"

ENGINE_FILE = "model.engine"
TIMING_CACHE = "tensorrt/timing.cache"
SCRIPT_FILE = "trtexec.sh"
LAYER_INFO = "layers.json"
# kept fp32 in the fp16 graph for a strongly typed build: values that overflow fp16 (max 65504) inside them
FP16_KEEP_OPS = (
    "Exp",
    "Pow",
    "Log",
    "Sqrt",
    "Reciprocal",
    "ReduceMean",
    "ReduceSum",
    "ReduceSumSquare",
    "ReduceL2",
    "LayerNormalization",
    "InstanceNormalization",
    "GroupNormalization",
    "Softmax",
)
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

    levels = {
        "ERROR": trt.ILogger.Severity.ERROR,
        "WARNING": trt.ILogger.Severity.WARNING,
        "INFO": trt.ILogger.Severity.INFO,
        "VERBOSE": trt.ILogger.Severity.VERBOSE,
    }
    threshold = levels[min_severity]

    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []
            self.placement: list[str] = []  # the builder's "[DlaLayer] …" / "[GpuLayer] …" report (INFO)

        def log(self, severity: trt.ILogger.Severity, msg: str) -> None:
            if int(severity) <= int(trt.ILogger.Severity.ERROR):
                self.errors.append(msg)
            if "[DlaLayer]" in msg or "[GpuLayer]" in msg:
                self.placement.append(msg)
            if int(severity) <= int(threshold):
                import logging

                logging.getLogger("edgecv.tensorrt").log(
                    logging.ERROR if int(severity) <= int(trt.ILogger.Severity.ERROR) else logging.WARNING, msg
                )

    return _Logger()


def _logger_errors(logger: Any) -> str:
    errors = getattr(logger, "errors", [])
    return "; ".join(" ".join(e.split()) for e in errors[-3:]) or "no error message from TensorRT"


def is_qdq(onnx_path: str | Path) -> bool:
    """True when the ONNX graph holds explicit Q/DQ nodes (an int8 model from edgecv.quant)."""
    onnx = lazy_import("onnx")
    model = onnx.load(str(onnx_path), load_external_data=False)
    return any(n.op_type in _QDQ_OPS for n in model.graph.node)


def _dims(dims: trt.Dims) -> list[int]:
    """A TensorRT ``Dims`` as a list (-1 marks a dynamic dim); Dims is indexable, not iterable, in the stubs."""
    return [int(dims[k]) for k in range(len(dims))]


# ====================================================================== plan
def plan_for(bundle: Bundle, config: BuildConfig, features: TrtFeatures, dynamic: bool | None = None) -> BuildPlan:
    """The :class:`BuildPlan` of ``config`` on ``features`` (one decision for the builder and the script)."""
    return contract_plan(bundle.contract, config, features, dynamic)


def contract_plan(
    contract: Contract, config: BuildConfig, features: TrtFeatures, dynamic: bool | None = None
) -> BuildPlan:
    """:func:`plan_for` from the bundle's contract alone (what :func:`build_serialized_engine` is given)."""
    _, dla_core = parse_device(config.device if config.device and config.device.upper() != "CPU" else None)
    return make_plan(
        contract,
        config.precision,
        features,
        target=get_target(config.target),
        dla_core=dla_core,
        batch_range=config.batch_range,
        workspace_mb=config.workspace_mb,
        keep_float=config.keep_float,
        hardware_compat=config.hardware_compat,
        version_compatible=config.version_compatible,
        dynamic=dynamic,
    )


def _source_onnx(bundle: Bundle, config: BuildConfig, plan: BuildPlan) -> Path:
    """The ONNX file the plan builds from; int8 refuses a graph without Q/DQ nodes."""
    onnx_path = Path(config.onnx_path) if config.onnx_path else bundle.onnx_path
    if plan.onnx_kind == "qdq" and not is_qdq(onnx_path):
        raise ConfigError(
            f"tensorrt int8: expected a QDQ ONNX model (from edgecv.quant), found no Q/DQ nodes in "
            f"'{onnx_path}'; pass --calib DATA to quantize first"
        )
    return onnx_path


def fp16_onnx(src: Path, dst: Path, keep_float: list[str]) -> dict[str, Any]:
    """Convert ``src`` to an fp16 graph for a strongly typed build (TensorRT 11 has no FP16 builder flag).

    onnxconverter-common's ``convert_float_to_float16`` is used: it is the maintained converter (Microsoft's ONNX
    converters project; ONNX Runtime's float16 module is a copy of it), pure Python on onnx + numpy, so it installs
    on a Jetson where ModelOpt's AutoCast (the tool NVIDIA's migration guide names) would pull onnxruntime-gpu and
    torch. The ops kept in fp32 are its ``DEFAULT_OP_BLOCK_LIST`` (ops without fp16 kernels: Resize, TopK,
    NonMaxSuppression, RoiAlign, Range, CumSum, Min/Max …) plus :data:`FP16_KEEP_OPS`, the ops whose intermediate
    values overflow fp16's 65504 (exponentials, powers, the sums and means of normalisation statistics); the
    ``keep_float`` nodes go into the node block list; ``keep_io_types`` keeps the engine's inputs and outputs fp32,
    so the contract is unchanged.

    Returns:
        What the conversion did, for the build flags.
    """
    onnx = lazy_import("onnx")
    try:
        from onnxconverter_common import float16
    except ImportError as exc:
        raise MissingDependencyError(
            "fp16 on a strongly typed TensorRT (11) needs onnxconverter-common to convert the graph; install it "
            "with: pip install 'edgecv[tensorrt]'"
        ) from exc
    model = onnx.load(str(src))
    block = sorted(set(float16.DEFAULT_OP_BLOCK_LIST) | set(FP16_KEEP_OPS))
    model16 = float16.convert_float_to_float16(
        model, keep_io_types=True, op_block_list=block, node_block_list=list(keep_float) or None
    )
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model16, str(dst))
    return {
        "converter": "onnxconverter_common.float16",
        "converter_version": version_of("onnxconverter_common"),
        "keep_io_types": True,
        "op_block_list": block,
        "node_block_list": sorted(keep_float),
    }


# ====================================================================== trtexec
def _rel_or_abs(path: Path, root: Path, bundle_root: Path) -> str:
    try:
        return str(root / path.resolve().relative_to(bundle_root.resolve()))
    except ValueError:  # a model outside the bundle (e.g. a QDQ file being tried out): keep its absolute path
        return str(path.resolve())


def trtexec_command(bundle: Bundle, config: BuildConfig, relative: bool = False, features: TrtFeatures = TYPED) -> str:
    """The ``trtexec`` command line that builds the same engine as :class:`TensorRTBuilder` on ``features``.

    Args:
        bundle: the bundle whose ONNX model is built.
        config: precision, device (``dla:N``), target, batch range, workspace, timing cache, kept-float layers.
        relative: paths relative to the bundle folder (for a script that ``cd``s there first).
        features: which TensorRT the command is for (default: TensorRT 10).

    Returns:
        One shell-quoted command line.

    Raises:
        ConfigError: the plan is impossible there (e.g. int8 from a graph without Q/DQ, DLA on TensorRT 11).
    """
    return shell_join(_trtexec_argv(bundle, config, relative, features))


def _trtexec_argv(bundle: Bundle, config: BuildConfig, relative: bool, features: TrtFeatures) -> list[str]:
    plan = plan_for(bundle, config, features)
    root = Path(".") if relative else bundle.root.resolve()
    src = _source_onnx(bundle, config, plan)
    if plan.onnx_kind == "fp16":
        src = bundle.path(fp16_rel(config.precision))
        if not src.is_file():
            raise ConfigError(
                f"tensorrt fp16 on {features.label}: expected the fp16 graph "
                f"'{fp16_rel(config.precision)}' in the bundle, found none"
            )
    cache = Path(config.timing_cache) if config.timing_cache else root / TIMING_CACHE
    folder = root / f"tensorrt/{config.precision}"
    return trtexec_args(
        plan,
        _rel_or_abs(src, root, bundle.root),
        str(root / engine_rel(config.precision)),
        str(cache),
        layer_info=str(folder / LAYER_INFO),
    )


def fp16_rel(precision: str) -> str:
    return f"tensorrt/{precision}/model.fp16.onnx"


def write_trtexec_script(bundle: Bundle, config: BuildConfig, source_note: str | None = None) -> Path:
    """Write ``tensorrt/<precision>/trtexec.sh`` into the bundle (executable, hash in the manifest).

    The script ``cd``s into the bundle, asks ``trtexec --help`` which TensorRT it has (8.6, 10 or 11, by the
    options it lists) and runs the command this module's plan gives for that TensorRT, so each variant matches
    what :class:`TensorRTBuilder` would build there. An fp16 script also carries the fp16 graph TensorRT 11 needs.
    """
    from edgecv.bundle import now_iso

    if config.precision == "fp16":
        plan11 = None
        for feats in (TYPED_ONLY, TYPED_ONLY_DLA):  # whichever TensorRT 11 variant can build this config
            try:
                plan11 = plan_for(bundle, config, feats)
                break
            except ConfigError:
                continue
        if plan11 is not None and plan11.onnx_kind == "fp16" and not bundle.path(fp16_rel("fp16")).is_file():
            with bundle.scratch() as tmp:
                dst = Path(tmp) / "model.fp16.onnx"
                try:
                    fp16_onnx(Path(config.onnx_path or bundle.onnx_path), dst, plan11.fp16_keep)
                    bundle.add_file(fp16_rel("fp16"), dst)
                except MissingDependencyError:
                    pass  # the TensorRT 11 branch of the script then says what is missing
    variants = script_variants(lambda f: _trtexec_argv(bundle, config, True, f))
    rel = f"tensorrt/{config.precision}/{SCRIPT_FILE}"
    header = [
        f"Builds the TensorRT {config.precision} engine for this bundle (written by edgecv {_edgecv_version()}).",
        f"Target: {get_target(config.target).name}; device: {config.device or 'cuda:0'}.",
        f"Run it on the target device; the engine lands beside this script, its layer placement in {LAYER_INFO}.",
    ]
    if source_note:
        header.append(source_note)
    after: dict[str, list[str]] = {}
    for feats, v in variants:
        if isinstance(v, str):
            continue
        plan = plan_for(bundle, config, feats)
        onnx_rel = next(a.split("=", 1)[1] for a in v if a.startswith("--onnx="))
        record = shell_join(
            [
                "python3",
                "-m",
                "edgecv.backends.tensorrt_guard",
                "record",
                engine_rel(config.precision),
                json.dumps(plan.to_dict(), separators=(",", ":")),
                onnx_rel,
                get_target(config.target).name,
            ]
        )
        # the provenance sidecar, where edgecv and TensorRT's Python are installed (JetPack 6+; not JetPack 5)
        after[feats.label] = [
            'if python3 -c "import edgecv, tensorrt" >/dev/null 2>&1; then',
            f"  {record} || echo 'edgecv: no provenance sidecar written' >&2",
            "fi",
        ]
    text = render_script(
        variants, header, ['cd "$(dirname "$0")/../.."', f"mkdir -p tensorrt/{config.precision}"], after
    )
    with bundle.scratch() as tmp, bundle.update() as manifest:
        src = Path(tmp) / SCRIPT_FILE
        src.write_text(text)
        src.chmod(src.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        dst = bundle.add_file(rel, src)
        commands = {f.label: (v if isinstance(v, str) else shell_join(v)) for f, v in variants}
        manifest.history.append(
            {
                "event": "trtexec_script",
                "path": rel,
                "precision": config.precision,
                "command": commands[TYPED.label],
                "commands": commands,
                "target": get_target(config.target).name,
                "time": now_iso(),
            }
        )
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
        side = bundle.write_path(rel + ".json")  # the provenance sidecar trtexec.sh records beside it
        if side.is_file():
            manifest.files[rel + ".json"] = sha256_path(side)
        manifest.artifacts[f"tensorrt:{precision}"] = Artifact(
            backend="tensorrt",
            precision=precision,
            path=rel,
            sha256=digest,
            device="cuda",
            created=now_iso(),
            extra={"built_by": f"tensorrt/{precision}/{SCRIPT_FILE} on the device"},
        )
        manifest.history.append(
            {"event": "artifact", "key": f"tensorrt:{precision}", "time": now_iso(), "adopted": rel}
        )
    return rel


def _edgecv_version() -> str:
    from edgecv import __version__

    return __version__


# ====================================================================== build
@dataclass
class BuildResult:
    """What :func:`build_serialized_engine` returns: the plan bytes and what the build decided and found."""

    engine: bytes
    timing_cache: bytes
    flags: dict[str, Any]
    profiles: dict[str, Any]
    dla_unsupported: list[str]
    placement_log: list[str] = dataclasses.field(default_factory=list)


def _network_flags(trt: Any, strongly_typed: bool) -> int:
    """Creation flags by feature: STRONGLY_TYPED where asked; EXPLICIT_BATCH where the ONNX parser still needs
    it (TensorRT 8.6, which has no STRONGLY_TYPED; deprecated and ignored from 10)."""
    creation = trt.NetworkDefinitionCreationFlag
    flags = 0
    if strongly_typed and hasattr(creation, "STRONGLY_TYPED"):  # deprecated and ignored on 11, may go later
        flags |= 1 << int(creation.STRONGLY_TYPED)
    elif not hasattr(creation, "STRONGLY_TYPED") and hasattr(creation, "EXPLICIT_BATCH"):
        flags |= 1 << int(creation.EXPLICIT_BATCH)
    return flags


def build_serialized_engine(
    onnx_path: Path,
    contract: Contract,
    config: BuildConfig,
    timing_cache: bytes | None = None,
    plan: BuildPlan | None = None,
) -> BuildResult:
    """Parse ``onnx_path`` and build a serialized engine as ``plan`` says (made here from ``config`` when None).

    Raises:
        MissingDependencyError: TensorRT is not installed.
        ConfigError: the plan is impossible on this TensorRT or device.
        BackendError: the parser or the builder failed (the message carries TensorRT's errors).
    """
    _require_tensorrt()
    import tensorrt as trt

    logger = _make_logger()
    builder = trt.Builder(logger)
    dla_cores = int(getattr(builder, "num_DLA_cores", 0) or 0)  # by feature: DLA APIs may be absent (TRT 11.0–11.3)
    features = TrtFeatures.from_module(trt, dla_cores)
    if plan is None:
        plan = contract_plan(contract, config, features)
    if plan.onnx_kind == "qdq" and not is_qdq(onnx_path):
        raise ConfigError(
            f"tensorrt int8: expected a QDQ ONNX model (from edgecv.quant), found no Q/DQ nodes in '{onnx_path}'"
        )
    network = builder.create_network(_network_flags(trt, plan.strongly_typed))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [" ".join(str(parser.get_error(i)).split()) for i in range(parser.num_errors)]
        raise BackendError(f"TensorRT could not parse '{onnx_path}': {'; '.join(errors[:3]) or _logger_errors(logger)}")

    cfg = builder.create_builder_config()
    cfg.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(plan.workspace_mb) << 20)
    # DETAILED lets the runner read back each layer's precision and device from the engine inspector
    cfg.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    build_flags: dict[str, Any] = {
        "strongly_typed": plan.strongly_typed,
        "workspace_mb": plan.workspace_mb,
        "features": asdict(features),
        "plan": plan.to_dict(),
    }
    # each flag is named only in its branch: TensorRT 11 has no FP16/INT8/BF16 and the plan never asks for them there
    for flag in plan.flags:  # in the plan's order, as trtexec gets them
        if flag == "fp16":
            cfg.set_flag(trt.BuilderFlag.FP16)
        elif flag == "bf16":
            cfg.set_flag(trt.BuilderFlag.BF16)
        elif flag == "int8":
            cfg.set_flag(trt.BuilderFlag.INT8)
    build_flags["precision_flag"] = ",".join(plan.flags) or None

    if plan.keep_float:
        wanted = set(plan.keep_float)
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
    elif config.keep_float:
        # strongly typed: the graph carries it (fp16: the conversion's node block list; int8: no Q/DQ there)
        build_flags["keep_float"] = sorted(config.keep_float)

    dla_unsupported: list[str] = []
    if plan.dla_core is not None:
        if plan.dla_core >= dla_cores:
            raise ConfigError(f"--device dla:{plan.dla_core}: expected a DLA core below {dla_cores} on this device")
        cfg.default_device_type = trt.DeviceType.DLA
        cfg.DLA_core = plan.dla_core
        cfg.set_flag(trt.BuilderFlag.GPU_FALLBACK)
        dla_unsupported = [
            network.get_layer(i).name for i in range(network.num_layers) if not cfg.can_run_on_DLA(network.get_layer(i))
        ]
        build_flags["dla_core"] = plan.dla_core
    if plan.hardware_compat == "ampere+":
        cfg.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
        build_flags["hardware_compat"] = "ampere+"
    if plan.version_compatible:
        cfg.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
        build_flags["version_compatible"] = True

    profiles: dict[str, Any] = {}
    dynamic = any(any(d < 0 for d in _dims(network.get_input(i).shape)) for i in range(network.num_inputs))
    if dynamic:
        profile = builder.create_optimization_profile()
        for i in range(network.num_inputs):
            tensor = network.get_input(i)
            dims = _dims(tensor.shape)
            if any(d < 0 for d in dims[1:]):
                raise ConfigError(
                    f"tensorrt: input '{tensor.name}' has dynamic dims {dims}; expected only the batch "
                    "dim to be dynamic"
                )
            if not plan.shapes:
                raise ConfigError(
                    f"tensorrt: input '{tensor.name}' has a dynamic batch, but the bundle's contract "
                    "says static (batch_range [1, 1, 1]); expected a batch range to build a profile"
                )
            lo, opt, hi = (s[0] for s in plan.shapes.get(tensor.name, next(iter(plan.shapes.values()))))
            profile.set_shape(
                tensor.name, trt.Dims([lo, *dims[1:]]), trt.Dims([opt, *dims[1:]]), trt.Dims([hi, *dims[1:]])
            )
            profiles[tensor.name] = [[lo, *dims[1:]], [opt, *dims[1:]], [hi, *dims[1:]]]
        cfg.add_optimization_profile(profile)
        first = next(iter(profiles.values()))
        build_flags["batch_range"] = [first[0][0], first[1][0], first[2][0]]

    cache = cfg.create_timing_cache(timing_cache or b"")
    cfg.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, cfg)
    if serialized is None:
        raise BackendError(f"TensorRT could not build an engine from '{onnx_path}': {_logger_errors(logger)}")
    cache_bytes = bytes(memoryview(cfg.get_timing_cache().serialize()))
    return BuildResult(
        bytes(memoryview(serialized)),
        cache_bytes,
        build_flags,
        profiles,
        dla_unsupported,
        list(getattr(logger, "placement", [])),
    )


def placement_from_log(lines: list[str]) -> dict[str, list[str]] | None:
    """The builder's own placement report of a DLA build (INFO lines, as trtexec prints them too)::

        [DlaLayer] {ForeignNode[conv1_1...pool5]}
        [GpuLayer] SHUFFLE: shuffle_between_pool5_and_fc6

    Returns ``{"dla": [...], "gpu": [...]}``, or None when the log has no such lines.
    """
    dla: list[str] = []
    gpu: list[str] = []
    for line in lines:
        for part in line.splitlines():
            m = re.search(r"\[DlaLayer\]\s*(.+?)\s*$", part)
            if m:
                dla.append(m.group(1))
                continue
            m = re.search(r"\[GpuLayer\]\s*(?:[A-Z_0-9]+:\s*)?(.+?)\s*$", part)
            if m:
                gpu.append(m.group(1))
    return {"dla": dla, "gpu": gpu} if dla or gpu else None


def _inspect_engine(engine_bytes: bytes) -> Any:
    """Deserialize a just-built plan and return its inspector JSON (None when this TensorRT cannot say)."""
    import tensorrt as trt

    runtime = trt.Runtime(_make_logger("ERROR"))
    engine = runtime.deserialize_cuda_engine(engine_bytes)
    if engine is None:
        return None
    try:
        return json.loads(engine.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON))
    except Exception:  # noqa: BLE001 - an inspector failure must not lose a finished build
        return None


def _check_device_allows(plan: BuildPlan, device: Any) -> None:
    """Refuse in one line what this device cannot build, whatever the target said."""
    if plan.hardware_compat and device.l4t:
        raise ConfigError(
            f"--hardware-compat {plan.hardware_compat}: expected a discrete GPU, found a Jetson "
            f"(L4T {device.l4t}); hardware-compatible engines are not supported there"
        )
    if (
        plan.hardware_compat
        and device.compute_capability
        and tuple(int(x) for x in device.compute_capability.split(".")) < (8, 0)
    ):
        raise ConfigError(
            f"--hardware-compat {plan.hardware_compat}: expected an Ampere or newer GPU (sm_80+), "
            f"found sm_{device.compute_capability.replace('.', '')}"
        )
    if plan.dla_core is not None and device.dla_cores <= plan.dla_core:
        raise ConfigError(f"--device dla:{plan.dla_core}: expected a DLA core below {device.dla_cores} on this device")


def _sha256(path: Path) -> str:
    from edgecv._io import sha256_path

    return sha256_path(path)


class TensorRTBuilder(Builder):
    """Builds ``tensorrt/<precision>/model.engine`` and its provenance sidecar into a bundle (or, with
    ``emit_only``, a trtexec script).

    int8 builds from a QDQ model: ``config.onnx_path`` (what :func:`edgecv.quant.quantize` passes after making
    it), else the bundle's ``model.onnx`` when that is QDQ (a bundle from ``edgecv quantize``); the builder never
    quantizes.
    """

    name = "tensorrt"

    def build(self, bundle: Bundle, config: BuildConfig) -> Artifact:
        from edgecv.bundle import Artifact

        if config.precision not in PRECISIONS:
            raise ConfigError(
                f"tensorrt precision: expected one of {', '.join(PRECISIONS)}, found '{config.precision}'"
            )
        if config.emit_only:
            path = write_trtexec_script(bundle, config)
            # describes the script; it is recorded as a file in the manifest, not as a runnable artifact
            return Artifact(
                backend="tensorrt",
                precision=config.precision,
                path=str(path.relative_to(bundle.root)),
                device=config.device,
                build_flags={"emit_only": True},
                extra={"command": trtexec_command(bundle, config)},
            )
        _require_tensorrt()
        import tensorrt as trt

        from edgecv.backends.tensorrt_guard import make_sidecar, probe_device, target_for

        device_index, _ = parse_device(config.device if config.device and config.device.upper() != "CPU" else None)
        probe_builder = trt.Builder(_make_logger("ERROR"))
        dla_cores = int(getattr(probe_builder, "num_DLA_cores", 0) or 0)
        features = TrtFeatures.from_module(trt, dla_cores)
        try:
            cudart = _cudart()
        except MissingDependencyError:
            cudart = None  # the sidecar then lacks the CUDA versions and GPU name; the build itself needs only TensorRT
        device = probe_device(trt, cudart, device_index, dla_cores=dla_cores)
        if config.target is None:  # building on the device: its own preset (workspace, DLA cores)
            config = dataclasses.replace(config, target=target_for(device))
        plan = plan_for(bundle, config, features)
        _check_device_allows(plan, device)
        onnx_path = _source_onnx(bundle, config, plan)
        cache_path = Path(config.timing_cache) if config.timing_cache else bundle.path(TIMING_CACHE)
        cache_in = cache_path.read_bytes() if cache_path.is_file() else None
        rel = engine_rel(config.precision)
        with bundle.scratch() as tmp:
            files: dict[str, Path] = {}
            convert: dict[str, Any] = {}
            if plan.onnx_kind == "fp16":
                onnx_path = Path(tmp) / "model.fp16.onnx"
                convert = fp16_onnx(Path(config.onnx_path or bundle.onnx_path), onnx_path, plan.fp16_keep)
                files[fp16_rel(config.precision)] = onnx_path
            t0 = time.perf_counter()
            res = build_serialized_engine(onnx_path, bundle.contract, config, cache_in, plan=plan)
            flags = res.flags
            flags["build_time_s"] = round(time.perf_counter() - t0, 3)
            flags["timing_cache"] = TIMING_CACHE if not config.timing_cache else str(config.timing_cache)
            if convert:
                flags["fp16_conversion"] = convert
            placement: dict[str, list[str]] = {}
            if plan.dla_core is not None:
                # the builder's own report first; the engine inspector where the log has none
                from_log = placement_from_log(res.placement_log)
                info = None if from_log is not None else _inspect_engine(res.engine)
                placement = from_log or (layer_placement(info) if info is not None else {})
                flags["dla_placement_source"] = (
                    "builder log"
                    if from_log is not None
                    else ("engine inspector" if info is not None else "can_run_on_DLA only")
                )
            engine_tmp = Path(tmp) / ENGINE_FILE
            engine_tmp.write_bytes(res.engine)
            files[rel] = engine_tmp
            if not config.timing_cache:
                cache_tmp = Path(tmp) / "timing.cache"
                cache_tmp.write_bytes(res.timing_cache)
                files[TIMING_CACHE] = cache_tmp
            elif res.timing_cache:
                from edgecv._io import write_bytes

                write_bytes(cache_path, res.timing_cache)
            onnx_rel = (
                fp16_rel(config.precision)
                if plan.onnx_kind == "fp16"
                else _rel_or_abs(onnx_path, Path("."), bundle.root)
            )
            fallback = placement.get("gpu", res.dla_unsupported) if plan.dla_core is not None else []
            sidecar = make_sidecar(
                device,
                precision=config.precision,
                dla_core=plan.dla_core,
                profiles=res.profiles,
                builder_flags={k: v for k, v in flags.items() if k not in ("plan", "features")},
                onnx_rel=onnx_rel,
                onnx_sha256=_sha256(onnx_path),
                target=get_target(config.target).name,
                hardware_compat=plan.hardware_compat,
                version_compatible=plan.version_compatible,
                plan=plan.to_dict(),
                dla_fallback=fallback,
                edgecv_version=_edgecv_version(),
            )
            side_tmp = Path(tmp) / (ENGINE_FILE + ".json")
            side_tmp.write_text(json.dumps(sidecar, indent=2) + "\n")
            files[rel + ".json"] = side_tmp
            extra: dict[str, Any] = {"source": onnx_path.name, "provenance": rel + ".json", "notes": plan.notes}
            if plan.dla_core is not None:
                extra.update(
                    {
                        "dla_core": plan.dla_core,
                        "dla_layers": placement.get("dla", []),
                        "dla_gpu_fallback_layers": fallback,
                        "dla_unsupported_layers": res.dla_unsupported,
                    }
                )
            art = Artifact(
                backend="tensorrt",
                precision=config.precision,
                path=rel,
                device=f"dla:{plan.dla_core}" if plan.dla_core is not None else f"cuda:{device_index}",
                build_flags=flags,
                versions={"edgecv": _edgecv_version(), "tensorrt": trt.__version__, "cuda-python": version_of("cuda")},
                extra=extra,
            )
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
        device: ``cuda``, ``cuda:N`` (default ``cuda:0``) or ``dla:N`` (an engine built for that DLA core).
        threads: ignored (GPU), accepted for a uniform interface.
        bundle: the bundle the engine belongs to (for the rebuild command and ``rebuild``).
        rebuild: rebuild an engine whose sidecar does not match this device; None follows the CLI's ``--rebuild``.
    """

    name = "tensorrt"

    def __init__(
        self,
        engine_path: str | Path,
        precision: str = "fp32",
        device: str | None = None,
        threads: int | None = None,
        bundle: Bundle | None = None,
        rebuild: bool | None = None,
    ) -> None:
        super().__init__()
        self.engine_path = Path(engine_path)
        self.requested_precision = precision
        self.precision = precision
        self.device_index, self.dla_core = parse_device(device)
        self.device = f"dla:{self.dla_core}" if self.dla_core is not None else f"cuda:{self.device_index}"
        self.bundle = bundle
        self.rebuild = rebuild  # None: follow edgecv.backends.tensorrt_guard.REBUILD (the CLI's --rebuild)
        self.provenance: dict[str, Any] | None = None
        self.rebuilt = False
        self._runtime: trt.Runtime | None = None
        self._engine: trt.ICudaEngine | None = None
        self._context: trt.IExecutionContext | None = None
        self._stream: Any = None
        self._cudart: Any = None
        self._buffers: dict[str, tuple[int, int]] = {}  # name → (device pointer, capacity bytes)
        self._logger: trt.ILogger | None = None

    @classmethod
    def from_bundle(
        cls,
        bundle: Bundle,
        precision: str = "fp32",
        device: str | None = None,
        threads: int | None = None,
        rebuild: bool | None = None,
        **kw: Any,
    ) -> TensorRTRunner:
        """A runner for the bundle's engine at ``precision``.

        An engine built on the device by the emitted ``trtexec.sh`` is not in the manifest; it is used when it
        sits where the script writes it (it has no provenance sidecar, so it loads unguarded).
        """
        if kw:
            raise ConfigError(f"tensorrt runner: unexpected options {sorted(kw)}")
        art = bundle.artifact("tensorrt", precision)
        if art is not None:
            side = art.path + ".json"
            # the sidecar decides whether the engine may load: hash-checked like the engine
            if side in bundle.manifest.files:
                bundle.file(side)
            if device is None and str(art.device).startswith("dla:"):
                device = art.device  # a DLA engine runs on the core it was built for
            return cls(bundle.file(art.path), precision, device, threads, bundle=bundle, rebuild=rebuild)
        fallback = bundle.path(engine_rel(precision))
        if fallback.is_file():
            # built on the device by the emitted trtexec.sh: recorded (hashed) on first use, so every later use is
            # checked like any other artifact
            return cls(
                bundle.file(adopt_engine(bundle, precision)), precision, device, threads, bundle=bundle, rebuild=rebuild
            )
        raise BackendError(
            f"bundle '{bundle.root}' has no tensorrt {precision} engine; build it with: edgecv compile "
            f"{bundle.root} --backend tensorrt --precision {precision} (or --emit-trtexec and run the script)"
        )

    def _guard(self, trt_mod: Any, cudart: Any, dla_cores: int) -> None:
        """Compare the sidecar with this device before deserializing; refuse, or rebuild with --rebuild."""
        from edgecv.backends.tensorrt_guard import REBUILD, check_engine, mismatch_message, probe_device, read_sidecar

        sidecar = read_sidecar(self.engine_path)
        self.provenance = sidecar
        if sidecar is None:
            import logging

            logging.getLogger("edgecv.tensorrt").warning(
                "'%s' has no provenance sidecar (built by trtexec.sh?): loading it unguarded", self.engine_path
            )
            return
        here = probe_device(trt_mod, cudart, self.device_index, dla_cores=dla_cores)
        fields = check_engine(sidecar, here)
        if not fields:
            return
        root = self.bundle.root if self.bundle is not None else self.engine_path.parent
        rebuild = REBUILD.get() if self.rebuild is None else self.rebuild
        if not rebuild or self.bundle is None:
            raise BackendError(mismatch_message(sidecar, here, fields, root))
        self._rebuild_from(sidecar, here)
        self.provenance = read_sidecar(self.engine_path)

    def _rebuild_from(self, sidecar: dict[str, Any], here: Any) -> None:
        """Rebuild the engine from the bundle's ONNX (the QDQ file for int8) with the recorded options."""
        from edgecv.backends.tensorrt_guard import rebuild_config

        if self.bundle is None:
            raise BackendError("tensorrt --rebuild: expected the engine's bundle, found a bare engine file")
        art = TensorRTBuilder().build(self.bundle, rebuild_config(self.bundle, sidecar, here, self.device_index))
        self.engine_path = self.bundle.file(art.path)
        self.rebuilt = True

    def needs_host_code(self) -> bool:
        """True when the engine is version-compatible (it carries TensorRT's lean runtime as host code) and the user
        allowed that in this invocation; refuses in one line when not allowed. A bundle is data (DESIGN rule 15):
        code in it runs only when the user says so."""
        if not (self.provenance and self.provenance.get("version_compatible")):
            return False
        if os.environ.get(TRUST_ENGINE_CODE_ENV) != "1":
            raise BackendError(
                f"engine '{self.engine_path}' is version-compatible: it carries TensorRT's lean runtime as host code, "
                f"which edgecv does not run from a bundle unasked; set {TRUST_ENGINE_CODE_ENV}=1 if you trust its "
                "builder, or rebuild it here without --version-compatible"
            )
        return True

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
        dla_cores = int(getattr(runtime, "num_DLA_cores", 0) or 0)
        self._guard(trt, cudart, dla_cores)
        if self.dla_core is not None:
            if self.dla_core >= dla_cores:
                raise BackendError(f"tensorrt device '{self.device}': this device has {dla_cores} DLA core(s)")
            runtime.DLA_core = self.dla_core
        if self.needs_host_code():
            runtime.engine_host_code_allowed = True
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
