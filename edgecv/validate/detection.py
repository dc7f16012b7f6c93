"""Detection accuracy: COCO mAP (computed by faster-coco-eval, not by hand) and box agreement with a reference.

Runtime tier: numpy + faster-coco-eval, no torch. Detections and ground truth are per image
``(boxes [N,4] xyxy pixels, scores [N], classes [N])`` / ``(boxes [M,4], labels [M])`` in original-image pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edgecv._lazy import lazy_import
from edgecv.data.readers import read_coco, read_image
from edgecv.errors import ConfigError
from edgecv.tasks.detect import box_iou

Detections = tuple[np.ndarray, np.ndarray, np.ndarray]  # boxes, scores, classes
GroundTruth = tuple[np.ndarray, np.ndarray]  # boxes, labels


def coco_map(
    detections: Sequence[Detections],
    ground_truth: Sequence[GroundTruth],
    num_classes: int,
    image_sizes: Sequence[tuple[int, int]] | None = None,
) -> dict[str, float]:
    """COCO box mAP over a set of images, by faster-coco-eval.

    Args:
        detections: per image (boxes xyxy, scores, class ids 0..C-1).
        ground_truth: per image (boxes xyxy, class ids).
        num_classes: C (every class is a COCO category, so classes without ground truth are ignored as in COCO).
        image_sizes: per image (h, w); only used for the COCO ``images`` table.

    Returns:
        ``{"map": mAP@[.5:.95], "map50": mAP@0.5, "map75": mAP@0.75, "images": n, "gt_boxes": m, "dets": k}``
        (fractions in [0, 1]; -1 when there is no ground truth at all).
    """
    if len(detections) != len(ground_truth):
        raise ConfigError(f"mAP: expected one detection list per image ({len(ground_truth)}), found {len(detections)}")
    fce = lazy_import("faster_coco_eval", "validate")
    images: list[dict[str, Any]] = []
    anns: list[dict[str, Any]] = []
    dets: list[dict[str, Any]] = []
    for i, (gt_b, gt_l) in enumerate(ground_truth):
        h, w = image_sizes[i] if image_sizes is not None else (0, 0)
        images.append({"id": i + 1, "width": int(w), "height": int(h)})
        gb = np.asarray(gt_b, np.float64).reshape(-1, 4)
        for b, lab in zip(gb, np.asarray(gt_l).reshape(-1)):
            bw, bh = float(b[2] - b[0]), float(b[3] - b[1])
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i + 1,
                    "category_id": int(lab) + 1,
                    "bbox": [float(b[0]), float(b[1]), bw, bh],
                    "area": bw * bh,
                    "iscrowd": 0,
                }
            )
    for i, (b, s, c) in enumerate(detections):
        bb = np.asarray(b, np.float64).reshape(-1, 4)
        for box, score, cls in zip(bb, np.asarray(s).reshape(-1), np.asarray(c).reshape(-1)):
            dets.append(
                {
                    "image_id": i + 1,
                    "category_id": int(cls) + 1,
                    "score": float(score),
                    "bbox": [float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])],
                }
            )
    out = {"images": len(images), "gt_boxes": len(anns), "dets": len(dets)}
    if not anns:
        return {"map": -1.0, "map50": -1.0, "map75": -1.0, **out}
    if not dets:
        return {"map": 0.0, "map50": 0.0, "map75": 0.0, **out}
    gt = fce.COCO(
        {
            "images": images,
            "annotations": anns,
            "categories": [{"id": k + 1, "name": str(k)} for k in range(num_classes)],
        },
        print_function=lambda *a, **k: None,
    )
    dt = gt.loadRes(dets)
    ev = fce.COCOeval_faster(gt, dt, "bbox", print_function=lambda *a, **k: None)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    st = ev.stats
    return {"map": float(st[0]), "map50": float(st[1]), "map75": float(st[2]), **out}


@dataclass
class BoxAgreement:
    """How well one backend's detections match the reference's, over a set of images."""

    ref_boxes: int
    matched: int
    unmatched_ref: int
    extra: int
    mean_iou: float | None  # None: no pair matched, nothing was compared
    min_iou: float | None
    max_score_diff: float
    mean_score_diff: float

    @property
    def recall(self) -> float | None:
        """Matched fraction of the reference boxes; None (not checked, never a vacuous 1.0) when there are none."""
        return self.matched / self.ref_boxes if self.ref_boxes else None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "recall": self.recall}


def match_detections(
    ref: Sequence[Detections], other: Sequence[Detections], iou_threshold: float = 0.9, min_score: float = 0.0
) -> BoxAgreement:
    """Match each backend box to a reference box of the same class (greedy by reference score, IoU ≥
    ``iou_threshold``) and report the agreement.

    Boxes under ``min_score`` in the reference are not required to match (tiny scores flip in and out of the top-K
    with float noise); a backend box matching nothing counts as ``extra`` only if its score is ≥ ``min_score``.
    """
    if len(ref) != len(other):
        raise ConfigError(f"box matching: expected the same number of images, found {len(ref)} and {len(other)}")
    n_ref = matched = extra = 0
    ious: list[float] = []
    sdiff: list[float] = []
    for (rb, rs, rc), (ob, os_, oc) in zip(ref, other):
        rb, rs, rc = np.asarray(rb).reshape(-1, 4), np.asarray(rs).reshape(-1), np.asarray(rc).reshape(-1)
        ob, os_, oc = np.asarray(ob).reshape(-1, 4), np.asarray(os_).reshape(-1), np.asarray(oc).reshape(-1)
        need = rs >= min_score
        n_ref += int(need.sum())
        iou = box_iou(rb, ob) if len(rb) and len(ob) else np.zeros((len(rb), len(ob)))
        iou = np.where(rc[:, None] == oc[None, :], iou, 0.0)
        used = np.zeros(len(ob), bool)
        for i in np.argsort(-rs, kind="stable"):
            cand = np.where(~used & (iou[i] >= iou_threshold))[0]
            if cand.size == 0:
                continue
            j = cand[np.argmax(iou[i, cand])]
            used[j] = True
            if need[i]:
                matched += 1
            ious.append(float(iou[i, j]))
            sdiff.append(abs(float(rs[i]) - float(os_[j])))
        extra += int((~used & (os_ >= min_score)).sum())
    return BoxAgreement(
        ref_boxes=n_ref,
        matched=matched,
        unmatched_ref=n_ref - matched,
        extra=extra,
        mean_iou=float(np.mean(ious)) if ious else None,
        min_iou=float(np.min(ious)) if ious else None,
        max_score_diff=float(np.max(sdiff)) if sdiff else 0.0,
        mean_score_diff=float(np.mean(sdiff)) if sdiff else 0.0,
    )


# ------------------------------------------------------------------------------------------------ data + runners
def load_coco_samples(
    path: str, split: str = "val", limit: int | None = None, class_names: Sequence[str] | None = None
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(BGR image, gt boxes xyxy pixels, gt labels 0..C-1) of a detection data set in any layout
    :func:`edgecv.data.layout.find_layout` accepts (COCO JSON, a root with ``{split}.json``, YOLO folders), without torch (runtime tier), parsed by the one COCO reader (:func:`edgecv.data.readers.read_coco`).

    ``class_names`` (a model's): categories map to them by name and a mismatch is refused; None: sorted id order,
    as the trainer's loader reads a data set that defines its own classes."""
    from edgecv.data.layout import find_layout
    from edgecv.data.readers import read_yolo, yolo_class_names

    lay = find_layout("detect", path, split=split)
    if lay.kind == "yolo" and lay.labels is not None:
        names = list(class_names) if class_names else yolo_class_names(lay.path)
        out = []
        for img_path, boxes, labels in read_yolo(lay.path, lay.labels, names).records[:limit]:
            img = read_image(img_path)
            h, w = img.shape[:2]
            out.append((img, boxes * np.array([w, h, w, h], np.float32), labels))
        return out
    coco = read_coco(lay.path, class_names=class_names)
    return [(read_image(img), boxes, labels) for img, boxes, labels in coco.records[:limit]]


