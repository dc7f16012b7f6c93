"""Detection post-processing for the runtime tier (numpy only): IoU, per-class NMS, YOLO head decoding and the
``detect:host`` decoder that runs them on raw head outputs.

A bundle exported with ``--nms host`` carries raw head outputs; ``contract.decode`` says how to read them:

- ``format: "yolo_anchors"`` (YOLOv2/v3): one output per scale ``[B, A*(5+C), H, W]``, with ``anchors`` (pixels,
  one list of (w, h) per scale), ``strides`` and ``cls_act`` (``sigmoid`` for v3, ``softmax`` for v2);
- ``format: "yolo_grid"`` (YOLOv1): ``[B, S, S, nb*5+C]`` with ``num_boxes`` and the input size;
- ``format: "boxes_scores"``: already decoded ``boxes`` [B,N,4] xyxy and ``scores`` [B,N,C]; only NMS is left.

Then ``score_threshold``, ``iou_threshold`` and ``max_det`` apply, NMS runs per class, and boxes are mapped back
to the original image through :class:`~edgecv.tasks.preprocess.Transform` (letterbox / stretch).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from edgecv.errors import BackendError, ConfigError
from edgecv.tasks.decode import DetectResult, Result, sigmoid, softmax

if TYPE_CHECKING:
    from edgecv.bundle import Contract
    from edgecv.tasks.preprocess import Transform

# exp() cap of box decoding, the same as the torch side (log(1000/16))
BBOX_XFORM_CLIP = float(np.log(1000.0 / 16))


def _inter_union(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(a, b as float64 [N,4]/[M,4], pairwise intersection [N,M], pairwise union [N,M])."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=-1)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    return a, b, inter, area_a[:, None] + area_b[None, :] - inter


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU, ``a`` [N,4] and ``b`` [M,4] xyxy → [N,M] (float64)."""
    _, _, inter, union = _inter_union(a, b)
    return _safe_div(inter, union)


def generalized_box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise GIoU (IoU minus the empty share of the enclosing box) → [N,M]."""
    a, b, inter, union = _inter_union(a, b)
    hull = np.prod(
        np.clip(np.maximum(a[:, None, 2:], b[None, :, 2:]) - np.minimum(a[:, None, :2], b[None, :, :2]), 0, None),
        axis=-1,
    )
    return _safe_div(inter, union) - _safe_div(hull - union, hull)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy NMS: indices of kept boxes, highest score first (the semantics of ``torchvision.ops.nms``)."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    scores = np.asarray(scores, np.float32).reshape(-1)
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = (boxes[:, i] for i in range(4))
    areas = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        w = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        h = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = w * h
        union = areas[i] + areas[rest] - inter
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, np.int64)


def batched_nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Per-class NMS (boxes of different classes never suppress each other), like ``torchvision.ops.batched_nms``:
    boxes are offset by class so one NMS pass handles all classes."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    if boxes.shape[0] == 0:
        return np.zeros(0, np.int64)
    offset = (float(boxes.max()) + 1.0) * np.asarray(classes, np.float32)[:, None]
    return nms(boxes + offset, scores, iou_threshold)


def select(
    boxes: np.ndarray,
    scores: np.ndarray,
    score_threshold: float,
    iou_threshold: float,
    max_det: int,
    multi_label: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image's candidates → detections: threshold, per-class NMS, keep the ``max_det`` best.

    Args:
        boxes: [N,4] xyxy.
        scores: [N,C] per-class scores.
        multi_label: a box may be kept for several classes (every class over the threshold), as the in-graph
            ONNX NonMaxSuppression does; otherwise only its best class counts.
    """
    scores = np.asarray(scores, np.float32)
    if multi_label:
        i, c = np.nonzero(scores > score_threshold)
        s = scores[i, c]
    else:
        c = scores.argmax(1)
        i = np.arange(scores.shape[0])
        s = scores[i, c]
        m = s > score_threshold
        i, c, s = i[m], c[m], s[m]
    b = np.asarray(boxes, np.float32)[i]
    keep = batched_nms(b, s, c, iou_threshold)
    keep = keep[np.argsort(-s[keep], kind="stable")][:max_det]
    return b[keep], s[keep], c[keep].astype(np.int64)


