"""Training (build tier): trainer, optimizers, schedules, tasks, distillation, DDP."""

from edgecv.train.distill import distill
from edgecv.train.optim import OPTIMIZERS, SCHEDULES, build_optimizer, build_scheduler
from edgecv.train.recipe import build_model, train_recipe
from edgecv.train.tasks import ClassifyTask, SegmentTask, Task, kd_loss, task_for
from edgecv.train.trainer import Trainer, TrainResult, load_checkpoint, save_checkpoint, seed_everything

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "ClassifyTask",
    "SegmentTask",
    "Task",
    "TrainResult",
    "Trainer",
    "build_model",
    "build_optimizer",
    "build_scheduler",
    "distill",
    "kd_loss",
    "load_checkpoint",
    "save_checkpoint",
    "seed_everything",
    "task_for",
    "train_recipe",
]
