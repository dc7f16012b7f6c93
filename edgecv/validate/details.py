"""What ``edgecv validate`` keeps for the report beyond the verdict: per-class results and a gallery.

* :func:`task_details` — on the validation set, per backend: the classifier's confusion matrix, the detector's
  precision-recall curve per class at IoU 0.5 (with AP), or the segmenter's IoU per class.
* :func:`gallery` — the first reference samples' predictions of the reference (PyTorch) and of every backend,
  decoded exactly as ``edgecv run`` decodes them (top-k, boxes, or the label mask compressed), in input-tensor
  pixels, so the report draws them on the reference photos side by side.

Runtime tier: numpy and the task decoders, no torch.
"""

from __future__ import annotations

import base64
import zlib
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from edgecv.tasks.preprocess import Transform

if TYPE_CHECKING:
    from edgecv.bundle import Contract
    from edgecv.validate.metrics import ValSet

PR_IOU = 0.5


class Runner(Protocol):
    """What the details need of a runner: ``infer`` (a :class:`~edgecv.backends.base.Runner` or a :class:`Replay`)."""

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


_MAX_POINTS = 101


def _first_output(out: dict[str, np.ndarray], contract: Contract) -> np.ndarray:
    for name in contract.output_names:
        if name in out:
            return out[name]
    return next(iter(out.values()))


def _num_classes(contract: Contract) -> int:
    return len(contract.class_names) or int(contract.decode.get("num_classes", 0))


def _names(contract: Contract, n: int) -> list[str]:
    return [contract.class_names[i] if i < len(contract.class_names) else str(i) for i in range(n)]


def confusion_matrix(runner: Runner, val: ValSet) -> dict[str, Any]:
    """Rows: true class; columns: predicted class (argmax), counts over the validation set."""
    n = max(2, _num_classes(val.contract))
    m = np.zeros((n, n), dtype=np.int64)
    for feed, label in val:
        logits = _first_output(runner.infer(feed), val.contract)
        pred = int(np.argmax(logits.reshape(logits.shape[0], -1)[0]))
        if 0 <= int(label) < n and 0 <= pred < n:
            m[int(label), pred] += 1
    return {"kind": "confusion", "labels": _names(val.contract, n), "matrix": m.tolist()}


def class_iou(runner: Runner, val: ValSet) -> dict[str, Any]:
    """IoU per class over the set (None for a class absent from labels and predictions)."""
    from edgecv.validate.metrics import segment_confusion

    n = max(2, _num_classes(val.contract))
    conf = segment_confusion(runner, val, n)
    inter = np.diag(conf).astype(np.float64)
    union = conf.sum(0) + conf.sum(1) - inter
    iou = [float(100.0 * i / u) if u > 0 else None for i, u in zip(inter, union)]
    return {"kind": "iou", "labels": _names(val.contract, n), "iou": iou}


def _pr_curve(scores: np.ndarray, tp: np.ndarray, n_gt: int) -> tuple[list[float], list[float], float]:
    """Precision/recall points (score order) and the all-point interpolated AP."""
    if n_gt == 0:
        return [], [], float("nan")
    order = np.argsort(-scores, kind="stable")
    tp = tp[order].astype(np.float64)
    ctp, cfp = np.cumsum(tp), np.cumsum(1.0 - tp)
    recall = ctp / n_gt
    precision = ctp / np.maximum(ctp + cfp, 1e-12)
    # all-point interpolation (the precision envelope), as VOC/COCO
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[1.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    idx = np.where(mrec[1:] != mrec[:-1])[0]
    ap = float(np.sum((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1]))
    if recall.size > _MAX_POINTS:
        keep = np.unique(np.linspace(0, recall.size - 1, _MAX_POINTS).round().astype(int))
        recall, precision = recall[keep], precision[keep]
    return [round(float(v), 5) for v in precision], [round(float(v), 5) for v in recall], ap


def pr_curves(runner: Runner, val: ValSet, iou_threshold: float = PR_IOU) -> dict[str, Any]:
    """Precision-recall per class at ``iou_threshold`` (greedy matching by score, one detection per box)."""
    from edgecv.tasks.decode import DetectResult, get_decoder
    from edgecv.tasks.detect import box_iou

    dec = get_decoder(val.contract)
    n = max(1, _num_classes(val.contract))
    per: dict[int, tuple[list[float], list[int]]] = {c: ([], []) for c in range(n)}
    n_gt = np.zeros(n, dtype=np.int64)
    for feed, (tf, boxes, labels, _hw) in val:
        r = dec.decode(runner.infer(feed), [tf])[0]
        if not isinstance(r, DetectResult):
            raise TypeError(f"PR curves: expected detections, found {type(r).__name__}")
        gt_b, gt_l = np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(labels).reshape(-1)
        for c in range(n):
            g = gt_b[gt_l == c]
            n_gt[c] += len(g)
            sel = r.classes == c
            db, ds = r.boxes[sel], r.scores[sel]
            order = np.argsort(-ds, kind="stable")
            used = np.zeros(len(g), dtype=bool)
            ious = box_iou(db[order], g) if len(g) and len(db) else np.zeros((len(db), len(g)))
            for k, j in enumerate(order):
                hit = 0
                if len(g):
                    cand = np.where(~used & (ious[k] >= iou_threshold))[0]
                    if cand.size:
                        best = cand[np.argmax(ious[k][cand])]
                        used[best] = True
                        hit = 1
                per[c][0].append(float(ds[j]))
                per[c][1].append(hit)
    classes = {}
    names = _names(val.contract, n)
    for c in range(n):
        p, rc, ap = _pr_curve(np.asarray(per[c][0]), np.asarray(per[c][1]), int(n_gt[c]))
        if n_gt[c] or p:
            classes[names[c]] = {
                "precision": p,
                "recall": rc,
                "ap": None if np.isnan(ap) else round(100 * ap, 3),
                "gt": int(n_gt[c]),
                "detections": len(per[c][0]),
            }
    return {"kind": "pr", "iou_threshold": iou_threshold, "classes": classes}


_DETAILS = {"classify": confusion_matrix, "segment": class_iou, "detect": pr_curves}


class Replay:
    """Wraps a runner so a second pass over the same (materialized) validation set reuses the first pass's
    outputs instead of inferring again: the task metric and :func:`task_details` then cost one pass.

    Keyed by the identity of the feed's arrays, which a materialized :class:`ValSet` yields unchanged each pass.
    """

    def __init__(self, runner: Any) -> None:
        self.runner = runner
        self._memo: dict[tuple[int, ...], tuple[dict[str, np.ndarray], dict[str, np.ndarray]]] = {}

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        key = tuple(id(v) for v in feed.values())
        hit = self._memo.get(key)
        if hit is not None and all(hit[0][k] is v for k, v in feed.items()):
            return hit[1]
        out = self.runner.infer(feed)
        self._memo[key] = (dict(feed), out)  # holding the feed keeps its ids from being reused
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self.runner, name)


