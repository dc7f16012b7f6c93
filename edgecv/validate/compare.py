"""Numeric comparison of a backend's outputs against reference outputs, and the tolerances that judge it.

Errors are measured against the *scale* of each reference output (``max |ref|``), not element by element:
logits, heatmaps and box coordinates all have elements near zero, where an elementwise relative error explodes
although the output is fine (Polygraphy's ``--rtol`` has the same trouble). The elementwise relative error is
still reported, with an epsilon, for people who want it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from edgecv.errors import ConfigError
from edgecv.tasks.decode import PRE_NMS_OUTPUTS

#: added to ``|ref|`` in the elementwise relative error so that zeros in the reference do not divide by zero
ELEM_REL_EPS = 1e-6


@dataclass(frozen=True)
class Tolerance:
    """What an output must meet to pass.

    Attributes:
        precision: the precision these numbers are meant for.
        rtol: allowed ``max |got - ref|`` as a fraction of the output's scale ``max |ref|``.
        atol: allowed ``max |got - ref|`` in absolute units, added to ``rtol * scale``.
        min_cosine: lowest allowed cosine similarity of the flattened outputs.
        min_top1: lowest allowed fraction of samples whose top-1 class agrees (classify only).
        min_pixel: lowest allowed fraction of pixels whose argmax class agrees (segment only).
        max_rel_l2: where INT8 judges a decision (top-1, per-pixel class, detection candidates) instead of the
            elementwise max abs, the output's scale is still judged: ``||got - ref|| / ||ref||`` must stay under
            this (logits ×0.5 give 0.5, ×10 give 9). None: not used (the max-abs bound is tighter).
    """

    precision: str
    rtol: float
    atol: float = 0.0
    min_cosine: float = 0.99999
    min_top1: float = 0.99
    min_pixel: float = 0.99
    max_rel_l2: float | None = None

    def allowed_abs(self, scale: float) -> float:
        return self.atol + self.rtol * scale

    def describe(self) -> str:
        bound = f"{self.atol:g}+{self.rtol:g}×scale" if self.atol else f"{self.rtol:g}×scale"
        return f"abs≤{bound} cos≥{self.min_cosine:g}"

    def describe_for(self, cmp: OutputComparison) -> str:
        """The bounds :func:`judge` applies to ``cmp``, and only those (what a table row must show)."""
        if cmp.boxes_ref is not None:
            return (
                f"recall≥{self.min_top1:g} (IoU≥{DETECTION_IOU:g}, score≥{DETECTION_MIN_SCORE:g}) "
                f"extra≤{1.0 - self.min_top1:.2g}×ref score diff≤{self.allowed_abs(1.0):.3g}"
            )
        parts = []
        if not _decided(cmp, self):
            parts.append(self.describe())
        else:
            parts.append(f"cos≥{self.min_cosine:g}")
            if self.max_rel_l2 is not None:
                parts.append(f"rel L2≤{self.max_rel_l2:g}")
        if cmp.top1_agreement is not None:
            parts.append(f"top-1≥{self.min_top1:g}")
        if cmp.pixel_agreement is not None:
            parts.append(f"pixel≥{self.min_pixel:g}")
        return " ".join(parts)


# Why these numbers:
#  fp32 — a different engine reorders sums and fuses ops; that moves results by a few ulp per layer. 1e-4 of the
#         output scale leaves ~100x headroom over what ORT/OpenVINO show on CNNs, yet catches a wrong op.
#  fp16 — 11-bit mantissa (unit roundoff 4.9e-4); through 20-50 layers errors of ~0.5-1% of scale are normal, so
#         2e-2 x scale with cosine 0.999. Top-1 may flip only on near-ties: 0.99.
#  bf16 — 8-bit mantissa (unit roundoff 3.9e-3, 8x coarser than fp16), so the bound is 2.5x looser (5e-2) and the
#         cosine 0.998; top-1 0.98.
#  int8 — quantization error is a few % of each activation's range and builds up layer by layer; the numeric bound
#         is loose (0.15 x scale), and what matters is the decision: cosine 0.98, top-1 0.95. Where the decision is
#         judged instead of max abs, the scale still is: relative L2 error ≤ 0.3 (cosine 0.98 alone allows a 0.2
#         error of direction; 0.3 leaves room for a ~15% gain error on top, while logits ×0.5 or ×2 fail).
#  Top-1 fractions are over the validation batch: with a 4-sample reference, 0.95 still means every sample agrees.
TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance("fp32", rtol=1e-4, min_cosine=0.99999, min_top1=0.99, min_pixel=0.999),
    "fp16": Tolerance("fp16", rtol=2e-2, min_cosine=0.999, min_top1=0.99, min_pixel=0.99),
    "bf16": Tolerance("bf16", rtol=5e-2, min_cosine=0.998, min_top1=0.98, min_pixel=0.98),
    "int8": Tolerance("int8", rtol=0.15, min_cosine=0.98, min_top1=0.95, min_pixel=0.95, max_rel_l2=0.3),
}


def tolerance_for(
    precision: str,
    *,
    atol: float | None = None,
    rtol: float | None = None,
    min_cosine: float | None = None,
    min_top1: float | None = None,
    min_pixel: float | None = None,
    max_rel_l2: float | None = None,
) -> Tolerance:
    """The default :data:`TOLERANCES` entry for ``precision`` with any given field overridden.

    Raises:
        ConfigError: unknown precision, or an override outside its valid range.
    """
    if precision not in TOLERANCES:
        raise ConfigError(f"precision: expected one of {', '.join(TOLERANCES)}, found '{precision}'")
    overrides: dict[str, float] = {}
    for name, value, lo, hi in (
        ("atol", atol, 0.0, math.inf),
        ("rtol", rtol, 0.0, math.inf),
        ("min_cosine", min_cosine, -1.0, 1.0),
        ("min_top1", min_top1, 0.0, 1.0),
        ("min_pixel", min_pixel, 0.0, 1.0),
        ("max_rel_l2", max_rel_l2, 0.0, math.inf),
    ):
        if value is None:
            continue
        if not (lo <= value <= hi) or math.isnan(value):
            raise ConfigError(f"{name.replace('_', '-')}: expected a number in [{lo:g}, {hi:g}], found {value}")
        overrides[name] = float(value)
    return replace(TOLERANCES[precision], **overrides)  # type: ignore[arg-type]


@dataclass
class OutputComparison:
    """How one output of a backend compares with the reference.

    Attributes:
        name: output name.
        shape: reference shape; ``got_shape`` differs when the backend returned another shape.
        scale: ``max |ref|``, the unit that ``max_rel`` is measured in.
        max_abs: ``max |got - ref|``.
        max_rel: ``max_abs / scale``.
        max_elem_rel: ``max |got - ref| / (|ref| + 1e-6)``, elementwise.
        mean_abs: mean of ``|got - ref|``.
        cosine: cosine similarity of the flattened outputs (1.0 when both are all zeros).
        top1_agreement / top5_agreement: classify only; fraction of samples whose top-1 class agrees, and whose
            top-5 set of classes (order ignored) agrees.
        pixel_agreement: segment only; fraction of pixels whose argmax class agrees.
        box_recall / box_extra / boxes_ref / mean_iou: detect only (NMS outputs are compared as boxes, not
            elementwise: near-tied scores legitimately reorder them): the fraction of confident reference boxes
            matched by a box of the same class at IoU ≥ 0.9, unmatched confident backend boxes, the number of
            confident reference boxes, and the mean IoU of the matches. ``max_abs`` is then the largest score
            difference of a matched pair (``scale`` 1).
        rel_l2: ``||got - ref|| / ||ref||`` over the whole output (gain errors show here, not in the cosine).
        candidates: the output is a detector's pre-NMS candidates (``pre_nms_boxes`` / ``pre_nms_scores``).
        nonfinite: count of NaN/Inf in ``got`` where the reference is finite.
        passed / failures: filled by :func:`judge`.
        not_checked: the checks that had nothing to compare, and why; such an output never passes unless the
            caller accepts unchecked results (``validate --allow-unchecked``).
    """

    name: str
    shape: tuple[int, ...]
    got_shape: tuple[int, ...]
    scale: float = 0.0
    max_abs: float = math.inf
    max_rel: float = math.inf
    max_elem_rel: float = math.inf
    mean_abs: float = math.inf
    cosine: float = 0.0
    top1_agreement: float | None = None
    top5_agreement: float | None = None
    pixel_agreement: float | None = None
    box_recall: float | None = None
    box_extra: int | None = None
    boxes_ref: int | None = None
    mean_iou: float | None = None
    rel_l2: float | None = None
    candidates: bool = False
    nonfinite: int = 0
    passed: bool | None = None
    failures: list[str] = field(default_factory=list)
    not_checked: list[str] = field(default_factory=list)  # checks with nothing to compare, and why (never PASS)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["shape"] = list(self.shape)
        d["got_shape"] = list(self.got_shape)
        # JSON has no Infinity; a non-comparable output reports null
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


def _topk_sets(x: np.ndarray, k: int) -> np.ndarray:
    idx = np.argpartition(-x, kth=k - 1, axis=1)[:, :k]
    return np.sort(idx, axis=1)


def _classify_agreement(ref: np.ndarray, got: np.ndarray) -> tuple[float | None, float | None]:
    # (N, C) scores; extra trailing singleton dims (N, C, 1, 1) are squeezed. Anything else is not a score table.
    r = ref.reshape(ref.shape[0], -1) if ref.ndim >= 2 else None
    if r is None or r.shape[1] < 2 or ref.shape[1] != r.shape[1]:
        return None, None
    g = got.reshape(got.shape[0], -1)
    top1 = float(np.mean(np.argmax(r, axis=1) == np.argmax(g, axis=1)))
    k = 5
    if r.shape[1] <= k:
        return top1, None
    top5 = float(np.mean(np.all(_topk_sets(r, k) == _topk_sets(g, k), axis=1)))
    return top1, top5


def _pixel_agreement(ref: np.ndarray, got: np.ndarray) -> float | None:
    if ref.ndim == 4 and ref.shape[1] >= 2:  # N, C, H, W logits
        return float(np.mean(np.argmax(ref, axis=1) == np.argmax(got, axis=1)))
    if ref.ndim == 3 and np.issubdtype(ref.dtype, np.integer):  # N, H, W class map (argmax in the graph)
        return float(np.mean(ref == got))
    return None


def compare_output(name: str, ref: np.ndarray, got: np.ndarray, task: str = "generic") -> OutputComparison:
    """Compare one output array with its reference. See :class:`OutputComparison` for the fields."""
    ref = np.asarray(ref)
    got = np.asarray(got)
    cmp = OutputComparison(name=name, shape=tuple(ref.shape), got_shape=tuple(got.shape))
    if ref.shape != got.shape:
        return cmp
    r = ref.astype(np.float64, copy=False)
    g = got.astype(np.float64, copy=False)
    ref_finite = np.isfinite(r)
    cmp.nonfinite = int(np.count_nonzero(~np.isfinite(g) & ref_finite))
    if r.size == 0:
        cmp.scale = cmp.max_abs = cmp.max_rel = cmp.max_elem_rel = cmp.mean_abs = 0.0
        cmp.cosine = 1.0
        return cmp
    diff = np.abs(g - r)
    # positions where both are the same non-finite value (e.g. -inf masks) are equal, not NaN
    same = (r == g) | (np.isnan(r) & np.isnan(g))
    diff = np.where(same, 0.0, diff)
    if cmp.nonfinite or np.isnan(diff).any():
        diff = np.where(np.isnan(diff), np.inf, diff)
    cmp.scale = float(np.max(np.abs(r[ref_finite]))) if ref_finite.any() else 0.0
    cmp.max_abs = float(np.max(diff))
    cmp.mean_abs = float(np.mean(diff))
    cmp.max_rel = cmp.max_abs / cmp.scale if cmp.scale > 0 else (0.0 if cmp.max_abs == 0 else math.inf)
    with np.errstate(invalid="ignore"):
        cmp.max_elem_rel = float(np.max(diff / (np.abs(np.where(ref_finite, r, 0.0)) + ELEM_REL_EPS)))
    rf, gf = np.where(ref_finite, r, 0.0).ravel(), np.where(np.isfinite(g), g, 0.0).ravel()
    nr, ng = float(np.linalg.norm(rf)), float(np.linalg.norm(gf))
    if nr == 0.0 and ng == 0.0:
        cmp.cosine = 1.0
    elif nr == 0.0 or ng == 0.0 or cmp.nonfinite:
        cmp.cosine = 0.0
    else:
        cmp.cosine = float(np.clip(np.dot(rf, gf) / (nr * ng), -1.0, 1.0))
    cmp.rel_l2 = float(np.linalg.norm(rf - gf) / nr) if nr > 0 else (0.0 if ng == 0.0 else math.inf)
    if task == "classify":
        cmp.top1_agreement, cmp.top5_agreement = _classify_agreement(r, g)
        if cmp.top1_agreement is not None:
            top = np.unique(np.argmax(r.reshape(r.shape[0], -1), axis=1))
            if top.size == 1 and r.shape[0] > 1:  # one sample is one decision, compared; many alike are not
                cmp.not_checked.append(
                    f"top-1 agreement: every reference sample is class {int(top[0])}, so a "
                    "change of the predicted class between samples cannot show; give export "
                    "--reference-data with several classes"
                )
    elif task == "segment":
        cmp.pixel_agreement = _pixel_agreement(ref, got)
        if cmp.pixel_agreement is not None:
            classes = np.unique(np.argmax(r, axis=1) if r.ndim == 4 else ref)
            if classes.size == 1:
                cmp.not_checked.append(
                    f"pixel agreement: every reference pixel is class {int(classes[0])} (an "
                    "empty mask), so no boundary was compared; give export --reference-data "
                    "with objects in it"
                )
    return cmp


def compare_outputs(ref: dict[str, np.ndarray], got: dict[str, np.ndarray], task: str) -> list[OutputComparison]:
    """Compare every reference output with the backend's output of the same name.

    Args:
        ref: output name → reference array (PyTorch, live or from ``reference.npz``).
        got: output name → the backend's array.
        task: the bundle's task; ``classify`` adds top-1/top-5 agreement over the batch, ``segment`` the pixel
            agreement of the per-pixel argmax.

    Returns:
        One :class:`OutputComparison` per reference output, in the reference's order. An output the backend did
        not return, or returned with another shape, gets ``max_abs = inf`` and fails any tolerance.
    """
    if task == "detect" and DETECTION_OUTPUTS <= set(ref):
        # after NMS as boxes; before NMS (when the graph exposes its candidates) elementwise, every candidate
        dets = compare_detections(ref, got)
        cands = [
            _compare_best_class(k, ref[k], got[k], task)
            if k == "pre_nms_scores" and k in got and _best_class_only(ref[k], got[k])
            else _compare_one(k, ref[k], got, task)
            for k in PRE_NMS_OUTPUTS
            if k in ref
        ]
        for c in cands:
            c.candidates = True
        return [dets, *cands]
    return [_compare_one(name, r, got, task) for name, r in ref.items()]


def _best_class_only(ref: np.ndarray, got: np.ndarray) -> bool:
    """Candidate scores ``[B, N, C]`` that keep only each candidate's best class (the rest zeroed; classes tied
    exactly at the best score may all stay), in both arrays: the form of heads whose NMS takes one class per box
    (Ultralytics')."""
    ref, got = np.asarray(ref), np.asarray(got)
    if ref.ndim != 3 or ref.shape != got.shape or ref.shape[-1] < 2:
        return False

    def best_only(a: np.ndarray) -> bool:
        return bool(((a == 0) | (a == a.max(axis=-1, keepdims=True))).all())

    return best_only(ref) and best_only(got)


def _compare_best_class(name: str, ref: np.ndarray, got: np.ndarray, task: str) -> OutputComparison:
    """Best-class-only candidate scores, compared as each candidate's score (the row maximum), elementwise.

    Which class holds a candidate's score when classes score within float rounding of each other (every class of an
    untrained head, the background candidates of a weak one) is each engine's rounding, and the class that loses is
    zeroed: compared elementwise, such a tie reads as a whole score of error. The score itself does not depend on
    the tie, so it is compared at the usual tolerance; the classes are checked on the confident boxes after NMS
    (``detections``) and by the task metric."""
    cmp = compare_output(name, np.asarray(ref).max(axis=-1), np.asarray(got).max(axis=-1), task)
    cmp.shape, cmp.got_shape = tuple(np.asarray(ref).shape), tuple(np.asarray(got).shape)
    return cmp


def _compare_one(name: str, r: np.ndarray, got: dict[str, np.ndarray], task: str) -> OutputComparison:
    if name not in got:
        return OutputComparison(
            name=name,
            shape=tuple(np.shape(r)),
            got_shape=(),
            failures=[f"output '{name}' missing; backend returned {sorted(got)}"],
            passed=False,
        )
    return compare_output(name, r, got[name], task)


DETECTION_OUTPUTS = {"boxes", "scores", "classes", "num_dets"}
# reference boxes under this score flip in and out of the fixed top-K with float noise; they need not match
DETECTION_MIN_SCORE = 0.25
DETECTION_IOU = 0.9


def _detections(out: dict[str, np.ndarray]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    n = np.asarray(out["num_dets"]).reshape(-1).astype(int)
    b, s, c = np.asarray(out["boxes"]), np.asarray(out["scores"]), np.asarray(out["classes"])
    return [(b[i, :k], s[i, :k], c[i, :k]) for i, k in enumerate(n)]


def compare_detections(ref: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> OutputComparison:
    """Compare graph-NMS detector outputs by matching boxes (same class, IoU ≥ 0.9), not elementwise."""
    from edgecv.validate.detection import match_detections

    cmp = OutputComparison(
        name="detections", shape=tuple(np.shape(ref["boxes"])), got_shape=tuple(np.shape(got.get("boxes", np.zeros(0))))
    )
    missing = sorted(DETECTION_OUTPUTS - set(got))
    if missing:
        cmp.failures, cmp.passed = [f"outputs {missing} missing; backend returned {sorted(got)}"], False
        return cmp
    cmp.got_shape = cmp.shape  # K is fixed by the export; a different K would fail in _detections' slicing
    agr = match_detections(
        _detections(ref), _detections(got), iou_threshold=DETECTION_IOU, min_score=DETECTION_MIN_SCORE
    )
    cmp.box_recall, cmp.box_extra, cmp.boxes_ref, cmp.mean_iou = agr.recall, agr.extra, agr.ref_boxes, agr.mean_iou
    cmp.scale, cmp.max_abs, cmp.max_rel, cmp.mean_abs = 1.0, agr.max_score_diff, agr.max_score_diff, agr.mean_score_diff
    # the cosine column carries the mean IoU of matched pairs; with none matched there is no number (NaN → null)
    cmp.max_elem_rel, cmp.cosine = agr.max_score_diff, agr.mean_iou if agr.mean_iou is not None else math.nan
    if agr.recall is None:
        cmp.not_checked.append(
            f"box recall: no reference box scored ≥ {DETECTION_MIN_SCORE} on the reference "
            f"inputs, so no box was compared"
        )
    return cmp


def _decided(cmp: OutputComparison, tol: Tolerance) -> bool:
    """int8 moves logits by a few quantization steps of their range by design; where the output carries a decision
    (top-1, per-pixel class) or is a detector's candidate set (low-score candidates move freely), that decision,
    the cosine and the relative L2 error (the scale) are judged, and max abs is only reported."""
    return tol.precision == "int8" and (
        cmp.top1_agreement is not None or cmp.pixel_agreement is not None or cmp.candidates
    )


def judge(cmp: OutputComparison, tol: Tolerance) -> OutputComparison:
    """Set ``cmp.passed`` and ``cmp.failures`` (one line per broken bound) against ``tol``; returns ``cmp``."""
    if cmp.passed is False and cmp.failures:  # already failed structurally (missing output)
        return cmp
    fails: list[str] = []
    if cmp.boxes_ref is not None:
        # detections: every confident box matched, few extras, scores close (scores live in [0, 1]); with no
        # confident reference box the recall is not checked (cmp.not_checked says so), never a vacuous 1.0
        min_recall = tol.min_top1
        if cmp.box_recall is not None and cmp.box_recall < min_recall:
            fails.append(
                f"box recall {cmp.box_recall:.3f} < {min_recall:g} ({cmp.boxes_ref} reference boxes with "
                f"score ≥ {DETECTION_MIN_SCORE}, IoU ≥ {DETECTION_IOU}, same class)"
            )
        if (
            cmp.boxes_ref is not None
            and cmp.box_extra is not None
            and cmp.box_extra > (1.0 - min_recall) * max(cmp.boxes_ref, 1)
        ):
            fails.append(f"{cmp.box_extra} confident boxes with no reference match")
        if not cmp.max_abs <= tol.allowed_abs(1.0):
            fails.append(f"score difference {cmp.max_abs:.3g} > {tol.allowed_abs(1.0):.3g}")
        cmp.failures, cmp.passed = fails, not fails
        return cmp
    if cmp.shape != cmp.got_shape:
        fails.append(f"shape: expected {list(cmp.shape)}, found {list(cmp.got_shape)}")
    else:
        if cmp.nonfinite:
            fails.append(f"{cmp.nonfinite} NaN/Inf values where the reference is finite")
        allowed = tol.allowed_abs(cmp.scale)
        decided = _decided(cmp, tol)
        if not decided and not cmp.max_abs <= allowed:
            fails.append(f"max abs {cmp.max_abs:.3g} > {allowed:.3g} ({tol.describe()}, scale {cmp.scale:.3g})")
        if decided and tol.max_rel_l2 is not None and not (cmp.rel_l2 is not None and cmp.rel_l2 <= tol.max_rel_l2):
            fails.append(
                f"relative L2 error {cmp.rel_l2 if cmp.rel_l2 is not None else math.inf:.3g} > "
                f"{tol.max_rel_l2:g} (the output's scale moved, e.g. logits multiplied)"
            )
        if not cmp.cosine >= tol.min_cosine:
            fails.append(f"cosine {cmp.cosine:.6f} < {tol.min_cosine:g}")
        if cmp.top1_agreement is not None and not cmp.top1_agreement >= tol.min_top1:
            fails.append(f"top-1 agreement {cmp.top1_agreement:.3f} < {tol.min_top1:g}")
        if cmp.pixel_agreement is not None and not cmp.pixel_agreement >= tol.min_pixel:
            fails.append(f"pixel agreement {cmp.pixel_agreement:.4f} < {tol.min_pixel:g}")
    cmp.failures = fails
    cmp.passed = not fails
    return cmp
