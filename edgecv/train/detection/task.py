"""The trainer's view of a detector (:class:`edgecv.train.Task`): the model's own loss, a collate that batches
variable box counts and augments training batches, and an mAP metric computed by faster-coco-eval.

:func:`edgecv.train.tasks.task_for` gives a ``DetectTask`` for any detector: a model with
``postprocess(outputs) -> [(boxes, scores, classes)]`` (input-tensor pixels, after NMS) and either its own
``compute_loss(outputs, targets)`` or a ``loss_spec`` the losses in :mod:`edgecv.train.detection.losses` build
(:func:`~edgecv.train.detection.losses.detector_loss`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from edgecv.train.base import Metric, Task
from edgecv.train.detection.augment import DetAugment, augment_batch
from edgecv.train.detection.losses import detector_loss


def detection_collate(batch: Sequence[Any]) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """Stack images; targets stay a list of ``{"boxes": float32 [N,4], "labels": int64 [N]}``."""
    imgs = torch.stack([torch.as_tensor(b[0]) for b in batch])
    targets = []
    for _, t in batch:
        targets.append(
            {
                "boxes": torch.as_tensor(np.asarray(t["boxes"], np.float32)).reshape(-1, 4),
                "labels": torch.as_tensor(np.asarray(t["labels"], np.int64)).reshape(-1),
            }
        )
    return imgs, targets


class DetectionMAP(Metric):
    """Collects post-processed detections and targets; :meth:`compute` returns mAP@0.5 (faster-coco-eval).
    :meth:`summary` gives mAP@0.5 and mAP@[.5:.95]. Not all-reduced (single-process evaluation)."""

    name = "map50"

    def __init__(self, model: Any, num_classes: int) -> None:
        super().__init__(torch.zeros(1, dtype=torch.float64))
        self.model = model
        self.num_classes = num_classes
        self.dets: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.gts: list[tuple[np.ndarray, np.ndarray]] = []

    def update(self, outputs: Any, targets: list[dict[str, Any]]) -> None:
        for (b, s, c), t in zip(self.model.postprocess(outputs), targets):
            self.dets.append((b.detach().cpu().numpy(), s.detach().cpu().numpy(), c.detach().cpu().numpy()))
            self.gts.append((np.asarray(t["boxes"].cpu(), np.float32), np.asarray(t["labels"].cpu())))

    def summary(self) -> dict[str, float]:
        from edgecv.validate.detection import coco_map

        return coco_map(self.dets, self.gts, self.num_classes)

    def compute(self) -> float:
        return float(self.summary()["map50"])


class DetectTask(Task):
    """Loss / metric / batching of a detector. Training batches (model in train mode) are augmented per
    ``model.train_aug`` (scale/crop, flip, colour, multi-scale sizes); evaluation batches are not. ``mean``/``std``
    are the input normalisation the loader applied (augmentation works in pixel space; ``None``: mean 0 / std 1)."""

    name = "detect"
    metric_name = "map50"
    higher_is_better = True

    def __init__(
        self,
        model: Any,
        num_classes: int,
        augment: DetAugment | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        self.model = model
        self.num_classes = num_classes
        self.augment = augment or DetAugment()
        self.mean = tuple(float(v) for v in mean) if mean is not None else None
        self.std = tuple(float(v) for v in std) if std is not None else None
        self.compute_loss = detector_loss(model)

    def loss(self, outputs: Any, targets: Any) -> torch.Tensor:
        return self.compute_loss(outputs, targets)["loss"]

    def new_metric(self) -> Metric:
        return DetectionMAP(self.model, self.num_classes)

    def collate(self, batch: Sequence[Any]) -> Any:
        x, t = detection_collate(batch)
        # the trainer sets train()/eval() before it iterates a loader, so the mode says which batch this is
        if self.model.training and self.augment.active:
            x, t = augment_batch(x, t, self.augment, self.mean, self.std)
        return x, t

    def has_labels(self, targets: Any) -> bool:
        return isinstance(targets, list)

    def distill_loss(self, student: Any, teacher: Any, temperature: float) -> torch.Tensor:
        from edgecv.errors import ConfigError

        raise ConfigError("train.distill: knowledge distillation is not supported for detectors")