def runner_detections(runner: Any, contract: Any, images: Sequence[np.ndarray]) -> list[Detections]:
    """Detections (original-image pixels) of any Runner over BGR images, preprocessed and decoded per the contract
    (letterbox mapping included), one image per call."""
    from edgecv.tasks.decode import DetectResult, get_decoder, make_feed
    from edgecv.tasks.preprocess import preprocess

    dec = get_decoder(contract)
    out: list[Detections] = []
    for img in images:
        x, tf = preprocess(img, contract)
        r = dec.decode(runner.infer(make_feed(contract, x)), [tf])[0]  # + host proposals (R-CNN)
        if not isinstance(r, DetectResult):
            raise ConfigError(f"mAP: expected a detector (task detect), found {type(r).__name__} results")
        out.append((r.boxes, r.scores, r.classes))
    return out


def runner_map(
    runner: Any, contract: Any, samples: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]]
) -> tuple[dict[str, float], list[Detections]]:
    """mAP of a Runner on ``samples`` from :func:`load_coco_samples`; returns (metrics, detections)."""
    dets = runner_detections(runner, contract, [s[0] for s in samples])
    m = coco_map(
        dets,
        [(s[1], s[2]) for s in samples],
        len(contract.class_names) or int(contract.decode.get("num_classes", 0)),
        [s[0].shape[:2] for s in samples],
    )
    return m, dets


def compare_backends(
    ref: Sequence[Detections],
    others: dict[str, Sequence[Detections]],
    ref_map: dict[str, float] | None = None,
    maps: dict[str, dict[str, float]] | None = None,
    iou_threshold: float = 0.9,
    min_score: float = 0.25,
) -> list[dict[str, Any]]:
    """One row per backend: box agreement with the reference (IoU ≥ ``iou_threshold``, same class, score
    difference) and, given mAPs, the mAP difference from the reference (in mAP points, ×100)."""
    rows = []
    for name, dets in others.items():
        a = match_detections(ref, dets, iou_threshold=iou_threshold, min_score=min_score)
        row: dict[str, Any] = {"backend": name, **a.to_dict()}
        if ref_map is not None and maps is not None and name in maps:
            row["map50"] = maps[name]["map50"]
            row["map"] = maps[name]["map"]
            row["map50_diff_pts"] = 100.0 * (maps[name]["map50"] - ref_map["map50"])
            row["map_diff_pts"] = 100.0 * (maps[name]["map"] - ref_map["map"])
        rows.append(row)
    return rows
