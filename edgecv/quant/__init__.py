"""INT8 quantization: calibration sources, QDQ ONNX (ONNX Runtime), OpenVINO IR (NNCF), TensorRT from QDQ,
an accuracy budget that keeps sensitive layers in float, and layer-by-layer diagnosis.

One entry point: ``quantize(bundle, QuantConfig(...))``. Runtime tier: no torch. Frameworks are imported when a
function needs them.
"""

from __future__ import annotations

from typing import Any

from edgecv.quant.calib import CalibrationSource, CalibrationWarning, open_calibration
from edgecv.quant.config import QuantConfig, QuantResult

__all__ = [
    "CalibrationSource",
    "CalibrationWarning",
    "QuantConfig",
    "QuantResult",
    "layer_divergence",
    "open_calibration",
    "quantize",
]


def __getattr__(name: str) -> Any:
    if name == "quantize":
        from edgecv.quant.api import quantize

        return quantize
    if name == "layer_divergence":
        from edgecv.quant.layers import layer_divergence

        return layer_divergence
    raise AttributeError(name)
