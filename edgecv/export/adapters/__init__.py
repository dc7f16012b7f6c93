"""Detector adapters: wrap a detector edgecv did not write (torchvision, Ultralytics, …) so that it exports like a zoo
detector.

An adapter is registered under a family name with two functions:

* ``matches(module) -> bool``: cheap test on the live ``nn.Module`` (usually its class's ``__module__``);
* ``wrap(loaded, options) -> LoadedModel``: a new :class:`~edgecv.export.sources.LoadedModel` whose module speaks the
  zoo detector protocol that :func:`edgecv.export.detection.prepare_detection_export` consumes, and whose contract
  carries what the adapter knows (input size, resize/letterbox, mean/std, class names, strides). The module either

  - exposes ``decode(raw) -> (boxes [B,N,4] xyxy in input pixels, scores [B,N,C] in [0,1])`` and
    ``decode_info() -> dict`` (what host-side decoding needs, or ``{}`` when the raw head cannot be decoded on the
    host), plus ``num_classes``; or
  - runs its own NMS (``exports_graph_nms = True`` and ``set_postprocess(score_threshold, iou_threshold, max_det)``)
    and returns the graph outputs ``boxes, scores, classes, num_dets`` itself.

Families are imported lazily, on first lookup, from :data:`BUILTIN_FAMILIES`, so importing this package needs neither
torch nor any third-party detector library. This is the build tier.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgecv.export.loaded import LoadedModel

#: family name → module that registers it when imported
BUILTIN_FAMILIES: dict[str, str] = {
    "torchvision": "edgecv.export.adapters.torchvision",
    "ultralytics": "edgecv.export.adapters.ultralytics",
}


@dataclass(frozen=True)
class AdapterOptions:
    """What the user asked for at export time (``None``: the adapter's default)."""

    nms: str = "graph"
    score_threshold: float | None = None
    iou_threshold: float | None = None
    max_det: int | None = None
    class_names: list[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DetectorAdapter:
    name: str
    matches: Callable[[Any], bool]
    wrap: Callable[[LoadedModel, AdapterOptions], LoadedModel]
    description: str = ""


_REGISTRY: dict[str, DetectorAdapter] = {}
_LOADED: set[str] = set()


def register_adapter(adapter: DetectorAdapter) -> DetectorAdapter:
    """Add (or replace) a family's adapter; returns it so a module can keep a reference."""
    _REGISTRY[adapter.name] = adapter
    return adapter


def _load_builtins() -> None:
    for family, module_name in BUILTIN_FAMILIES.items():
        if family in _LOADED:
            continue
        _LOADED.add(family)
        try:
            importlib.import_module(module_name)
        except ModuleNotFoundError as exc:  # the family's module is not written yet, or its library is absent
            if exc.name != module_name:
                raise


def adapters() -> dict[str, DetectorAdapter]:
    """Every registered adapter, built-in families loaded."""
    _load_builtins()
    return dict(_REGISTRY)


def find_adapter(module: Any) -> DetectorAdapter | None:
    """The adapter whose ``matches`` accepts ``module``, or None."""
    for adapter in adapters().values():
        if adapter.matches(module):
            return adapter
    return None
