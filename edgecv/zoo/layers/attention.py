"""Attention blocks for NCHW maps, built by name through one factory (timm ``layers/create_attn.py``).

Every block maps ``[N, C, H, W] → [N, C, H, W]`` so any backbone can insert one after a conv block
(``create_attn("se", C)``). All of them export with torch.onnx (TorchScript and dynamo) and run on ONNX Runtime
and OpenVINO: pooling is written as reductions (``mean``/``amax``), attention as plain matmul + softmax, and
shapes are taken from the input, never from data.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from edgecv.errors import ConfigError
from edgecv.registry import Registry
from edgecv.zoo.layers.act import create_act
from edgecv.zoo.layers.conv import ConvNormAct
from edgecv.zoo.layers.norm import create_norm


def _reduced(channels: int, reduction: float, min_channels: int) -> int:
    return max(int(channels / reduction), min_channels)


class SqueezeExcite(nn.Module):
    """Squeeze-and-Excitation (Hu et al.): ``x * sigmoid(W2 act(W1 mean_hw(x) + b1) + b2)``."""

    def __init__(
        self, channels: int, reduction: float = 16, min_channels: int = 8, act: str = "relu", gate: str = "sigmoid"
    ) -> None:
        super().__init__()
        hidden = _reduced(channels, reduction, min_channels)
        self.fc1 = nn.Conv2d(channels, hidden, 1, bias=True)
        self.act = create_act(act)
        self.fc2 = nn.Conv2d(hidden, channels, 1, bias=True)
        self.gate = create_act(gate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)  # squeeze
        s = self.fc2(self.act(self.fc1(s)))  # excitation
        return x * self.gate(s)  # scale


def eca_kernel_size(channels: int, gamma: float = 2.0, b: float = 1.0) -> int:
    """ECA-Net's adaptive kernel size: ``k = |log2(C) / gamma + b / gamma|_odd`` (the nearest odd integer at or
    above the truncated value; Wang et al. 2020, eq. 12, and their reference code)."""
    t = int(abs((math.log2(channels) + b) / gamma))
    return t if t % 2 else t + 1


class EfficientChannelAttention(nn.Module):
    """ECA-Net (Wang et al.): ``x * sigmoid(conv1d_k(mean_hw(x)))`` — a k-tap 1-D convolution across the pooled
    channel descriptor (local cross-channel interaction, no dimensionality reduction), ``k`` from the channel count
    (:func:`eca_kernel_size`) unless given."""

    def __init__(
        self, channels: int, kernel_size: int | None = None, gamma: float = 2.0, b: float = 1.0, gate: str = "sigmoid"
    ) -> None:
        super().__init__()
        k = kernel_size if kernel_size is not None else eca_kernel_size(channels, gamma, b)
        if k < 1 or k % 2 == 0:
            raise ConfigError(f"eca kernel_size: expected an odd integer >= 1, found {k}")
        self.kernel_size = k
        self.conv = nn.Conv1d(1, 1, k, padding=k // 2, bias=False)
        self.gate = create_act(gate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3)).unsqueeze(1)  # [N, 1, C]: the channel descriptor as a 1-channel sequence
        a = self.gate(self.conv(s)).transpose(1, 2).unsqueeze(-1)  # [N, C, 1, 1]
        return x * a


class SelectiveKernel(nn.Module):
    """Selective Kernel (Li et al.): split into a 3×3 and a "5×5" branch (a 3×3 with dilation 2), fuse by sum and
    global pooling, then select per channel with a softmax across the branches."""

    def __init__(
        self,
        channels: int,
        reduction: float = 16,
        min_channels: int = 32,
        groups: int = 1,
        norm: str = "bn",
        act: str = "relu",
    ) -> None:
        super().__init__()
        if channels % groups:
            raise ConfigError(f"sk groups: expected a divisor of channels={channels}, got {groups}")
        self.branches = nn.ModuleList(
            [
                ConvNormAct(channels, channels, 3, dilation=1, groups=groups, norm=norm, act=act),
                ConvNormAct(channels, channels, 3, dilation=2, groups=groups, norm=norm, act=act),
            ]
        )
        hidden = _reduced(channels, reduction, min_channels)
        # no norm on the 1×1 vector (a BN over [N, d, 1, 1] fails at batch 1 in training)
        self.fc = nn.Sequential(nn.Conv2d(channels, hidden, 1), create_act(act))
        self.select = nn.Conv2d(hidden, channels * len(self.branches), 1)
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = torch.stack([b(x) for b in self.branches], 1)  # [N, B, C, H, W]
        u = feats.sum(1)  # fuse
        z = self.fc(u.mean((2, 3), keepdim=True))
        a = self.select(z).reshape(x.shape[0], len(self.branches), self.channels, 1, 1)
        a = torch.softmax(a, 1)  # select: softmax across branches
        return (feats * a).sum(1)


class ChannelGate(nn.Module):
    """CBAM channel attention: shared MLP on avg- and max-pooled vectors, summed, sigmoid."""

    def __init__(self, channels: int, reduction: float = 16, min_channels: int = 8, act: str = "relu") -> None:
        super().__init__()
        hidden = _reduced(channels, reduction, min_channels)
        self.mlp = nn.Sequential(nn.Conv2d(channels, hidden, 1), create_act(act), nn.Conv2d(hidden, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.mlp(x.mean((2, 3), keepdim=True)) + self.mlp(x.amax((2, 3), keepdim=True))
        return x * torch.sigmoid(a)


class SpatialGate(nn.Module):
    """CBAM spatial attention: [mean over C, max over C] → k×k conv → sigmoid."""

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.norm = nn.BatchNorm2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1)
        return x * torch.sigmoid(self.norm(self.conv(s)))


class CBAM(nn.Module):
    """Convolutional Block Attention Module (Woo et al.): channel attention, then spatial attention."""

    def __init__(
        self, channels: int, reduction: float = 16, min_channels: int = 8, kernel_size: int = 7, act: str = "relu"
    ) -> None:
        super().__init__()
        self.channel = ChannelGate(channels, reduction, min_channels, act)
        self.spatial = SpatialGate(kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spatial(self.channel(x))


class PositionAttention(nn.Module):
    """DANet position attention module: ``x + gamma * V softmax(Q^T K)^T`` over all H·W positions.

    ``gamma`` starts at ``gamma_init`` (0 in the paper, so the block starts as the identity).
    """

    def __init__(self, channels: int, reduction: int = 8, gamma_init: float = 0.0) -> None:
        super().__init__()
        qk = max(channels // reduction, 1)
        self.query = nn.Conv2d(channels, qk, 1)
        self.key = nn.Conv2d(channels, qk, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.full((1,), float(gamma_init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        q = self.query(x).flatten(2).transpose(1, 2)  # [N, HW, C']
        k = self.key(x).flatten(2)  # [N, C', HW]
        attn = torch.softmax(torch.bmm(q, k), -1)  # [N, HW(query), HW(key)]
        v = self.value(x).flatten(2)  # [N, C, HW]
        out = torch.bmm(v, attn.transpose(1, 2)).reshape(n, c, h, w)
        return x + self.gamma * out


class ChannelAttention(nn.Module):
    """DANet channel attention module: ``x + gamma * softmax(max(E) - E) X`` with ``E = X X^T`` over channels."""

    def __init__(self, channels: int, gamma_init: float = 0.0) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((1,), float(gamma_init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        f = x.flatten(2)  # [N, C, HW]
        energy = torch.bmm(f, f.transpose(1, 2))  # [N, C, C]
        # the reference implementation subtracts from the row max (a "max − E" softmax, i.e. favours dissimilar)
        energy = energy.amax(-1, keepdim=True) - energy
        attn = torch.softmax(energy, -1)
        out = torch.bmm(attn, f).reshape(n, c, h, w)
        return x + self.gamma * out


class DualAttention(nn.Module):
    """DANet dual attention: position and channel attention on the same input, outputs summed
    (``pam(x) + cam(x) - x``, so that with both gammas at 0 the block is the identity)."""

    def __init__(self, channels: int, reduction: int = 8, gamma_init: float = 0.0) -> None:
        super().__init__()
        self.pam = PositionAttention(channels, reduction, gamma_init)
        self.cam = ChannelAttention(channels, gamma_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pam(x) + self.cam(x) - x


class NonLocal(nn.Module):
    """Non-local block, embedded Gaussian (Wang et al.): ``x + BN(W_z softmax(theta^T phi) g)``.

    The output BN's weight starts at 0 when ``zero_init`` (the paper's choice: the block starts as the identity).
    """

    def __init__(self, channels: int, reduction: int = 2, zero_init: bool = True, norm: str = "bn") -> None:
        super().__init__()
        inter = max(channels // reduction, 1)
        self.theta = nn.Conv2d(channels, inter, 1)
        self.phi = nn.Conv2d(channels, inter, 1)
        self.g = nn.Conv2d(channels, inter, 1)
        self.out = nn.Conv2d(inter, channels, 1, bias=False)
        self.norm = create_norm(norm, channels)
        weight = getattr(self.norm, "weight", None)
        if zero_init and isinstance(weight, torch.Tensor):
            nn.init.zeros_(weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _c, h, w = x.shape
        t = self.theta(x).flatten(2).transpose(1, 2)  # [N, HW, C']
        p = self.phi(x).flatten(2)  # [N, C', HW]
        g = self.g(x).flatten(2).transpose(1, 2)  # [N, HW, C']
        f = torch.softmax(torch.bmm(t, p), -1)  # embedded Gaussian: softmax(theta_i . phi_j) over j
        y = torch.bmm(f, g).transpose(1, 2).reshape(n, -1, h, w)
        return x + self.norm(self.out(y))


class MultiHeadSelfAttention(nn.Module):
    """Multi-head self-attention over a token sequence ``[N, T, D]`` (explicit matmuls, so it exports anywhere)."""

    def __init__(self, dim: int, num_heads: int = 4, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ConfigError(f"attention heads: expected a divisor of dim={dim}, got {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        # chunk, then a 4-D reshape per tensor: timm's single 5-D reshape(N, T, 3, heads, hd).permute(2, 0, 3, 1, 4)
        # is miscompiled by OpenVINO 2026.4 (CPU) when T == heads (max abs error ~0.2; ORT is exact), and this
        # form is equivalent (tests/test_zoo_layers.py checks T == heads on OpenVINO)
        q, k, v = (
            a.reshape(n, t, self.num_heads, self.head_dim).transpose(1, 2) for a in self.qkv(x).chunk(3, -1)
        )  # [N, heads, T, hd]
        attn = torch.softmax(torch.matmul(q * self.scale, k.transpose(-2, -1)), -1)
        y = torch.matmul(attn, v).transpose(1, 2).reshape(n, t, d)
        return self.proj(y)


class MultiHeadCrossAttention(nn.Module):
    """Multi-head attention of queries ``[N, Tq, D]`` over a memory ``[N, Tk, D]`` (a transformer decoder's
    encoder–decoder, or "context", attention); ``key`` and ``value`` may differ (DETR adds positions to keys only).
    Explicit matmuls + softmax, so it exports anywhere."""

    def __init__(self, dim: int, num_heads: int = 4, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ConfigError(f"attention heads: expected a divisor of dim={dim}, got {num_heads}")
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.scale = self.head_dim**-0.5
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.k = nn.Linear(dim, dim, bias=qkv_bias)
        self.v = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        return t.reshape(t.shape[0], t.shape[1], self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor | None = None) -> torch.Tensor:
        n, tq, d = query.shape
        q, k = self._heads(self.q(query)), self._heads(self.k(key))
        v = self._heads(self.v(key if value is None else value))
        attn = torch.softmax(torch.matmul(q * self.scale, k.transpose(-2, -1)), -1)  # [N, heads, Tq, Tk]
        return self.proj(torch.matmul(attn, v).transpose(1, 2).reshape(n, tq, d))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, act: str = "gelu") -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = create_act(act)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class TransformerBlock(nn.Module):
    """Pre-norm transformer encoder block on tokens ``[N, T, D]``: ``x + MHSA(LN x)``, then ``x + MLP(LN x)``."""

    def __init__(
        self,
        dim: int,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        act: str = "gelu",
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = MultiHeadSelfAttention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def _to_tokens(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(2).transpose(1, 2)  # [N, C, H, W] → [N, HW, C]


def _to_map(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return t.transpose(1, 2).reshape(like.shape)


class MHSA2d(nn.Module):
    """Multi-head self-attention on a 2D map (H·W positions as tokens), pre-norm, residual (BoTNet-style)."""

    def __init__(self, channels: int, num_heads: int = 4, qkv_bias: bool = True) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=1e-6)
        self.attn = MultiHeadSelfAttention(channels, _heads_for(channels, num_heads), qkv_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = _to_tokens(x)
        return _to_map(t + self.attn(self.norm(t)), x)


class TransformerBlock2d(nn.Module):
    """A transformer encoder block on a 2D map: flatten H·W to tokens, run the block, fold back."""

    def __init__(self, channels: int, num_heads: int = 4, mlp_ratio: float = 2.0, act: str = "gelu") -> None:
        super().__init__()
        self.block = TransformerBlock(channels, _heads_for(channels, num_heads), mlp_ratio, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _to_map(self.block(_to_tokens(x)), x)


def _heads_for(channels: int, num_heads: int) -> int:
    # in a backbone the stage widths vary; use the largest head count ≤ num_heads that divides C
    h = max(1, min(num_heads, channels))
    while channels % h:
        h -= 1
    return h


ATTNS: Registry[Callable[..., nn.Module]] = Registry("attention")
ATTNS.register("se", SqueezeExcite)
ATTNS.register("eca", EfficientChannelAttention)
ATTNS.register("sk", SelectiveKernel)
ATTNS.register("cbam", CBAM)
ATTNS.register("danet_pam", PositionAttention)
ATTNS.register("danet_cam", ChannelAttention)
ATTNS.register("danet", DualAttention)
ATTNS.register("nonlocal", NonLocal)
ATTNS.register("mhsa", MHSA2d)
ATTNS.register("transformer", TransformerBlock2d)


def create_attn(name: str | None, channels: int, **kwargs: Any) -> nn.Module:
    """Build an attention block for a ``channels``-channel NCHW map, by name.

    Args:
        name: ``se``, ``eca``, ``sk``, ``cbam``, ``danet_pam``, ``danet_cam``, ``danet`` (dual), ``nonlocal``, ``mhsa``,
            ``transformer``; ``None`` or ``"none"`` gives :class:`torch.nn.Identity`.
        channels: C of the input map (the output has the same shape).
        **kwargs: block options (``reduction``, ``num_heads``, ``gamma_init`` …).

    Raises:
        UnknownNameError: unknown name (the message lists the choices).
        ConfigError: options that do not fit the block.
    """
    if name is None or name.lower() == "none":
        return nn.Identity()
    fn = ATTNS.get(name.lower())
    try:
        return fn(channels, **kwargs)
    except TypeError as exc:
        raise ConfigError(f"attention '{name}': bad arguments {sorted(kwargs)} ({exc})") from exc
