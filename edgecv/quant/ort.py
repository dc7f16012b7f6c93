"""QDQ ONNX through ONNX Runtime's static quantizer: the portable INT8 format.

The QDQ model (QuantizeLinear/DequantizeLinear pairs around fp32 ops) is what TensorRT (explicit quantization),
OpenVINO (reads Q/DQ as FakeQuantize) and ONNX Runtime all take. We always quantize with: per-channel symmetric
INT8 weights, symmetric INT8 activations (zero point 0, which TensorRT requires), QDQ format. The ORT
``extra_options`` dict stays inside this module; callers pass the typed :class:`QuantMethod`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from edgecv._console import chatter_to_stderr
from edgecv._io import scratch_dir
from edgecv._lazy import lazy_import
from edgecv.errors import BackendError, ConfigError
from edgecv.quant.layers import name_nodes, save_model

if TYPE_CHECKING:
    from collections.abc import Iterator

    from edgecv.quant.calib import CalibrationSource

QuantMethod = Literal["minmax", "entropy", "percentile"]
METHODS: tuple[str, ...] = ("minmax", "entropy", "percentile")
PERCENTILE = 99.999  # ORT's own default; the 0.001 % tail is clipped


def check_method(method: str, allow_auto: bool = True) -> str:
    choices = (*METHODS, "auto") if allow_auto else METHODS
    if method not in choices:
        raise ConfigError(f"--method: expected one of {', '.join(choices)}, found '{method}'")
    return method


def prepare_fp32(src: str | Path, dst: str | Path) -> Path:
    """``quant_pre_process`` (shape inference + basic graph optimizations such as BN folding), then name nodes.

    Every INT8 path starts from this one graph, so node names in ``kept_float`` mean the same thing to ORT,
    NNCF (after mapping) and TensorRT.
    """
    onnx = lazy_import("onnx")
    q = lazy_import("onnxruntime.quantization", "onnxruntime")
    src = Path(src)
    original = onnx.load(str(src))
    src = src.resolve()
    with scratch_dir("prep") as tmp:
        out = Path(tmp) / "prep.onnx"
        # quant_pre_process writes scratch files (sym_shape_infer_temp.onnx, <uuid>.data) into the current
        # folder: run it from the temporary one so a user's folder (or the repo) is left clean
        cwd = os.getcwd()
        os.chdir(tmp)
        try:
            with chatter_to_stderr():  # shape inference may print to stdout
                try:
                    q.quant_pre_process(str(src), str(out), skip_symbolic_shape=False)
                except Exception as exc:  # noqa: BLE001 - symbolic shape inference fails on some graphs; plain ONNX shapes are enough
                    try:
                        q.quant_pre_process(str(src), str(out), skip_symbolic_shape=True)
                    except Exception:  # noqa: BLE001 - re-raised below as one BackendError line
                        raise BackendError(f"ONNX Runtime quant_pre_process failed on '{src}': {exc}") from exc
        finally:
            os.chdir(cwd)
        model = onnx.load(str(out))
    name_nodes(model)
    # keep the embedded contract (pre-processing may drop metadata_props)
    have = {p.key for p in model.metadata_props}
    for p in original.metadata_props:
        if p.key not in have:
            model.metadata_props.add(key=p.key, value=p.value)
    return save_model(model, dst)


class _Reader:
    """ORT ``CalibrationDataReader`` over a :class:`CalibrationSource` (defined lazily: ORT is optional)."""

    def __init__(self, source: CalibrationSource) -> None:
        self.source = source
        self._it: Iterator[dict[str, Any]] | None = None

    def get_next(self) -> dict[str, Any] | None:
        if self._it is None:
            self._it = iter(self.source)
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = None


def _make_reader(source: CalibrationSource) -> Any:
    q = lazy_import("onnxruntime.quantization", "onnxruntime")

    class SourceReader(_Reader, q.CalibrationDataReader):  # type: ignore[misc, name-defined]
        pass

    return SourceReader(source)


def calibratable_op_types(model: Any) -> list[str] | None:
    """Op types to calibrate when the graph has data-dependent shapes (NMS in the graph), else None (all).

    Tensors downstream of ``NonMaxSuppression`` change length from image to image; ORT's histogram calibrators
    (entropy, percentile) cannot stack them and fail. Op types found there are left out of calibration (and so
    stay float everywhere: they are the detector's post-processing, which stays float anyway).
    """
    nodes = list(model.graph.node)
    if not any(n.op_type == "NonMaxSuppression" for n in nodes):
        return None
    tainted = {o for n in nodes if n.op_type == "NonMaxSuppression" for o in n.output}
    downstream: set[str] = {"NonMaxSuppression"}
    for n in nodes:  # ONNX graphs are topologically sorted
        if any(i in tainted for i in n.input):
            tainted.update(n.output)
            downstream.add(n.op_type)
    return sorted({n.op_type for n in nodes} - downstream)


def reduced_weight_range() -> bool:
    """Quantize weights to 7 bits on an x86 CPU without VNNI (asked of the CPU, DESIGN rule 16).

    There ONNX Runtime's int8 kernels multiply u8 x s8 pairs with AVX2 ``vpmaddubsw``, whose int16 sums saturate
    with full 8-bit weights; ORT's own advice is ``reduce_range``. Measured on a 2-core AMD EPYC with AVX2 only:
    output cosine of a small CNN 0.980 with 8-bit weights, > 0.99 with 7-bit. VNNI (AVX512-VNNI, AVX-VNNI, AMX)
    accumulates in int32 and needs no reduction; other architectures are not affected.
    """
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64", "i686", "x86"):
        return False
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((ln.split(":", 1)[1].split() for ln in f if ln.startswith("flags")), [])
    except OSError:
        return False  # not Linux: keep 8-bit weights
    return not {"avx512_vnni", "avx_vnni", "amx_int8"} & set(flags)


def quantize_qdq(
    prepared: str | Path,
    out: str | Path,
    calib: CalibrationSource,
    method: str = "minmax",
    exclude: list[str] | None = None,
) -> Path:
    """Write a QDQ INT8 model of ``prepared`` (from :func:`prepare_fp32`) to ``out`` atomically.

    Args:
        prepared: pre-processed fp32 ONNX path.
        out: destination ``.onnx``.
        calib: calibration source; every sample is used.
        method: ``minmax``, ``entropy`` or ``percentile`` (ORT CalibrationMethod).
        exclude: node names to keep in floating point (``nodes_to_exclude``).
    """
    q = lazy_import("onnxruntime.quantization", "onnxruntime")
    check_method(method, allow_auto=False)
    calib_method = {
        "minmax": q.CalibrationMethod.MinMax,
        "entropy": q.CalibrationMethod.Entropy,
        "percentile": q.CalibrationMethod.Percentile,
    }[method]
    extra: dict[str, Any] = {
        "ActivationSymmetric": True,  # zero point 0: TensorRT explicit quantization needs it
        "WeightSymmetric": True,
        "CalibTensorRangeSymmetric": method != "minmax",  # histogram methods: symmetric range around 0
        # a Conv/Gemm output is quantized by its consumer when the consumer runs INT8; never on its own, so a
        # float head or a kept-float layer after it really reads float (and logits are not rounded)
        "OpTypesToExcludeOutputQuantization": ["Conv", "ConvTranspose", "Gemm", "MatMul"],
    }
    if method == "percentile":
        extra["CalibPercentile"] = PERCENTILE
    from edgecv._io import atomic_path

    with atomic_path(out) as tmp, scratch_dir("q") as work:
        # ORT writes augmented models next to a temp path; keep them out of the bundle
        tmp_model = Path(work) / "model.qdq.onnx"
        op_types = calibratable_op_types(lazy_import("onnx").load(str(prepared), load_external_data=False))
        try:
            with chatter_to_stderr():  # the histogram calibrators print progress to stdout
                q.quantize_static(
                    str(prepared),
                    str(tmp_model),
                    _make_reader(calib),
                    quant_format=q.QuantFormat.QDQ,
                    per_channel=True,
                    reduce_range=reduced_weight_range(),
                    activation_type=q.QuantType.QInt8,
                    weight_type=q.QuantType.QInt8,
                    nodes_to_exclude=list(exclude or []),
                    calibrate_method=calib_method,
                    extra_options=extra,
                    op_types_to_quantize=op_types,
                )
        except Exception as exc:
            raise BackendError(f"ONNX Runtime quantize_static ({method}) failed: {exc}") from exc
        tmp_model.replace(tmp)
    return Path(out)
