"""Optimizers and learning-rate schedules by name (torch.optim), built from the recipe's typed config."""

from __future__ import annotations

import math
from typing import Any, cast

import torch
from torch import nn

from edgecv.config.schema import OptimizerConfig, OptimizerName, ScheduleConfig, ScheduleName
from edgecv.errors import ConfigError

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adagrad", "adadelta", "rmsprop", "adam", "adamw")
# AdaDelta's own epsilon (Zeiler 2012 and torch): the first steps are ~sqrt(eps) * g / |g|, so the 1e-8 that suits
# Adam would make them 10x smaller; used unless the recipe sets eps
ADADELTA_EPS = 1e-6
SCHEDULES = ("none", "constant", "step", "cosine", "linear")


def _param_groups(model: nn.Module, weight_decay: float, lr: float) -> list[dict[str, Any]]:
    # no decay on biases and norm scales: decaying them only hurts (standard practice, timm param_groups_weight_decay);
    # a model's ``lr_scale`` ({parameter-name prefix: factor}) gives parts of it their own rate (DETR's backbone 0.1×)
    scales: dict[str, float] = dict(getattr(model, "lr_scale", None) or {})
    groups: dict[tuple[bool, float], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        scale = next((f for pre, f in scales.items() if name.startswith(pre)), 1.0)
        groups.setdefault((p.ndim > 1, scale), []).append(p)
    out = []
    for (decay, scale), params in sorted(groups.items(), key=lambda kv: (not kv[0][0], kv[0][1] != 1.0)):
        g: dict[str, Any] = {"params": params, "weight_decay": weight_decay if decay else 0.0}
        if scale != 1.0:
            g["lr"] = lr * scale
        out.append(g)
    return out


def build_optimizer(model: nn.Module, cfg: OptimizerConfig | dict[str, Any] | str) -> torch.optim.Optimizer:
    """A torch optimizer by name: sgd, momentum (SGD + momentum), nesterov, adagrad, adadelta, rmsprop, adam,
    adamw.

    AdaDelta (Zeiler 2012) keeps running averages ``E[g²] ← ρ E[g²] + (1-ρ) g²`` and
    ``E[Δx²] ← ρ E[Δx²] + (1-ρ) Δx²`` and steps ``Δx = -sqrt(E[Δx²] + ε) / sqrt(E[g²] + ε) · g`` (times ``lr``,
    which the paper does not have: use ``lr: 1.0`` for the paper's rule).
    """
    if isinstance(cfg, str):
        cfg = OptimizerConfig(name=cast(OptimizerName, cfg))  # pydantic validates the name
    elif isinstance(cfg, dict):
        cfg = OptimizerConfig(**cfg)
    params = _param_groups(model, cfg.weight_decay, cfg.lr)
    name = cfg.name
    if name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr)
    if name == "momentum":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum)
    if name == "nesterov":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum or 0.9, nesterov=True)
    if name == "adagrad":
        return torch.optim.Adagrad(params, lr=cfg.lr, eps=cfg.eps)
    if name == "adadelta":
        eps = cfg.eps if "eps" in cfg.model_fields_set else ADADELTA_EPS
        return torch.optim.Adadelta(params, lr=cfg.lr, rho=cfg.rho, eps=eps)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=cfg.lr, alpha=cfg.alpha, eps=cfg.eps, momentum=cfg.momentum)
    if name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
    raise ConfigError(f"train.optimizer.name: expected one of {', '.join(OPTIMIZERS)}, found '{name}'")


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: ScheduleConfig | dict[str, Any] | str, epochs: int, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """A per-iteration schedule: optional linear warm-up composed (SequentialLR) with step, cosine or linear decay.

    ``step_size`` is in epochs; ``warmup_epochs`` may be fractional. Step it once per optimizer step.
    """
    if isinstance(cfg, str):
        cfg = ScheduleConfig(name=cast(ScheduleName, cfg))  # pydantic validates the name
    elif isinstance(cfg, dict):
        cfg = ScheduleConfig(**cfg)
    sched = torch.optim.lr_scheduler
    total = max(1, epochs * steps_per_epoch)
    warm = min(total - 1, int(math.ceil(cfg.warmup_epochs * steps_per_epoch))) if cfg.warmup_epochs > 0 else 0
    rest = max(1, total - warm)
    base_lr = optimizer.param_groups[0]["lr"]
    if cfg.name in ("none", "constant"):
        main: Any = sched.ConstantLR(optimizer, factor=1.0, total_iters=0)
    elif cfg.name == "step":
        main = sched.StepLR(optimizer, step_size=max(1, cfg.step_size * steps_per_epoch), gamma=cfg.gamma)
    elif cfg.name == "cosine":
        main = sched.CosineAnnealingLR(optimizer, T_max=rest, eta_min=min(cfg.min_lr, base_lr))
    elif cfg.name == "linear":
        end = max(cfg.min_lr / base_lr, 1e-8) if base_lr > 0 else 1e-8
        main = sched.LinearLR(optimizer, start_factor=1.0, end_factor=min(end, 1.0), total_iters=rest)
    else:
        raise ConfigError(f"train.schedule.name: expected one of {', '.join(SCHEDULES)}, found '{cfg.name}'")
    if warm <= 0:
        return main
    warmup = sched.LinearLR(optimizer, start_factor=cfg.warmup_start, end_factor=1.0, total_iters=warm)
    return sched.SequentialLR(optimizer, [warmup, main], milestones=[warm])
