"""Normalization layers chosen by name (``create_norm(name, C)``): bn, ln (channels-first), in, gn, switchable."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from edgecv.errors import ConfigError
from edgecv.registry import Registry


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of an NCHW map (ConvNeXt's channels-first LayerNorm).

    Each spatial position is normalized over its C values, with a per-channel affine. Written with mean/var
    reductions on dim 1 rather than a permute to NHWC, so it exports as plain ReduceMean/Sub/Mul/Div that every
    runtime fuses or runs directly.
    """

    def __init__(self, num_channels: int, eps: float = 1e-6, affine: bool = True) -> None:
        super().__init__()
        self.num_channels = num_channels
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_channels)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_channels)) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        xc = x - mean
        var = (xc * xc).mean(1, keepdim=True)
        y = xc / torch.sqrt(var + self.eps)
        if self.weight is not None and self.bias is not None:
            y = y * self.weight[:, None, None] + self.bias[:, None, None]
        return y

    def extra_repr(self) -> str:
        return f"{self.num_channels}, eps={self.eps}"


class SwitchableNorm2d(nn.Module):
    """Switchable Normalization (Luo et al., 2019): a learned softmax mix of BN, IN and LN statistics.

    Means and variances are mixed separately (``mean_weight``, ``var_weight``, softmax over [IN, LN, BN]).
    IN and LN statistics come from the current sample; the BN branch uses batch statistics in training and its own
    running statistics (updated like :class:`torch.nn.BatchNorm2d`: unbiased variance, ``momentum``) in eval.
    All variances are biased (divide by the count), as BatchNorm normalizes with, so the pure-BN mix equals BN.
    """

    running_mean: torch.Tensor
    running_var: torch.Tensor

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, affine: bool = True) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.weight = nn.Parameter(torch.ones(num_features)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_features)) if affine else None
        # order: IN, LN, BN; equal start as in the paper
        self.mean_weight = nn.Parameter(torch.ones(3))
        self.var_weight = nn.Parameter(torch.ones(3))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        mean_in = x.mean((2, 3), keepdim=True)  # [N,C,1,1]
        sq_in = (x * x).mean((2, 3), keepdim=True)
        var_in = sq_in - mean_in * mean_in
        mean_ln = mean_in.mean(1, keepdim=True)  # [N,1,1,1]
        var_ln = sq_in.mean(1, keepdim=True) - mean_ln * mean_ln
        if self.training:
            mean_bn = mean_in.mean(0, keepdim=True)  # [1,C,1,1]
            var_bn = sq_in.mean(0, keepdim=True) - mean_bn * mean_bn
            with torch.no_grad():
                count = n * h * w
                unbiased = var_bn.flatten() * (count / max(count - 1, 1))
                self.running_mean.mul_(1 - self.momentum).add_(self.momentum * mean_bn.flatten())
                self.running_var.mul_(1 - self.momentum).add_(self.momentum * unbiased)
        else:
            mean_bn = self.running_mean.view(1, c, 1, 1)
            var_bn = self.running_var.view(1, c, 1, 1)
        mw = torch.softmax(self.mean_weight, 0)
        vw = torch.softmax(self.var_weight, 0)
        mean = mw[0] * mean_in + mw[1] * mean_ln + mw[2] * mean_bn
        var = vw[0] * var_in + vw[1] * var_ln + vw[2] * var_bn
        y = (x - mean) / torch.sqrt(var + self.eps)
        if self.weight is not None and self.bias is not None:
            y = y * self.weight.view(1, c, 1, 1) + self.bias.view(1, c, 1, 1)
        return y

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"


def _bn(c: int, **kw: Any) -> nn.Module:
    return nn.BatchNorm2d(c, **kw)


def _in(c: int, affine: bool = True, **kw: Any) -> nn.Module:
    # affine by default so it is a drop-in for BN (torch's default is affine=False)
    return nn.InstanceNorm2d(c, affine=affine, **kw)


def _gn(c: int, num_groups: int = 32, **kw: Any) -> nn.Module:
    groups = min(num_groups, c)
    while c % groups:  # largest group count ≤ num_groups that divides C, so narrow tiny models still work
        groups -= 1
    return nn.GroupNorm(groups, c, **kw)


NORMS: Registry[Callable[..., nn.Module]] = Registry("norm")
NORMS.register("bn", _bn)
NORMS.register("batchnorm", _bn)
NORMS.register("ln", LayerNorm2d)
NORMS.register("layernorm", LayerNorm2d)
NORMS.register("in", _in)
NORMS.register("instancenorm", _in)
NORMS.register("gn", _gn)
NORMS.register("groupnorm", _gn)
NORMS.register("sn", SwitchableNorm2d)
NORMS.register("switchable", SwitchableNorm2d)
NORMS.register("none", lambda c, **kw: nn.Identity())


def create_norm(name: str | None, num_channels: int, **kwargs: Any) -> nn.Module:
    """Build a normalization layer for an NCHW map with ``num_channels`` channels, by name.

    Args:
        name: ``bn``, ``ln`` (LayerNorm over channels, channels-first), ``in``, ``gn`` (``num_groups=32``,
            reduced to a divisor of C), ``sn``/``switchable``, or ``none``.
        num_channels: channel count C.
        **kwargs: passed to the layer (``eps``, ``momentum``, ``num_groups`` …).

    Raises:
        UnknownNameError: the name is not registered (the message lists the choices).
        ConfigError: bad keyword arguments.
    """
    key = "none" if name is None else name.lower()
    fn = NORMS.get(key)
    try:
        return fn(num_channels, **kwargs)
    except TypeError as exc:
        raise ConfigError(f"norm '{key}': bad arguments {sorted(kwargs)} ({exc})") from exc


__all__ = ["NORMS", "LayerNorm2d", "SwitchableNorm2d", "create_norm"]
