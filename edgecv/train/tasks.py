"""What the trainer needs to know about a task: loss, metric, batching, distillation loss.

A model family with its own loss supplies a :class:`Task` — either passed to the trainer, or
returned by a ``model.edgecv_task()`` method, which :func:`task_for` prefers over the built-in ones; detectors get
:class:`edgecv.train.detection.task.DetectTask`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import default_collate

from edgecv.errors import ConfigError

IGNORE_INDEX = 255


def primary_output(outputs: Any) -> torch.Tensor:
    """The logits tensor of a model's outputs (a tensor, a dict with 'out'/'logits', or the first of a tuple)."""
    if isinstance(outputs, torch.Tensor):
        return outputs
    if isinstance(outputs, dict):
        for k in ("out", "logits", "output"):
            if k in outputs:
                return outputs[k]
        return next(iter(outputs.values()))
    if isinstance(outputs, (list, tuple)) and outputs:
        return primary_output(outputs[0])
    raise ConfigError(f"cannot find a logits tensor in model outputs of type {type(outputs).__name__}")


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton KD: KL(teacher ‖ student) on temperature-softened distributions over dim 1, times T².

    For segmentation logits (N, C, H, W) it is the per-pixel KL averaged over pixels; the teacher is resized to the
    student's resolution if they differ.
    """
    if teacher.shape[2:] != student.shape[2:]:
        teacher = F.interpolate(teacher, size=student.shape[2:], mode="bilinear", align_corners=False)
    t = temperature
    s_log = F.log_softmax(student.float() / t, dim=1)
    t_log = F.log_softmax(teacher.float() / t, dim=1)
    kl = F.kl_div(s_log, t_log, reduction="none", log_target=True).sum(dim=1)
    return kl.mean() * (t * t)


class Metric:
    """Accumulates a metric as a tensor of sums, so ranks can all-reduce it before :meth:`compute`."""

    name = "metric"
    higher_is_better = True

    def __init__(self, state: torch.Tensor) -> None:
        self.state = state

    def update(self, outputs: Any, targets: Any) -> None:
        raise NotImplementedError

    def compute(self) -> float:
        raise NotImplementedError


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


class LossOnly(Metric):
    """For tasks without a metric: the mean loss (lower is better)."""

    name = "loss"
    higher_is_better = False

    def __init__(self, loss_fn: Callable[[Any, Any], torch.Tensor]) -> None:
        super().__init__(torch.zeros(2, dtype=torch.float64))
        self.loss_fn = loss_fn

    def update(self, outputs: Any, targets: Any) -> None:
        self.state[0] += float(self.loss_fn(outputs, targets)) * 1.0
        self.state[1] += 1

    def compute(self) -> float:
        return float(self.state[0] / self.state[1]) if self.state[1] > 0 else float("nan")


class Task:
    """Loss, metric and batching of one task. Subclass it (or duck-type it) for a model with its own loss."""

    name = "generic"
    metric_name = "loss"
    higher_is_better = False

    def loss(self, outputs: Any, targets: Any) -> torch.Tensor:
        raise NotImplementedError

    def new_metric(self) -> Metric:
        return LossOnly(self.loss)

    def collate(self, batch: Sequence[Any]) -> Any:
        # torch annotates default_collate as taking a list; at runtime it indexes/iterates any sequence
        return default_collate(batch)  # type: ignore[arg-type]

    def to_device(self, targets: Any, device: torch.device) -> Any:
        if isinstance(targets, torch.Tensor):
            return targets.to(device, non_blocking=True)
        if isinstance(targets, dict):
            return {k: self.to_device(v, device) for k, v in targets.items()}
        if isinstance(targets, (list, tuple)):
            return type(targets)(self.to_device(v, device) for v in targets)
        return targets

    def has_labels(self, targets: Any) -> bool:
        """False for an unlabelled batch (targets all -1): distillation then uses the KD loss alone."""
        return not (isinstance(targets, torch.Tensor) and targets.ndim == 1 and bool((targets < 0).all()))

    def distill_loss(self, student: Any, teacher: Any, temperature: float) -> torch.Tensor:
        return kd_loss(primary_output(student), primary_output(teacher), temperature)


class ClassifyTask(Task):
    name = "classify"
    metric_name = "top1"
    higher_is_better = True

    def __init__(self, num_classes: int, label_smoothing: float = 0.0) -> None:
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing

    def loss(self, outputs: Any, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(
            primary_output(outputs).float(), targets, ignore_index=-1, label_smoothing=self.label_smoothing
        )

    def new_metric(self) -> Metric:
        return Top1()


class SegmentTask(Task):
    name = "segment"
    metric_name = "miou"
    higher_is_better = True

    def __init__(self, num_classes: int, label_smoothing: float = 0.0) -> None:
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing

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
