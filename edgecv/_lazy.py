"""Lazy imports of optional frameworks with an error that names the extra to install.

Modelled on Polygraphy's ``mod/importer.py``: importing edgecv never imports torch, openvino, tensorrt or
onnxruntime; the module is imported the first time it is needed, and a missing one is reported as
``pip install 'edgecv[extra]'``.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from edgecv.errors import MissingDependencyError

# module → extra that provides it
_EXTRAS = {
    "torch": "torch",
    "torchvision": "torch",
    "onnx": "onnxruntime",
    "onnxruntime": "onnxruntime",
    "onnxslim": "torch",
    "openvino": "openvino",
    "nncf": "openvino",
    "tensorrt": "tensorrt",
    "cuda": "tensorrt",
    "cv2": "stream",
    "paho": "mqtt",
    "ultralytics": "ultralytics",
}


_REAL_MODULE_CHECK = {"tensorrt": "tensorrt-stubs is installed, not TensorRT"}


def lazy_import(module: str, extra: str | None = None) -> ModuleType:
    """Import ``module`` now, or raise :class:`MissingDependencyError` naming the extra that provides it.

    Args:
        module: dotted module name, e.g. ``"openvino"``.
        extra: the ``edgecv[...]`` extra to suggest; defaults to a table keyed by the top-level package.
    """
    try:
        mod = importlib.import_module(module)
        if getattr(mod, "__file__", None) is None and module in _REAL_MODULE_CHECK:
            # a stub-only namespace package (e.g. tensorrt-stubs) is not the framework
            raise ImportError(f"'{module}' is only type stubs ({_REAL_MODULE_CHECK[module]})")
        return mod
    except ImportError as exc:
        top = module.split(".")[0]
        extra = extra or _EXTRAS.get(top, top)
        raise MissingDependencyError(
            f"this needs '{module}', which is not installed (import failed: {exc}); "
            f"install it with: pip install 'edgecv[{extra}]'"
        ) from exc


def is_available(module: str) -> bool:
    """True if ``module`` can be imported (imports it)."""
    try:
        lazy_import(module)
    except Exception:  # noqa: BLE001 - an optional module may fail to import in any way
        return False
    return True


def version_of(module: str) -> str | None:
    """The ``__version__`` of an importable module, or None when it is not installed."""
    try:
        mod: Any = importlib.import_module(module)
    except Exception:  # noqa: BLE001 - an optional module may fail to import in any way
        return None
    return str(getattr(mod, "__version__", "unknown"))
