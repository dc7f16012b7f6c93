"""Anchor priors from dimension clusters (YOLOv2 §"Dimension Clusters"): k-means over ground-truth (w, h) with the
distance ``d = 1 − IoU(box, centroid)`` (boxes sharing a centre), so the priors fit box shapes rather than minimise
Euclidean error that favours large boxes. numpy only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgecv.errors import ConfigError, DataError
from edgecv.tasks.detect import BBOX_XFORM_CLIP  # noqa: F401  (keeps the runtime twin importable from here)


def wh_iou(wh: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """IoU of centre-aligned boxes: [N,2] × [K,2] → [N,K]."""
    wh = np.asarray(wh, np.float64).reshape(-1, 2)
    c = np.asarray(centroids, np.float64).reshape(-1, 2)
    inter = np.minimum(wh[:, None], c[None]).prod(-1)
    return inter / np.maximum(wh.prod(-1)[:, None] + c.prod(-1)[None] - inter, 1e-12)


def kmeans_anchors(
    wh: np.ndarray, k: int, iters: int = 300, seed: int = 0, restarts: int = 5
) -> tuple[np.ndarray, float]:
    """k-means with the 1 − IoU distance, best of ``restarts`` (k-means++-style seeding on that distance).

    Args:
        wh: [N, 2] box widths and heights (any unit; the priors come out in the same unit).
        k: number of priors.

    Returns:
        (priors [k, 2] sorted by area, mean IoU of each box with its best prior).
    """
    wh = np.asarray(wh, np.float64).reshape(-1, 2)
    wh = wh[(wh > 0).all(1)]
    if k < 1:
        raise ConfigError(f"-k: expected at least 1 cluster, found {k}")
    if wh.shape[0] < k:
        raise DataError(f"anchors: need at least k={k} boxes, found {wh.shape[0]}")
    rng = np.random.default_rng(seed)
    best_c, best_iou = None, -1.0
    for _ in range(max(1, restarts)):
        c = wh[[int(rng.integers(len(wh)))]]
        while len(c) < k:  # k-means++ seeding with d = 1 - IoU
            d = 1.0 - wh_iou(wh, c).max(1)
            p = d**2
            p = p / p.sum() if p.sum() > 0 else np.full(len(wh), 1.0 / len(wh))
            c = np.vstack([c, wh[int(rng.choice(len(wh), p=p))]])
        assign = np.full(len(wh), -1)
        for _ in range(iters):
            new = wh_iou(wh, c).argmax(1)
            if (new == assign).all():
                break
            assign = new
            for j in range(k):
                members = wh[assign == j]
                # the median is the usual robust centroid under the IoU distance (darknet / YOLOv5 use it too)
                c[j] = np.median(members, 0) if len(members) else wh[int(rng.integers(len(wh)))]
        miou = float(wh_iou(wh, c).max(1).mean())
        if miou > best_iou:
            best_c, best_iou = c.copy(), miou
    assert best_c is not None
    order = np.argsort(best_c.prod(1))
    return best_c[order], best_iou


def dataset_box_sizes(
    path: str | Path, fmt: str | None = None, split: str = "train", input_size: int | None = None
) -> np.ndarray:
    """All ground-truth (w, h) of a COCO JSON / YOLO txt data set, in pixels, optionally as they would be after a
    letterbox to ``input_size`` (what the anchors must match)."""
    from edgecv.data.datasets import CocoDetection, YoloDetection, open_dataset

    ds = open_dataset("detect", path, fmt, split=split)
    out = []
    cv2 = None
    for i, (img_path, boxes, _) in enumerate(ds.records):
        if boxes.size == 0:
            continue
        b = boxes.astype(np.float64)
        if isinstance(ds, YoloDetection) or input_size is not None:
            h, w = _image_hw(ds, i, img_path)
            if isinstance(ds, YoloDetection):
                b = b * np.array([w, h, w, h])
            if input_size is not None:
                b = b * (input_size / max(h, w))
        out.append(np.stack([b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], 1))
    del cv2, CocoDetection
    if not out:
        raise DataError(f"{path}: no boxes to cluster")
    return np.concatenate(out)


def _image_hw(ds: Any, i: int, path: Path) -> tuple[int, int]:
    from edgecv.data.readers import read_image

    img = read_image(path)  # the training loader's reader: EXIF orientation decides which side is the height
    return int(img.shape[0]), int(img.shape[1])
