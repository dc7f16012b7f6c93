"""INT8 quantization: calibration sources, QDQ ONNX (ONNX Runtime), OpenVINO IR (NNCF), TensorRT from QDQ,
an accuracy budget that keeps sensitive layers in float, and layer-by-layer diagnosis.

Runtime tier: no torch. Frameworks are imported when a function needs them.
"""

from __future__ import annotations

from edgecv.quant.calib import CalibrationSource, CalibrationWarning, open_calibration

__all__ = [
    "CalibrationSource",
    "CalibrationWarning",
    "compile_int8",
    "layer_divergence",
    "open_calibration",
    "quantize_bundle",
]


def __getattr__(name: str):
    if name in ("compile_int8", "quantize_bundle"):
        from edgecv.quant import api

        return getattr(api, name)
    if name == "layer_divergence":
        from edgecv.quant.layers import layer_divergence

        return layer_divergence
    raise AttributeError(name)
