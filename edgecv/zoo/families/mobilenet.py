"""MobileNetV1 (depthwise-separable convs, Howard et al. 2017) and MobileNetV2 (inverted residuals with linear
bottlenecks, Sandler et al. 2018). V2 follows torchvision's layout (3,504,872 parameters at 1000 classes, width 1.0).
Both take a width multiplier, a norm by name, an optional attention block per block, and ``head="gdc"``: a Global
Depthwise Convolution over the final map in place of global average pooling (MobileFaceNet), which needs the input
side (``input_size``) to size its kernel.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from edgecv.errors import ConfigError
from edgecv.zoo.layers import ConvNormAct, DepthwiseSeparableConv, GlobalDepthwiseConv, create_attn, init_weights
from edgecv.zoo.registry import build_variant, register_model


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round channels to a multiple of ``divisor``, never going more than 10% below ``v`` (torchvision/TF)."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def _classifier_init(model: nn.Module) -> None:
    # torchvision's MobileNet init: Kaiming fan_out convs, N(0, 0.01) linear, zero biases
    init_weights(model, "kaiming_normal", mode="fan_out")
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


HEADS = ("gap", "gdc")


class GlobalAvgPool(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3))


def final_map_size(input_size: int, num_stride2: int = 5) -> int:
    """Side of the stride-32 map: each 3×3/stride-2 conv with padding 1 maps n to ceil(n / 2)."""
    n = input_size
    for _ in range(num_stride2):
        n = (n + 1) // 2
    return n


def make_pool(head: str, channels: int, input_size: int, norm: str) -> nn.Module:
    """The global pooling before the classifier: ``gap`` (mean over H×W) or ``gdc`` (:class:`GlobalDepthwiseConv`
    sized to the final map of an ``input_size`` input)."""
    if head == "gap":
        return GlobalAvgPool()
    if head == "gdc":
        return GlobalDepthwiseConv(channels, final_map_size(input_size), norm=norm)
    raise ConfigError(f"mobilenet head: expected one of {', '.join(HEADS)}, found '{head}'")


# (out channels, stride) of the 13 depthwise-separable blocks
_V1_CFG = [
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (1024, 2),
    (1024, 1),
]


class MobileNetV1(nn.Module):
    """MobileNetV1: 3×3 stem, 13 depthwise-separable blocks, global pool, linear classifier."""

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        width_mult: float = 1.0,
        norm: str = "bn",
        act: str = "relu",
        attn: str | None = None,
        attn_kwargs: dict[str, Any] | None = None,
        dropout: float = 0.0,
        head: str = "gap",
        input_size: int = 224,
    ) -> None:
        super().__init__()
        if width_mult <= 0:
            raise ConfigError(f"mobilenet_v1 width_mult: expected > 0, got {width_mult}")
        ch = make_divisible(32 * width_mult)
        layers: list[nn.Module] = [ConvNormAct(in_chans, ch, 3, 2, norm=norm, act=act)]
        for c, s in _V1_CFG:
            out = make_divisible(c * width_mult)
            layers.append(DepthwiseSeparableConv(ch, out, 3, s, norm=norm, act=act))
            if attn:
                layers.append(create_attn(attn, out, **(attn_kwargs or {})))
            ch = out
        self.features = nn.Sequential(*layers)
        self.num_features = ch
        self.pool = make_pool(head, ch, input_size, norm)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(ch, num_classes))
        _classifier_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)))


class InvertedResidual(nn.Module):
    """Expand 1×1 (ReLU6) → depthwise 3×3 (ReLU6) → [attention] → project 1×1, linear (no activation);
    residual when stride 1 and channels match."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        stride: int,
        expand_ratio: float,
        norm: str = "bn",
        act: str = "relu6",
        attn: str | None = None,
        attn_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        hidden = int(round(in_ch * expand_ratio))
        self.use_res = stride == 1 and in_ch == out_ch
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvNormAct(in_ch, hidden, 1, norm=norm, act=act))
        layers.append(ConvNormAct(hidden, hidden, 3, stride, groups=hidden, norm=norm, act=act))
        if attn:
            layers.append(create_attn(attn, hidden, **(attn_kwargs or {})))
        layers.append(ConvNormAct(hidden, out_ch, 1, norm=norm, act=None))  # linear bottleneck
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return x + y if self.use_res else y


# t (expansion), c (channels), n (repeats), s (first stride)
_V2_CFG = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