def _grid(h: int, w: int) -> np.ndarray:
    gy, gx = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij")
    return np.stack([gx, gy], axis=-1)  # [H, W, 2]


def decode_yolo_anchors(
    maps: list[np.ndarray],
    anchors: list[list[list[float]]],
    strides: list[float],
    num_classes: int,
    cls_act: str = "sigmoid",
) -> tuple[np.ndarray, np.ndarray]:
    """YOLOv2/v3 raw maps → ``boxes`` [B,N,4] xyxy input pixels and ``scores`` [B,N,C] = objectness × class.

    ``b_xy = (σ(t_xy) + cell)·stride`` and ``b_wh = anchor·exp(t_wh)`` (direct location prediction).
    """
    all_boxes, all_scores = [], []
    for m, anc, s in zip(maps, anchors, strides):
        m = np.asarray(m, np.float32)
        bsz, _, h, w = m.shape
        a = len(anc)
        if m.shape[1] != a * (5 + num_classes):
            raise BackendError(
                f"detect host decode: expected {a * (5 + num_classes)} channels "
                f"({a} anchors × (5 + {num_classes})), found {m.shape[1]}"
            )
        t = m.reshape(bsz, a, 5 + num_classes, h, w).transpose(0, 1, 3, 4, 2)  # [B,A,H,W,5+C]
        xy = (sigmoid(t[..., :2]) + _grid(h, w)) * s
        wh = np.exp(np.minimum(t[..., 2:4], BBOX_XFORM_CLIP)) * np.asarray(anc, np.float32)[None, :, None, None]
        obj = sigmoid(t[..., 4:5])
        cls = softmax(t[..., 5:], -1) if cls_act == "softmax" else sigmoid(t[..., 5:])
        all_boxes.append(np.concatenate([xy - wh / 2, xy + wh / 2], -1).reshape(bsz, -1, 4))
        all_scores.append((obj * cls).reshape(bsz, -1, num_classes))
    return np.concatenate(all_boxes, 1), np.concatenate(all_scores, 1)


def decode_yolo_grid(
    out: np.ndarray, num_boxes: int, num_classes: int, input_hw: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """YOLOv1 output [B,S,S,nb*5+C] (x, y, √w, √h, conf per box, all sigmoid; class probabilities softmax) →
    boxes [B, S·S·nb, 4] and scores = conf × P(class)."""
    out = np.asarray(out, np.float32)
    bsz, sh, sw, _ = out.shape
    ih, iw = input_hw
    box = sigmoid(out[..., : num_boxes * 5].reshape(bsz, sh, sw, num_boxes, 5))
    cls = softmax(out[..., num_boxes * 5 :], -1)
    g = _grid(sh, sw)[None, :, :, None]
    cx = (box[..., 0] + g[..., 0]) / sw * iw
    cy = (box[..., 1] + g[..., 1]) / sh * ih
    w, h = box[..., 2] ** 2 * iw, box[..., 3] ** 2 * ih
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1).reshape(bsz, -1, 4)
    scores = (box[..., 4:5] * cls[:, :, :, None, :]).reshape(bsz, -1, num_classes)
    return boxes, scores


