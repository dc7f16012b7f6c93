"""UNet (Ronneberger et al.) for semantic segmentation: an encoder of double-conv stages with 2×2 max-pool,
a bottleneck (optionally dilated, to widen the receptive field without another down-sampling), a decoder that
up-samples (2×2 transposed conv, or bilinear resize + 1×1 conv), concatenates the skip and double-convs.
Output: per-pixel logits ``[N, num_classes, H, W]``; H and W must be divisible by ``2 ** depth``.

``conv="dw_separable"`` swaps every 3×3 conv for a depthwise-separable one (the ``unet_dw`` variants).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from edgecv.errors import ConfigError
from edgecv.zoo.layers import ConvNormAct, DepthwiseSeparableConv, create_attn, init_weights
from edgecv.zoo.registry import build_variant, register_model

_CONVS = ("standard", "dw_separable")


class DoubleConv(nn.Module):
    """Two 3×3 conv-norm-act (or depthwise-separable) layers, with the given dilations."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        conv: str = "standard",
        norm: str = "bn",
        act: str = "relu",
        dilations: tuple[int, int] = (1, 1),
    ) -> None:
        super().__init__()
        if conv == "dw_separable":
            self.conv1: nn.Module = DepthwiseSeparableConv(in_ch, out_ch, 3, dilation=dilations[0], norm=norm, act=act)
            self.conv2: nn.Module = DepthwiseSeparableConv(out_ch, out_ch, 3, dilation=dilations[1], norm=norm, act=act)
        else:
            self.conv1 = ConvNormAct(in_ch, out_ch, 3, dilation=dilations[0], norm=norm, act=act)
            self.conv2 = ConvNormAct(out_ch, out_ch, 3, dilation=dilations[1], norm=norm, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


class Up(nn.Module):
    """×2 up-sampling that halves the channels: transposed 2×2 conv, or bilinear resize then 1×1 conv."""

    def __init__(self, in_ch: int, out_ch: int, mode: str = "transpose") -> None:
        super().__init__()
        if mode not in ("transpose", "bilinear"):
            raise ConfigError(f"unet up: expected 'transpose' or 'bilinear', got '{mode}'")
        self.mode = mode
        self.proj: nn.Module = (
            nn.ConvTranspose2d(in_ch, out_ch, 2, stride=2) if mode == "transpose" else nn.Conv2d(in_ch, out_ch, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "bilinear":
            # a fixed scale factor (not a size from another tensor) exports as one static Resize
            x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        return self.proj(x)


class UNet(nn.Module):
    """UNet with ``depth`` down-samplings; stage widths ``base * 2**i``."""

    def __init__(
        self,
        num_classes: int = 21,
        in_chans: int = 3,
        base: int = 64,
        depth: int = 4,
        conv: str = "standard",
        norm: str = "bn",
        act: str = "relu",
        up: str = "transpose",
        dilated_bottleneck: bool = False,
        attn: str | None = None,
        attn_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if conv not in _CONVS:
            raise ConfigError(f"unet conv: expected one of {', '.join(_CONVS)}, got '{conv}'")
        if depth < 1:
            raise ConfigError(f"unet depth: expected >= 1, got {depth}")
        self.depth = depth
        widths = [base * 2**i for i in range(depth + 1)]
        self.encoders = nn.ModuleList()
        ch = in_chans
        for w in widths[:-1]:
            self.encoders.append(DoubleConv(ch, w, conv, norm, act))
            ch = w
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = DoubleConv(
            ch, widths[-1], conv, norm, act, dilations=(2, 4) if dilated_bottleneck else (1, 1)
        )
        # attention (if any) on the coarsest map, where global context is cheapest
        self.attn = create_attn(attn, widths[-1], **(attn_kwargs or {}))
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        ch = widths[-1]
        for w in reversed(widths[:-1]):
            self.ups.append(Up(ch, w, up))
            self.decoders.append(DoubleConv(2 * w, w, conv, norm, act))
            ch = w
        self.head = nn.Conv2d(ch, num_classes, 1)
        init_weights(self, "kaiming_normal", mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for enc in self.encoders:
            x = enc(x)
            skips.append(x)
            x = self.pool(x)
        x = self.attn(self.bottleneck(x))
        for up, dec, skip in zip(self.ups, self.decoders, reversed(skips)):
            x = dec(torch.cat([up(x), skip], 1))
        return self.head(x)


def _create(variant: str, arch: dict[str, Any], **kwargs: Any) -> UNet:
    return build_variant(variant, UNet, arch, **kwargs)


_SEG: dict[str, Any] = {"task": "segment", "family": "unet", "input_size": (3, 256, 256), "num_classes": 21}
_SEG_TINY: dict[str, Any] = {
    "task": "segment",
    "family": "unet",
    "input_size": (3, 64, 64),
    "num_classes": 4,
    "tiny": True,
}
_ARCH_TINY: dict[str, Any] = {"base": 8, "depth": 3, "num_classes": 4}


@register_model(**_SEG)
def unet(**kwargs: Any) -> UNet:
    """UNet, base width 64, 4 down-samplings, transposed-conv up-sampling, 21 classes at 3×256×256."""
    return _create("unet", {}, **kwargs)


@register_model(**_SEG)
def unet_dw(**kwargs: Any) -> UNet:
    """UNet with depthwise-separable 3×3 convs throughout."""
    return _create("unet_dw", {"conv": "dw_separable"}, **kwargs)


@register_model(**_SEG_TINY)
def unet_tiny(**kwargs: Any) -> UNet:
    """Test variant: base 8, 3 down-samplings, 3×64×64 input, 4 classes."""
    return _create("unet_tiny", _ARCH_TINY, **kwargs)


@register_model(**_SEG_TINY)
def unet_dw_tiny(**kwargs: Any) -> UNet:
    """Test variant: unet_tiny with depthwise-separable convs."""
    return _create("unet_dw_tiny", {**_ARCH_TINY, "conv": "dw_separable"}, **kwargs)


@register_model(**_SEG_TINY)
def unet_tiny_dilated(**kwargs: Any) -> UNet:
    """Test variant: unet_tiny with a dilated (2, 4) bottleneck and bilinear up-sampling."""
    return _create("unet_tiny_dilated", {**_ARCH_TINY, "dilated_bottleneck": True, "up": "bilinear"}, **kwargs)
