"""OpenVINO INT8 IR through NNCF post-training quantization.

The fp32 model is converted from the same pre-processed ONNX graph the QDQ model came from, so the layers kept
in floating point (ONNX node names) can be mapped onto OpenVINO ops: the ONNX frontend names an op after its
ONNX node (``/3/Conv``), splits some into ``/3/Conv/WithoutBiases`` + ``/3/Conv``, or names the last op after
the graph output tensor. :func:`map_onnx_to_ov` resolves all three and refuses names it cannot find, so a
kept-float choice is never silently dropped on this backend.

Method mapping (ORT calibration method → NNCF activation range estimator):
``minmax`` → ``MINMAX``, ``entropy`` → ``HISTOGRAM`` (optimal range from a histogram, NNCF's analogue of KL
calibration), ``percentile`` → ``MEAN_QUANTILE``. Preset ``PERFORMANCE``: symmetric activations and weights,
per-channel weights (NNCF's default granularity for Conv/MatMul weights).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgecv._console import chatter_to_stderr
from edgecv._io import describe_write_error
from edgecv._lazy import lazy_import
from edgecv.errors import BackendError

if TYPE_CHECKING:
    from edgecv.quant.calib import CalibrationSource

QUANT_OPS = frozenset({"FakeQuantize", "FakeConvert"})


def _nncf() -> Any:
    """NNCF, imported quietly: its per-tensor fallback warnings and torch's CUDA probe (NNCF imports torch when
    it is installed) are noise in a CLI table; the calibration count and method are reported by edgecv itself."""
    import logging

    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    nncf = lazy_import("nncf", "openvino")
    nncf.set_log_level(logging.ERROR)
    return nncf


def convert(prepared: str | Path) -> Any:
    """``ov.convert_model`` of the pre-processed fp32 ONNX graph."""
    ov = lazy_import("openvino")
    try:
        return ov.convert_model(str(prepared))
    except Exception as exc:
        raise BackendError(f"OpenVINO could not convert '{prepared}': {exc}") from exc


def map_onnx_to_ov(onnx_model: Any, ov_model: Any, names: list[str]) -> dict[str, list[str]]:
    """OpenVINO op friendly names for each ONNX node name in ``names``.

    Nodes folded away by ``convert_model`` (constant arithmetic) have no op and are left out of the result.

    Raises:
        BackendError: none of the nodes has an OpenVINO op (the names do not belong to this graph).
    """
    by_node = {n.name: n for n in onnx_model.graph.node}
    ops = [op for op in ov_model.get_ordered_ops() if op.get_type_name() not in ("Constant", "Parameter", "Result")]
    out: dict[str, list[str]] = {}
    missing: list[str] = []
    for name in names:
        node = by_node.get(name)
        tensors = set(node.output) if node is not None else set()
        hits = [
            op.get_friendly_name()
            for op in ops
            if op.get_friendly_name() == name
            or op.get_friendly_name().startswith(name + "/")
            or any(tensors & set(o.get_names()) for o in op.outputs())
        ]
        if hits:
            out[name] = sorted(set(hits))
        else:
            missing.append(name)
    if missing and len(missing) == len(names):
        raise BackendError(
            f"kept-float layers {missing} have no OpenVINO op after convert_model; expected ops named "
            "like the ONNX nodes"
        )
    # a node with no op left was folded away by convert_model (e.g. arithmetic on constants such as a detector's
    # anchor grid): there is nothing to quantize, so nothing to keep float
    return out


def quantized_ops(ov_model: Any) -> list[str]:
    """Friendly names of ops fed by a FakeQuantize (the ops that run in INT8)."""
    names = []
    for op in ov_model.get_ordered_ops():
        if op.get_type_name() in QUANT_OPS or op.get_type_name() in ("Constant", "Convert"):
            continue
        if any(inp.get_source_output().get_node().get_type_name() in QUANT_OPS for inp in op.inputs()):
            names.append(op.get_friendly_name())
    return names


def count_fake_quantize(ov_model: Any) -> int:
    return sum(1 for op in ov_model.get_ordered_ops() if op.get_type_name() in QUANT_OPS)


def _advanced(method: str) -> Any:
    nncf = _nncf()
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet as R

    est = {"minmax": R.MINMAX, "entropy": R.HISTOGRAM, "percentile": R.MEAN_QUANTILE}[method]
    del nncf
    return AdvancedQuantizationParameters(activations_range_estimator_params=est)


def _ignored_scope(nncf: Any, ignored: list[str] | None) -> Any:
    return nncf.IgnoredScope(names=list(ignored or []))


def quantize_nncf(
    ov_model: Any, calib: CalibrationSource, method: str = "minmax", ignored: list[str] | None = None
) -> Any:
    """``nncf.quantize`` an OpenVINO model with every calibration sample; ``ignored`` = OV op names kept float."""
    nncf = _nncf()
    try:
        with chatter_to_stderr():  # NNCF's progress bars and notices go to stdout
            return nncf.quantize(
                ov_model,
                nncf.Dataset(calib),
                preset=nncf.QuantizationPreset.PERFORMANCE,
                subset_size=len(calib),
                ignored_scope=_ignored_scope(nncf, ignored),
                advanced_parameters=_advanced(method),
            )
    except Exception as exc:
        raise BackendError(f"NNCF quantize ({method}) failed: {exc}") from exc


def quantize_nncf_with_accuracy_control(
    ov_model: Any,
    calib: CalibrationSource,
    val: Any,
    validate: Callable[[Any, Any], float],
    max_drop: float,
    method: str = "minmax",
    ignored: list[str] | None = None,
) -> Any:
    """``nncf.quantize_with_accuracy_control``: NNCF reverts the most sensitive ops to float until
    ``validate(compiled_model, val)`` (points) drops at most ``max_drop`` (absolute)."""
    nncf = _nncf()
    try:
        with chatter_to_stderr():  # NNCF's progress bars and notices go to stdout
            return nncf.quantize_with_accuracy_control(
                ov_model,
                nncf.Dataset(calib),
                nncf.Dataset(val),
                validate,
                max_drop=max_drop,
                drop_type=nncf.DropType.ABSOLUTE,
                preset=nncf.QuantizationPreset.PERFORMANCE,
                subset_size=len(calib),
                ignored_scope=_ignored_scope(nncf, ignored),
                advanced_quantization_parameters=_advanced(method),
            )
    except Exception as exc:
        raise BackendError(f"NNCF quantize_with_accuracy_control failed: {exc}") from exc


def save_ir(ov_model: Any, folder: Path, stem: str = "model") -> dict[str, Path]:
    """Write ``<stem>.xml``/``.bin`` into a fresh temporary folder beside ``folder``; returns name → temp file."""
    ov = lazy_import("openvino")
    folder.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".build-{os.getpid()}-ov-", dir=folder))
    try:
        ov.save_model(ov_model, str(tmp / f"{stem}.xml"), compress_to_fp16=False)
    except Exception as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise BackendError(
            f"could not write the OpenVINO IR into {folder}: {describe_write_error(exc, folder)}"
        ) from exc
    return {f"{stem}.xml": tmp / f"{stem}.xml", f"{stem}.bin": tmp / f"{stem}.bin"}
