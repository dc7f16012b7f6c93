"""The trainer's task protocol: :class:`Task` (loss, metric, batching, distillation loss) and :class:`Metric`.

The built-in tasks (:mod:`edgecv.train.tasks`) and the detection task (:mod:`edgecv.train.detection.task`) both
subclass these; a model family with its own loss supplies a :class:`Task` subclass (or a duck-typed one).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import default_collate

from edgecv.errors import ConfigError


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
