"""Convolution blocks: conv-norm-act, and standard / group / depthwise / depthwise-separable / dilated convs.

``create_conv(kind, in, out, k)`` builds any of them by name so a recipe (or a rewrite pass) can pick the kind.
Padding is always ``dilation * (k - 1) // 2`` ("same" for odd k at stride 1), written as an integer so every
exporter emits a plain Conv with static pads.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from edgecv.errors import ConfigError
from edgecv.zoo.layers.act import create_act
from edgecv.zoo.layers.norm import create_norm


def same_padding(kernel_size: int, dilation: int = 1) -> int:
    """Padding that keeps H×W at stride 1 for an odd kernel (and halves it at stride 2)."""
    return dilation * (kernel_size - 1) // 2


def conv2d(
    in_ch: int,
    out_ch: int,
    kernel_size: int = 3,
    stride: int = 1,
    dilation: int = 1,
    groups: int = 1,
    bias: bool = False,
) -> nn.Conv2d:
    """A 2D convolution with "same" padding; checks that ``groups`` divides both channel counts."""
    if groups < 1 or in_ch % groups or out_ch % groups:
        raise ConfigError(f"conv groups: expected a divisor of in={in_ch} and out={out_ch}, got {groups}")
    return nn.Conv2d(
        in_ch,
        out_ch,
        kernel_size,
        stride=stride,
        padding=same_padding(kernel_size, dilation),
        dilation=dilation,
        groups=groups,
        bias=bias,
    )


class ConvNormAct(nn.Sequential):
    """Conv → norm → activation (conv-bn-act when ``norm="bn"``). The conv has no bias when a norm follows."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        norm: str | None = "bn",
        act: str | None = "relu",
        bias: bool | None = None,
    ) -> None:
        use_norm = norm not in (None, "none")
        super().__init__()
        self.conv = conv2d(
            in_ch, out_ch, kernel_size, stride, dilation, groups, bias=(not use_norm) if bias is None else bias
        )
        self.norm = create_norm(norm, out_ch)
        self.act = create_act(act)
        self.in_channels, self.out_channels = in_ch, out_ch


# the usual name
ConvBnAct = ConvNormAct


class DepthwiseSeparableConv(nn.Module):
    """Depthwise k×k conv-norm-act (groups == channels) then pointwise 1×1 conv-norm-act (MobileNetV1 block)."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        norm: str | None = "bn",
        act: str | None = "relu",
        pw_act: str | None = None,
    ) -> None:
        super().__init__()
        self.dw = ConvNormAct(in_ch, in_ch, kernel_size, stride, dilation, groups=in_ch, norm=norm, act=act)
        self.pw = ConvNormAct(in_ch, out_ch, 1, norm=norm, act=act if pw_act is None else pw_act)
        self.in_channels, self.out_channels = in_ch, out_ch

    def forward(self, x: Any) -> Any:
        return self.pw(self.dw(x))


class GlobalDepthwiseConv(nn.Module):
    """Global Depthwise Convolution (GDC, MobileFaceNet, Chen et al. 2018) in place of global average pooling: a
    depthwise conv whose kernel covers the whole ``size`` × ``size`` map (no padding) and a norm, linear (no
    activation). Unlike average pooling, every output unit weights each spatial position on its own — the centre
    of a face crop counts more than its corners. Output ``[N, C]``.
    """

    def __init__(self, channels: int, size: int | tuple[int, int], norm: str | None = "bn") -> None:
        super().__init__()
        kh, kw = (size, size) if isinstance(size, int) else size
        if kh < 1 or kw < 1:
            raise ConfigError(f"gdc size: expected the final feature-map size (>= 1), got {size}")
        self.conv = nn.Conv2d(channels, channels, (kh, kw), groups=channels, bias=False)
        self.norm = create_norm(norm, channels)
        self.size = (kh, kw)

    def forward(self, x: Any) -> Any:
        return self.norm(self.conv(x)).flatten(1)


_KINDS = ("standard", "group", "depthwise", "dw_separable", "dilated")


def create_conv(
    kind: str,
    in_ch: int,
    out_ch: int,
    kernel_size: int = 3,
    stride: int = 1,
    *,
    groups: int | None = None,
    dilation: int | None = None,
    norm: str | None = "bn",
    act: str | None = "relu",
) -> nn.Module:
    """Build a conv-norm-act block of a named kind.

    Args:
        kind: ``standard``; ``group`` (``groups``, default 2); ``depthwise`` (groups == channels, needs
            ``in_ch == out_ch`` or a multiple); ``dw_separable`` (depthwise then pointwise); ``dilated``
            (``dilation``, default 2: a 3×3 with dilation 2 sees 5×5).
        in_ch, out_ch, kernel_size, stride: as for :class:`torch.nn.Conv2d`.
        groups, dilation: override the kind's default.
        norm, act: names for :func:`create_norm` / :func:`create_act`.

    Raises:
        ConfigError: unknown kind or channel counts that do not fit the kind.
    """
    d = 1 if dilation is None else dilation
    if kind == "standard":
        return ConvNormAct(in_ch, out_ch, kernel_size, stride, d, groups or 1, norm, act)
    if kind == "group":
        return ConvNormAct(in_ch, out_ch, kernel_size, stride, d, groups or 2, norm, act)
    if kind == "depthwise":
        if out_ch % in_ch:
            raise ConfigError(f"depthwise conv: expected out channels a multiple of in={in_ch}, got {out_ch}")
        return ConvNormAct(in_ch, out_ch, kernel_size, stride, d, in_ch, norm, act)
    if kind == "dw_separable":
        return DepthwiseSeparableConv(in_ch, out_ch, kernel_size, stride, d, norm, act)
    if kind == "dilated":
        return ConvNormAct(
            in_ch, out_ch, kernel_size, stride, 2 if dilation is None else dilation, groups or 1, norm, act
        )
    raise ConfigError(f"conv kind: expected one of {', '.join(_KINDS)}, got '{kind}'")