class MobileNetV2(nn.Module):
    """MobileNetV2 (torchvision layout): stem, 17 inverted residuals, 1×1 conv to 1280, pool, dropout, linear."""

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        width_mult: float = 1.0,
        norm: str = "bn",
        act: str = "relu6",
        attn: str | None = None,
        attn_kwargs: dict[str, Any] | None = None,
        dropout: float = 0.2,
        last_channel: int = 1280,
        head: str = "gap",
        input_size: int = 224,
    ) -> None:
        super().__init__()
        if width_mult <= 0:
            raise ConfigError(f"mobilenet_v2 width_mult: expected > 0, got {width_mult}")
        ch = make_divisible(32 * width_mult)
        last = make_divisible(last_channel * max(1.0, width_mult))
        layers: list[nn.Module] = [ConvNormAct(in_chans, ch, 3, 2, norm=norm, act=act)]
        for t, c, n, s in _V2_CFG:
            out = make_divisible(c * width_mult)
            for i in range(n):
                layers.append(InvertedResidual(ch, out, s if i == 0 else 1, t, norm, act, attn, attn_kwargs))
                ch = out
        layers.append(ConvNormAct(ch, last, 1, norm=norm, act=act))
        self.features = nn.Sequential(*layers)
        self.num_features = last
        self.pool = make_pool(head, last, input_size, norm)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(last, num_classes))
        _classifier_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)))


_create = build_variant  # caller kwargs override the variant's arch; bad arguments are one line


_TINY: dict[str, Any] = {"input_size": (3, 64, 64), "num_classes": 10, "tiny": True}


@register_model(family="mobilenet")
def mobilenet_v1(**kwargs: Any) -> MobileNetV1:
    """MobileNetV1 1.0 (4,231,976 parameters at 1000 classes)."""
    return _create("mobilenet_v1", MobileNetV1, {}, **kwargs)


@register_model(family="mobilenet", **_TINY)
def mobilenet_v1_tiny(**kwargs: Any) -> MobileNetV1:
    """Test variant: MobileNetV1 at width 0.25, 3×64×64 input, 10 classes."""
    return _create("mobilenet_v1_tiny", MobileNetV1, {"width_mult": 0.25, "num_classes": 10}, **kwargs)


@register_model(family="mobilenet")
def mobilenet_v2(**kwargs: Any) -> MobileNetV2:
    """MobileNetV2 1.0 (torchvision layout, 3,504,872 parameters at 1000 classes)."""
    return _create("mobilenet_v2", MobileNetV2, {}, **kwargs)


@register_model(family="mobilenet", **_TINY)
def mobilenet_v2_tiny(**kwargs: Any) -> MobileNetV2:
    """Test variant: MobileNetV2 at width 0.25 with a 256-channel head, 3×64×64 input, 10 classes."""
    return _create(
        "mobilenet_v2_tiny", MobileNetV2, {"width_mult": 0.25, "last_channel": 256, "num_classes": 10}, **kwargs
    )


@register_model(family="mobilenet", **_TINY)
def mobilenet_v2_tiny_se(**kwargs: Any) -> MobileNetV2:
    """Test variant: mobilenet_v2_tiny with SE on the expanded features (MobileNetV3-style placement)."""
    return _create(
        "mobilenet_v2_tiny_se",
        MobileNetV2,
        {"width_mult": 0.25, "last_channel": 256, "num_classes": 10, "attn": "se", "attn_kwargs": {"reduction": 4}},
        **kwargs,
    )


@register_model(family="mobilenet")
def mobilenet_v2_gdc(**kwargs: Any) -> MobileNetV2:
    """MobileNetV2 1.0 with a 7×7 Global Depthwise Convolution head (MobileFaceNet) instead of average pooling."""
    return _create("mobilenet_v2_gdc", MobileNetV2, {"head": "gdc", "input_size": 224}, **kwargs)


@register_model(family="mobilenet", **_TINY)
def mobilenet_v2_tiny_gdc(**kwargs: Any) -> MobileNetV2:
    """Test variant: mobilenet_v2_tiny with a GDC head (2×2 depthwise kernel over the 64 px input's final map)."""
    return _create(
        "mobilenet_v2_tiny_gdc",
        MobileNetV2,
        {"width_mult": 0.25, "last_channel": 256, "num_classes": 10, "head": "gdc", "input_size": 64},
        **kwargs,
    )
