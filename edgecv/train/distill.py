"""Knowledge distillation (Hinton et al.): train a student to match a teacher's softened outputs.

Used by ``edgecv rewrite --finetune`` to win back accuracy a lossy rewrite cost.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from edgecv.config.schema import OptimizerConfig, OptimizerName, ScheduleConfig, TrainConfig
from edgecv.errors import ConfigError, DataError
from edgecv.train.tasks import ClassifyTask, SegmentTask, Task, primary_output
from edgecv.train.trainer import Trainer, TrainResult


def _infer_size(ds: Any) -> tuple[int, int]:
    img = ds[0][0]
    return int(img.shape[0]), int(img.shape[1])


def open_distill_data(
    data: str | Path, task: str | None, image_size: tuple[int, int] | None, mean: Any, std: Any, seed: int
) -> tuple[Any, Any, str | None]:
    """(train set, val set or None, task or None) from a folder: a synth root with train/val, an ImageFolder tree,
    an images/+masks/ folder, or plain images (unlabelled: KD loss only)."""
    from edgecv.data.datasets import (
        ImageFolderDataset,
        ImageListDataset,
        ImageTransform,
        SegmentationFolder,
        TransformedDataset,
        open_dataset,
    )

    p = Path(data)
    if not p.is_dir():
        raise DataError(f"{p}: distillation data folder not found")
    train_raw: Any
    val_raw: Any = None
    if task is None:
        if (p / "images").is_dir() and (p / "masks").is_dir() or (p / "train" / "masks").is_dir():
            task = "segment"
        elif any(d.is_dir() for d in p.iterdir()) and not (p / "images").is_dir():
            task = "classify"
    try:
        if task in ("classify", "segment"):
            train_raw = open_dataset(task, p, split="train")
            if (p / "val").is_dir():
                val_raw = open_dataset(task, p, split="val", classes=train_raw.classes)
        else:
            raise DataError("unlabelled")
    except DataError:
        train_raw, val_raw = ImageListDataset(p), None
    assert isinstance(train_raw, (ImageFolderDataset, SegmentationFolder, ImageListDataset))
    hw = image_size or _infer_size(train_raw)
    tf_task = task if train_raw.labeled and task is not None else "classify"
    tf = ImageTransform(hw, mean, std, "RGB", tf_task if train_raw.labeled else "classify", None)
    train = TransformedDataset(train_raw, tf, seed=seed, train=True)
    val = TransformedDataset(val_raw, tf, seed=seed) if val_raw is not None else None
    return train, val, task if train_raw.labeled else None


def distill(
    student: nn.Module,
    teacher: nn.Module,
    data: str | Path | Any,
    epochs: int = 1,
    lr: float = 1e-3,
    temperature: float = 4.0,
    alpha: float = 0.5,
    *,
    task: str | Task | None = None,
    val_data: Any = None,
    batch_size: int = 32,
    optimizer: str = "adamw",
    weight_decay: float = 0.0,
    image_size: tuple[int, int] | None = None,
    mean: Any = (0.485, 0.456, 0.406),
    std: Any = (0.229, 0.224, 0.225),
    seed: int = 0,
    out_dir: str | Path | None = None,
    device: str | None = None,
    progress: bool = False,
    num_classes: int | None = None,
) -> tuple[nn.Module, TrainResult]:
    """Fine-tune ``student`` towards ``teacher``: ``alpha · T² · KL(teacher‖student) + (1 − alpha) · task loss``.

    The KL is over the class dimension of temperature-softened logits (per pixel for segmentation). Where the data
    has no labels (a folder of plain images), the KD term is used alone.

    Args:
        student: model to train (modified in place and returned).
        teacher: frozen reference model with the same output layout.
        data: a folder (synth root, ImageFolder tree, images/+masks/ folder, or plain images) or a Dataset
            yielding ``(input tensor, target)``.
        epochs: passes over the data.
        lr: learning rate (cosine schedule).
        temperature: softening temperature T.
        alpha: weight of the KD term (1 = KD only).
        task: "classify", "segment" or a Task; inferred from the folder or the output shape when None.
        val_data: Dataset for the metric when ``data`` is a Dataset.
        batch_size: batch size.
        optimizer: optimizer name (see :func:`edgecv.train.optim.build_optimizer`).
        image_size: (H, W) to resize to; default the size of the first image.
        mean: normalisation mean (RGB, 0..1 scale) used when reading a folder.
        std: normalisation std.
        seed: makes the run reproducible on CPU.
        out_dir: where to write checkpoints and metrics (None: nothing written).
        device: torch device.
        progress: show the progress bar.
        num_classes: classes of the output (default: from the data or the teacher's output).

    Returns:
        (the student, the :class:`TrainResult`).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"alpha: expected a value in [0, 1], found {alpha}")
    if temperature <= 0:
        raise ConfigError(f"temperature: expected a positive value, found {temperature}")
    if isinstance(data, (str, Path)):
        task_name = task if isinstance(task, str) else None
        train, val, found = open_distill_data(data, task_name, image_size, mean, std, seed)
        task_name = task_name or found
    else:
        train, val, task_name = data, val_data, task if isinstance(task, str) else None
    if isinstance(task, Task):
        task_obj = task
    else:
        if task_name is None:  # unlabelled: look at the teacher's output rank
            x0 = train[0][0].unsqueeze(0)
            teacher.eval()
            with torch.no_grad():
                out = primary_output(teacher(x0.to(next(teacher.parameters()).device)))
            task_name = "segment" if out.ndim == 4 else "classify"
            num_classes = num_classes or int(out.shape[1])
        n = num_classes or len(getattr(train, "classes", []) or [])
        task_obj = SegmentTask(n) if task_name == "segment" else ClassifyTask(n)
    cfg = TrainConfig(
        epochs=epochs,
        seed=seed,
        amp=True,
        # cast only for mypy: pydantic validates the name at runtime
        optimizer=OptimizerConfig(name=cast(OptimizerName, optimizer), lr=lr, weight_decay=weight_decay),
        schedule=ScheduleConfig(name="cosine"),
    )
    torch.manual_seed(seed)
    trainer = Trainer(
        student,
        task_obj,
        train,
        val,
        cfg,
        out_dir,
        batch_size=batch_size,
        device=device,
        teacher=teacher,
        temperature=temperature,
        alpha=alpha,
        progress=progress,
    )
    result = trainer.fit()
    student = trainer.model
    student.eval()
    return student, result
