"""Build tier: load a PyTorch model from any source and export it to ONNX inside a bundle.

Nothing here is imported by the runtime tier. Submodules import torch lazily, so ``import edgecv.export`` is cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgecv.export.loaded import LoadedModel
    from edgecv.export.onnx import ExportResult, export_model, make_reference_inputs
    from edgecv.export.sources import load_model, load_model_from_manifest, parse_input_shape

__all__ = [
    "ExportResult",
    "LoadedModel",
    "export_model",
    "load_model",
    "load_model_from_manifest",
    "make_reference_inputs",
    "parse_input_shape",
]

_WHERE = {
    "ExportResult": "onnx",
    "export_model": "onnx",
    "make_reference_inputs": "onnx",
    "LoadedModel": "loaded",
    "load_model": "sources",
    "load_model_from_manifest": "sources",
    "parse_input_shape": "sources",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f"edgecv.export.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'edgecv.export' has no attribute '{name}'")
