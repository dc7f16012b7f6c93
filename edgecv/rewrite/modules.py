"""Modules the rewrite passes produce or recognise: ``ConvAct`` (fused layer + activation) and ``RepVGGBlock``.

The rewrite package is build tier: this module imports torch (classes defined at module level so rewritten
models pickle with ``torch.save``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class ConvAct(nn.Sequential):
    """``act(layer(x))`` as one module: a conv/linear (BN already folded) and its activation."""

    def __init__(self, layer: nn.Module, act: nn.Module) -> None:
        super().__init__(layer, act)


class RepVGGBlock(nn.Module):
    """RepVGG block (Ding et al. 2021): ``act(BN(conv3x3(x)) + BN(conv1x1(x)) + BN(x))``.

    Train with three branches; :meth:`reparameterize` collapses them into one 3x3 conv with bias (exact in
    eval mode). The identity branch exists only when ``in_ch == out_ch`` and ``stride == 1``.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, groups: int = 1, act: nn.Module | None = None) -> None:
        super().__init__()
        self.in_ch, self.out_ch, self.stride, self.groups = in_ch, out_ch, stride, groups
        self.conv3 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 1, stride, 0, groups=groups, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.bn_id = nn.BatchNorm2d(in_ch) if in_ch == out_ch and stride == 1 else None
        self.act = act if act is not None else nn.ReLU()
        self.reparam: nn.Conv2d | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reparam is not None:
            return self.act(self.reparam(x))
        y = self.bn3(self.conv3(x)) + self.bn1(self.conv1(x))
        if self.bn_id is not None:
            y = y + self.bn_id(x)
        return self.act(y)

    def reparameterize(self) -> None:
        """Replace the three branches by one equivalent 3x3 conv (eval-mode BN statistics)."""
        if self.reparam is not None:
            return
        branches: list[tuple[Any, Any]] = [(self.conv3, self.bn3), (self.conv1, self.bn1)]
        if self.bn_id is not None:
            branches.append((None, self.bn_id))
        self.reparam = merge_branches(branches, self.in_ch, self.out_ch, 3, self.stride, self.groups)
        del self.conv3, self.bn3, self.conv1, self.bn1, self.bn_id
        self.bn_id = None


def branch_kernel(conv: Any, bn: Any, k: int, in_ch: int, out_ch: int, groups: int) -> tuple[Any, Any]:
    """(weight padded to k x k, bias) in float64 for one branch: ``bn(conv(x))``, ``conv(x)``, ``bn(x)`` or ``x``
    (``conv is None`` means identity)."""
    import torch

    if conv is None:
        w = torch.zeros(out_ch, in_ch // groups, k, k, dtype=torch.float64)
        per = in_ch // groups
        for c in range(out_ch):
            w[c, c % per, k // 2, k // 2] = 1.0
        b = torch.zeros(out_ch, dtype=torch.float64)
    else:
        w = conv.weight.detach().double()
        pad = (k - w.shape[-1]) // 2
        w = torch.nn.functional.pad(w, [pad, pad, pad, pad])
        b = conv.bias.detach().double() if conv.bias is not None else torch.zeros(out_ch, dtype=torch.float64)
    if bn is not None:
        gamma = bn.weight.detach().double() if bn.weight is not None else torch.ones(out_ch, dtype=torch.float64)
        beta = bn.bias.detach().double() if bn.bias is not None else torch.zeros(out_ch, dtype=torch.float64)
        scale = gamma / torch.sqrt(bn.running_var.double() + bn.eps)
        w = w * scale.reshape(-1, 1, 1, 1)
        b = (b - bn.running_mean.double()) * scale + beta
    return w, b


def merge_branches(branches: list[tuple[Any, Any]], in_ch: int, out_ch: int, k: int, stride: int, groups: int) -> Any:
    """One ``Conv2d(in_ch, out_ch, k, stride, padding=k//2, groups)`` equal to the sum of the branches."""
    import torch
    from torch import nn

    ref = next(c for c, _ in branches if c is not None)
    conv = nn.Conv2d(in_ch, out_ch, k, stride, k // 2, groups=groups, bias=True)
    w = torch.zeros(out_ch, in_ch // groups, k, k, dtype=torch.float64)
    b = torch.zeros(out_ch, dtype=torch.float64)
    for c, bn in branches:
        wi, bi = branch_kernel(c, bn, k, in_ch, out_ch, groups)
        w, b = w + wi, b + bi
    conv.weight = nn.Parameter(w.to(ref.weight.dtype))
    conv.bias = nn.Parameter(b.to(ref.weight.dtype))
    return conv.to(ref.weight.device)