class HostNMSDecoder:
    """``detect:host``: decode raw head outputs per ``contract.decode`` and run per-class NMS in numpy."""

    def __init__(self, contract: Contract) -> None:
        d = contract.decode
        self.contract = contract
        self.names = list(contract.class_names)
        self.format = str(d.get("format", "boxes_scores"))
        if self.format not in ("yolo_anchors", "yolo_grid", "boxes_scores"):
            raise ConfigError(
                f"contract.decode.format: expected yolo_anchors, yolo_grid or boxes_scores for host "
                f"NMS, found '{self.format}'"
            )
        self.score_threshold = float(d.get("score_threshold", 0.001))
        self.iou_threshold = float(d.get("iou_threshold", 0.5))
        self.max_det = int(d.get("max_det", 100))
        self.num_classes = int(d.get("num_classes", len(self.names)))
        self.d = d

    def candidates(self, outputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Raw outputs → (boxes [B,N,4] input pixels, scores [B,N,C])."""
        names = list(self.contract.output_names)
        missing = [n for n in names if n not in outputs]
        if missing:
            raise BackendError(f"detect (host NMS): expected outputs {names}, found {sorted(outputs)}")
        if self.format == "yolo_anchors":
            return decode_yolo_anchors(
                [outputs[n] for n in names],
                self.d["anchors"],
                self.d["strides"],
                self.num_classes,
                str(self.d.get("cls_act", "sigmoid")),
            )
        if self.format == "yolo_grid":
            return decode_yolo_grid(outputs[names[0]], int(self.d["num_boxes"]), self.num_classes, self.contract.hw)
        return np.asarray(outputs[names[0]], np.float32), np.asarray(outputs[names[1]], np.float32)

    def detect(self, outputs: dict[str, np.ndarray]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per image (boxes in input-tensor pixels, scores, classes) after NMS."""
        boxes, scores = self.candidates(outputs)
        return [
            select(boxes[b], scores[b], self.score_threshold, self.iou_threshold, self.max_det)
            for b in range(boxes.shape[0])
        ]

    def decode(self, outputs: dict[str, np.ndarray], transforms: list[Transform]) -> list[Result]:
        dets = self.detect(outputs)
        if len(dets) != len(transforms):
            raise BackendError(f"detect: expected a batch of {len(transforms)} images, found {len(dets)}")
        return [
            DetectResult(boxes=tf.to_original(b), scores=s, classes=c, names=self.names)
            for (b, s, c), tf in zip(dets, transforms)
        ]


def host_decode_info(model: Any) -> dict[str, Any]:
    """What a model says about its raw outputs (``model.decode_info()``), for the contract (build-tier helper)."""
    fn = getattr(model, "decode_info", None)
    if not callable(fn):
        raise ConfigError(f"--nms host: {type(model).__name__} has no decode_info(); it cannot be decoded on the host")
    return dict(fn())


class ProposalDecoder:
    """Decodes a proposal-driven detector (R-CNN, Fast R-CNN): outputs ``roi_scores`` [K,C] in [0, 1],
    ``roi_boxes`` [K,C,4] class-specific xyxy input-tensor pixels and ``roi_batch`` [K] (each proposal's image);
    per image, every (proposal, class) pair at or over ``decode.score_threshold``, per-class NMS at
    ``decode.iou_threshold``, the ``decode.max_det`` best, boxes mapped to the original image."""

    OUTPUTS = ("roi_scores", "roi_boxes", "roi_batch")

    def __init__(self, contract: Contract) -> None:
        self.names = list(contract.class_names)
        self.score_threshold = float(contract.decode.get("score_threshold", 0.0))
        self.iou_threshold = float(contract.decode.get("iou_threshold", 0.3))
        self.max_det = int(contract.decode.get("max_det", 100))

    def decode(self, outputs: dict[str, np.ndarray], transforms: list[Transform]) -> list[Result]:
        missing = [k for k in self.OUTPUTS if k not in outputs]
        if missing:
            raise BackendError(f"detect (proposals): expected outputs {list(self.OUTPUTS)}, found {sorted(outputs)}")
        scores = np.asarray(outputs["roi_scores"], np.float32)
        boxes = np.asarray(outputs["roi_boxes"], np.float32)
        batch = np.rint(np.asarray(outputs["roi_batch"], np.float32).reshape(-1)).astype(np.int64)
        if scores.ndim != 2 or boxes.shape != (*scores.shape, 4) or batch.shape[0] != scores.shape[0]:
            raise BackendError(
                f"detect (proposals): expected roi_scores [K,C], roi_boxes [K,C,4], roi_batch [K], found "
                f"{list(scores.shape)}, {list(boxes.shape)}, {list(batch.shape)}"
            )
        results: list[Result] = []
        for b, tf in enumerate(transforms):
            m = batch == b
            s, bx = scores[m], boxes[m]
            r, c = np.nonzero(s >= self.score_threshold)
            sc, bb = s[r, c], bx[r, c]
            keep = batched_nms(bb, sc, c, self.iou_threshold)[: self.max_det]
            results.append(
                DetectResult(
                    boxes=tf.to_original(bb[keep]),
                    scores=sc[keep].astype(np.float32),
                    classes=c[keep].astype(np.int64),
                    names=self.names,
                )
            )
        return results