def task_details(runner: Runner, val: ValSet) -> dict[str, Any] | None:
    """The per-class view of ``runner`` on ``val`` for its task, or None for a task without one."""
    fn = _DETAILS.get(val.contract.task)
    return fn(runner, val) if fn is not None else None


# ------------------------------------------------------------------------------------------ gallery
def encode_mask(mask: np.ndarray) -> dict[str, Any]:
    """A label mask as ``{"shape", "zlib_b64"}`` (uint8 class ids, zlib, base64): a 64×64 mask is ~100 bytes."""
    m = np.ascontiguousarray(mask, dtype=np.uint8)
    return {"shape": list(m.shape), "zlib_b64": base64.b64encode(zlib.compress(m.tobytes(), 9)).decode("ascii")}


def decode_mask(d: dict[str, Any]) -> np.ndarray:
    """Inverse of :func:`encode_mask`."""
    raw = zlib.decompress(base64.b64decode(d["zlib_b64"]))
    return np.frombuffer(raw, dtype=np.uint8).reshape(d["shape"])


def predictions(outputs: dict[str, np.ndarray], contract: Contract, n: int) -> list[dict[str, Any]]:
    """The first ``n`` samples of a batch of outputs decoded as ``edgecv run`` does, in input-tensor pixels."""
    from edgecv.tasks.decode import get_decoder

    batch = int(next(iter(outputs.values())).shape[0]) if outputs else 0
    k = min(n, batch)
    if k == 0:
        return []
    h, w = contract.hw
    sliced = {name: a[:k] if a.ndim and a.shape[0] == batch else a for name, a in outputs.items()}
    results = get_decoder(contract).decode(sliced, [Transform(1.0, 1.0, 0.0, 0.0, (h, w)) for _ in range(k)])
    out: list[dict[str, Any]] = []
    for r in results:
        d = r.to_json()
        mask = getattr(r, "mask", None)
        if mask is not None:
            d["mask"] = encode_mask(mask)
        out.append(d)
    return out


def gallery(
    reference: dict[str, np.ndarray] | None, backends: dict[str, dict[str, np.ndarray]], contract: Contract, n: int = 6
) -> dict[str, Any]:
    """Predictions of the reference and of each ``backend:precision`` on the first ``n`` reference samples."""
    out: dict[str, Any] = {"n": 0, "reference": [], "backends": {}, "errors": {}}
    if reference:
        try:
            out["reference"] = predictions(reference, contract, n)
        except Exception as exc:  # noqa: BLE001 - a model the task decoder cannot read has no gallery
            out["errors"]["reference"] = " ".join(str(exc).split())[:200]
    out["n"] = len(out["reference"])
    for key, outputs in backends.items():
        try:
            out["backends"][key] = predictions(outputs, contract, n)
        except Exception as exc:  # noqa: BLE001
            out["errors"][key] = " ".join(str(exc).split())[:200]
    return out


__all__ = [
    "class_iou",
    "confusion_matrix",
    "decode_mask",
    "encode_mask",
    "gallery",
    "pr_curves",
    "predictions",
    "task_details",
]
