"""Data sets (torch Datasets over OpenCV-decoded images), the synthetic generator and calibration sampling.

Importing this package imports no torch: the loaders (``edgecv.data.datasets``) are loaded on first use, while
``synth`` and ``calib`` need numpy + OpenCV only.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "ImageFolderDataset": "edgecv.data.datasets",
    "CocoDetection": "edgecv.data.datasets",
    "YoloDetection": "edgecv.data.datasets",
    "SegmentationFolder": "edgecv.data.datasets",
    "ImageListDataset": "edgecv.data.datasets",
    "TransformedDataset": "edgecv.data.datasets",
    "ImageTransform": "edgecv.data.datasets",
    "detection_collate": "edgecv.data.datasets",
    "open_dataset": "edgecv.data.datasets",
    "read_image": "edgecv.data.readers",
    "generate": "edgecv.data.synth",
    "generate_images": "edgecv.data.synth",
    "sample_diverse": "edgecv.data.calib",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'edgecv.data' has no attribute '{name}'")
