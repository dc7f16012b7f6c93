"""Class-agnostic region proposals on the host: selective search (Uijlings et al. 2013) from OpenCV contrib's
``cv2.ximgproc.segmentation``, as R-CNN and Fast R-CNN use them (numpy + OpenCV, no torch: runtime tier).

Use::

    boxes = selective_search(image_uint8_hwc, max_proposals=2000)   # [N,4] float32 xyxy pixels, N <= max
    rois = rois_for_batch([boxes_img0, boxes_img1])                 # [K,5] (batch index, x1, y1, x2, y2)
    rois = tensor_proposals(x_nchw_float, scale=1/255, ...)         # the same from a preprocessed input batch

A bundle whose contract names ``decode.proposals`` (``{"input": "rois", "method": "selective_search", ...}``)
gets its second input from :func:`proposals_feed` per frame (``edgecv run``, validate).
"""

from __future__ import annotations

import functools
import threading
from typing import Any

import numpy as np

from edgecv.errors import ConfigError, InputError

MODES = ("fast", "quality", "single")
_RAND_LOCK = threading.Lock()


@functools.lru_cache(maxsize=1)
def _c_library() -> Any:
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


def _seed_c_rand(seed: int) -> None:
    """``srand(seed)`` of the C library OpenCV draws from (no-op where it cannot be found)."""
    lib = _c_library()
    if lib is not None and hasattr(lib, "srand"):
        lib.srand(int(seed))


def selective_search(
    image: np.ndarray, max_proposals: int = 2000, mode: str = "fast", min_size: float = 4.0
) -> np.ndarray:
    """Selective search proposals of one image.

    Args:
        image: [H,W,3] uint8 (any channel order; the same order at training and test time).
        max_proposals: keep at most this many, in selective search's own ranking (the paper keeps ~2000).
        mode: ``fast`` (the paper's "fast mode": 2 colour spaces × 2 similarity sets, k = 50, 100),
            ``quality`` (the slower, higher-recall mode) or ``single`` (one strategy).
        min_size: drop boxes narrower or shorter than this many pixels.

    Returns:
        [N,4] float32 xyxy boxes in the image's pixels, duplicates removed, N <= ``max_proposals``.

    Raises:
        ConfigError: an unknown mode or a non-positive cap.
        InputError: the image is not [H,W,3] uint8.
    """
    if mode not in MODES:
        raise ConfigError(f"selective search mode: expected one of {', '.join(MODES)}, found '{mode}'")
    if max_proposals < 1:
        raise ConfigError(f"max_proposals: expected at least 1, found {max_proposals}")
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise InputError(f"selective search: expected an [H,W,3] uint8 image, found {img.shape} {img.dtype}")
    try:
        import cv2

        seg = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    except (ImportError, AttributeError) as exc:
        raise ConfigError(
            "selective search: expected OpenCV contrib (cv2.ximgproc), found none; "
            "pip install opencv-contrib-python-headless"
        ) from exc
    seg.setBaseImage(np.ascontiguousarray(img))
    if mode == "fast":
        seg.switchToSelectiveSearchFast()
    elif mode == "quality":
        seg.switchToSelectiveSearchQuality()
    else:
        seg.switchToSingleStrategy()
    # selective search ranks regions by hierarchy level × a random number (Uijlings et al.), drawn by OpenCV with
    # the C library's rand(): seed it (under a lock, rand() is process-wide) so that the same image always gets
    # the same proposals in the same order — training cache, export reference and the host at run time agree
    with _RAND_LOCK:
        _seed_c_rand(0)
        rects = np.asarray(seg.process(), np.float32).reshape(-1, 4)  # x, y, w, h
    keep = (rects[:, 2] >= min_size) & (rects[:, 3] >= min_size)
    rects = rects[keep]
    boxes = np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:]], axis=1)
    _, first = np.unique(boxes, axis=0, return_index=True)
    boxes = boxes[np.sort(first)]  # de-duplicated, selective search's order kept
    return np.ascontiguousarray(boxes[:max_proposals], dtype=np.float32)


def rois_for_batch(per_image: list[np.ndarray]) -> np.ndarray:
    """Per-image [N_i,4] boxes → one [K,5] float32 array of (batch index, x1, y1, x2, y2): the ``rois`` layout of
    ONNX ``MaxRoiPool`` and of ``torchvision.ops.roi_pool``."""
    rows = [
        np.concatenate([np.full((len(b), 1), i, np.float32), np.asarray(b, np.float32).reshape(-1, 4)], axis=1)
        for i, b in enumerate(per_image)
    ]
    return np.concatenate(rows, axis=0) if rows else np.zeros((0, 5), np.float32)


def to_uint8_images(x: np.ndarray, scale: float, mean: Any, std: Any) -> list[np.ndarray]:
    """A preprocessed NCHW float batch back to [H,W,3] uint8 images (undoes ``(pixel·scale − mean) / std``)."""
    arr = np.asarray(x, np.float32)
    if arr.ndim != 4 or arr.shape[1] != 3:
        raise InputError(f"proposals: expected an [N,3,H,W] input batch, found {arr.shape}")
    m = np.asarray(mean, np.float32).reshape(1, 3, 1, 1)
    s = np.asarray(std, np.float32).reshape(1, 3, 1, 1)
    pix = (arr * s + m) / float(scale)
    return [np.ascontiguousarray(p.transpose(1, 2, 0)) for p in np.clip(np.rint(pix), 0, 255).astype(np.uint8)]


def tensor_proposals(
    x: np.ndarray,
    *,
    scale: float = 1.0 / 255.0,
    mean: Any = (0.0, 0.0, 0.0),
    std: Any = (1.0, 1.0, 1.0),
    max_proposals: int = 2000,
    mode: str = "fast",
    min_size: float = 4.0,
) -> np.ndarray:
    """Selective search on every image of a preprocessed NCHW batch → [K,5] rois in input-tensor pixels."""
    return rois_for_batch(
        [selective_search(img, max_proposals, mode, min_size) for img in to_uint8_images(x, scale, mean, std)]
    )


def proposals_feed(spec: dict[str, Any], x: np.ndarray, contract: Any) -> dict[str, np.ndarray]:
    """The extra input a proposals-driven bundle needs beside the image batch ``x``: ``{spec["input"]: rois}``.

    ``spec`` is the contract's ``decode.proposals`` (``input``, ``method: selective_search``, ``max_proposals``,
    ``mode``, ``min_size``); the image is recovered from ``x`` with the contract's scale/mean/std, so the
    proposals are the ones the model saw in training.
    """
    method = str(spec.get("method", "selective_search"))
    if method != "selective_search":
        raise ConfigError(f"contract.decode.proposals.method: expected selective_search, found '{method}'")
    rois = tensor_proposals(
        x,
        scale=float(contract.scale),
        mean=contract.mean,
        std=contract.std,
        max_proposals=int(spec.get("max_proposals", 2000)),
        mode=str(spec.get("mode", "fast")),
        min_size=float(spec.get("min_size", 4.0)),
    )
    return {str(spec.get("input", "rois")): rois}
