"""What the trainer needs to know about a task: loss, metric, batching, distillation loss.

The protocol (:class:`~edgecv.train.base.Task`, :class:`~edgecv.train.base.Metric`) is in :mod:`edgecv.train.base`;
this module holds the built-in classify and segment tasks and :func:`task_for`. A model family with its own loss
supplies a :class:`Task` — either passed to the trainer, or returned by a ``model.edgecv_task()`` method, which
:func:`task_for` prefers over the built-in ones; detectors get :class:`edgecv.train.detection.task.DetectTask`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from edgecv.errors import ConfigError
from edgecv.train.base import LossOnly, Metric, Task, kd_loss, primary_output

IGNORE_INDEX = 255

__all__ = [
    "IGNORE_INDEX",
    "ClassifyTask",
    "LossOnly",
    "MeanIoU",
    "Metric",
    "SegmentTask",
    "Task",
    "Top1",
    "kd_loss",
    "primary_output",
    "task_for",
]


class Top1(Metric):
    name = "top1"

    def __init__(self) -> None:
        super().__init__(torch.zeros(2, dtype=torch.float64))

    def update(self, outputs: Any, targets: torch.Tensor) -> None:
        logits = primary_output(outputs)
        keep = targets >= 0
        self.state[0] += (logits.argmax(1)[keep] == targets[keep]).sum().item()
        self.state[1] += int(keep.sum().item())

    def compute(self) -> float:
        return float(100.0 * self.state[0] / self.state[1]) if self.state[1] > 0 else float("nan")


class MeanIoU(Metric):
    """Mean intersection-over-union over classes present in targets or predictions (confusion matrix)."""

    name = "miou"

    def __init__(self, num_classes: int) -> None:
        super().__init__(torch.zeros(num_classes, num_classes, dtype=torch.float64))
        self.num_classes = num_classes

    def update(self, outputs: Any, targets: torch.Tensor) -> None:
        logits = primary_output(outputs)
        if logits.shape[2:] != targets.shape[1:]:
            logits = F.interpolate(logits.float(), size=targets.shape[1:], mode="bilinear", align_corners=False)
        pred = logits.argmax(1).flatten()
        t = targets.flatten()
        keep = (t >= 0) & (t < self.num_classes)
        idx = t[keep] * self.num_classes + pred[keep]
        self.state += (
            torch.bincount(idx, minlength=self.num_classes**2)
            .reshape(self.num_classes, self.num_classes)
            .to(self.state.dtype)
            .cpu()
        )

    def per_class(self) -> torch.Tensor:
        cm = self.state
        inter = cm.diag()
        union = cm.sum(0) + cm.sum(1) - inter
        return torch.where(union > 0, inter / union.clamp(min=1), torch.full_like(inter, float("nan")))

    def compute(self) -> float:
        iou = self.per_class()
        valid = ~torch.isnan(iou)
        return float(100.0 * iou[valid].mean()) if valid.any() else float("nan")


class _LabelTask(Task):
    """A task with class labels: cross-entropy over ``num_classes`` with optional label smoothing."""

    higher_is_better = True

    def __init__(self, num_classes: int, label_smoothing: float = 0.0) -> None:
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing


class ClassifyTask(_LabelTask):
    name = "classify"
    metric_name = "top1"

    def loss(self, outputs: Any, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(
            primary_output(outputs).float(), targets, ignore_index=-1, label_smoothing=self.label_smoothing
        )

    def new_metric(self) -> Metric:
        return Top1()


class SegmentTask(_LabelTask):
    name = "segment"
    metric_name = "miou"

    def loss(self, outputs: Any, targets: torch.Tensor) -> torch.Tensor:
        logits = primary_output(outputs).float()
        if logits.shape[2:] != targets.shape[1:]:
            logits = F.interpolate(logits, size=targets.shape[1:], mode="bilinear", align_corners=False)
        return F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX, label_smoothing=self.label_smoothing)

    def new_metric(self) -> Metric:
        return MeanIoU(self.num_classes)

    def has_labels(self, targets: Any) -> bool:
        return isinstance(targets, torch.Tensor) and targets.ndim == 3


def task_for(
    name: str,
    model: Any = None,
    num_classes: int = 0,
    label_smoothing: float = 0.0,
    preprocessing: dict[str, Any] | None = None,
) -> Task:
    """The task object for ``name``; a model that defines ``edgecv_task()`` supplies its own. A detector (task
    ``detect``, a model with ``postprocess``: the zoo's YOLO, Faster R-CNN, R-CNN, DETR) gets
    :class:`edgecv.train.detection.task.DetectTask`, told the input ``mean``/``std`` of ``preprocessing`` (the
    recipe's) so its augmentation works in pixel space."""
    hook = getattr(model, "edgecv_task", None)
    if callable(hook):
        return hook()  # type: ignore[no-any-return]
    if name == "classify":
        return ClassifyTask(num_classes, label_smoothing)
    if name == "segment":
        return SegmentTask(num_classes, label_smoothing)
    if name == "detect" and callable(getattr(model, "postprocess", None)):
        from edgecv.train.detection.task import DetectTask

        pre = preprocessing or {}
        return DetectTask(
            model, int(model.num_classes), getattr(model, "train_aug", None), pre.get("mean"), pre.get("std")
        )
    if name == "detect":
        raise ConfigError(
            "data.task 'detect': the model must supply its loss through an edgecv_task() method "
            "returning an edgecv.train.Task (detection models bring their own loss)"
        )
    raise ConfigError(f"data.task: expected one of classify, segment, detect, found '{name}'")
