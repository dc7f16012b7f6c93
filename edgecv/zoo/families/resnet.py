"""ResNet (He et al.) with basic and bottleneck blocks, torchvision's layout (stride on the 3×3, "v1.5"), so
resnet18/34/50 have torchvision's parameter counts. Options: norm by name, an attention block per residual block
(after the last norm, before the add, as SE-ResNet/CBAM place it), stem width and stage widths.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from edgecv.errors import ConfigError
from edgecv.zoo.layers import ConvNormAct, create_act, create_attn, init_weights
from edgecv.zoo.registry import build_variant, register_model


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(
        self,
        in_ch: int,
        width: int,
        stride: int = 1,
        norm: str = "bn",
        act: str = "relu",
        attn: str | None = None,
        attn_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        out_ch = width * self.expansion
        self.conv1 = ConvNormAct(in_ch, width, 3, stride, norm=norm, act=act)
        self.conv2 = ConvNormAct(width, out_ch, 3, norm=norm, act=None)
        self.attn = create_attn(attn, out_ch, **(attn_kwargs or {}))
        self.downsample = _shortcut(in_ch, out_ch, stride, norm)
        self.act = create_act(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.attn(self.conv2(self.conv1(x))) + self.downsample(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(
        self,
        in_ch: int,
        width: int,
        stride: int = 1,
        norm: str = "bn",
        act: str = "relu",
        attn: str | None = None,
        attn_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        out_ch = width * self.expansion
        self.conv1 = ConvNormAct(in_ch, width, 1, norm=norm, act=act)
        self.conv2 = ConvNormAct(width, width, 3, stride, norm=norm, act=act)
        self.conv3 = ConvNormAct(width, out_ch, 1, norm=norm, act=None)
        self.attn = create_attn(attn, out_ch, **(attn_kwargs or {}))
        self.downsample = _shortcut(in_ch, out_ch, stride, norm)
        self.act = create_act(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.attn(self.conv3(self.conv2(self.conv1(x)))) + self.downsample(x))


def _shortcut(in_ch: int, out_ch: int, stride: int, norm: str) -> nn.Module:
    if stride == 1 and in_ch == out_ch:
        return nn.Identity()
    return ConvNormAct(in_ch, out_ch, 1, stride, norm=norm, act=None)


_BLOCKS: dict[str, type[BasicBlock | Bottleneck]] = {"basic": BasicBlock, "bottleneck": Bottleneck}


class ResNet(nn.Module):
    """ResNet backbone + global-average-pool + linear classifier. Output: logits ``[N, num_classes]``."""

    def __init__(
        self,
        block: str,
        layers: list[int],
        num_classes: int = 1000,
        in_chans: int = 3,
        stem_width: int = 64,
        widths: tuple[int, ...] = (64, 128, 256, 512),
        norm: str = "bn",
        act: str = "relu",
        attn: str | None = None,
        attn_kwargs: dict[str, Any] | None = None,
        init: str = "kaiming_normal",
    ) -> None:
        super().__init__()
        if block not in _BLOCKS:
            raise ConfigError(f"resnet block: expected one of {', '.join(_BLOCKS)}, got '{block}'")
        if len(layers) != len(widths):
            raise ConfigError(f"resnet: expected one width per stage ({len(layers)}), got {len(widths)}")
        blk: type[BasicBlock | Bottleneck] = _BLOCKS[block]
        self.stem = nn.Sequential(ConvNormAct(in_chans, stem_width, 7, 2, norm=norm, act=act), nn.MaxPool2d(3, 2, 1))
        stages: list[nn.Module] = []
        ch = stem_width
        for i, (n, w) in enumerate(zip(layers, widths)):
            blocks = []
            for j in range(n):
                blocks.append(blk(ch, w, 2 if (j == 0 and i > 0) else 1, norm, act, attn, attn_kwargs))
                ch = w * blk.expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.num_features = ch
        self.fc = nn.Linear(ch, num_classes)
        # torchvision: Kaiming normal, fan_out, for convs; the classifier keeps PyTorch's default init
        init_weights(self.stem, init, mode="fan_out", nonlinearity="relu")
        init_weights(self.stages, init, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.forward_features(x).mean((2, 3)))


def _create(variant: str, arch: dict[str, Any], **kwargs: Any) -> ResNet:
    return build_variant(variant, ResNet, arch, **kwargs)


_TINY: dict[str, Any] = {"input_size": (3, 64, 64), "num_classes": 10, "tiny": True}
_ARCH_TINY: dict[str, Any] = {
    "block": "basic",
    "layers": [1, 1, 1, 1],
    "stem_width": 16,
    "widths": (16, 32, 64, 128),
    "num_classes": 10,
}


@register_model(family="resnet")
def resnet18(**kwargs: Any) -> ResNet:
    """ResNet-18 (basic blocks [2, 2, 2, 2]); 11,689,512 parameters at 1000 classes."""
    return _create("resnet18", {"block": "basic", "layers": [2, 2, 2, 2]}, **kwargs)


@register_model(family="resnet")
def resnet34(**kwargs: Any) -> ResNet:
    """ResNet-34 (basic blocks [3, 4, 6, 3])."""
    return _create("resnet34", {"block": "basic", "layers": [3, 4, 6, 3]}, **kwargs)


@register_model(family="resnet")
def resnet50(**kwargs: Any) -> ResNet:
    """ResNet-50 (bottleneck blocks [3, 4, 6, 3]); 25,557,032 parameters at 1000 classes."""
    return _create("resnet50", {"block": "bottleneck", "layers": [3, 4, 6, 3]}, **kwargs)


@register_model(family="resnet")
def resnet18_se(**kwargs: Any) -> ResNet:
    """ResNet-18 with a squeeze-and-excitation block in every residual block."""
    return _create("resnet18_se", {"block": "basic", "layers": [2, 2, 2, 2], "attn": "se"}, **kwargs)


@register_model(family="resnet")
def resnet50_se(**kwargs: Any) -> ResNet:
    """SE-ResNet-50."""
    return _create("resnet50_se", {"block": "bottleneck", "layers": [3, 4, 6, 3], "attn": "se"}, **kwargs)


@register_model(family="resnet", **_TINY)
def resnet_tiny(**kwargs: Any) -> ResNet:
    """Test variant: basic blocks [1, 1, 1, 1], widths 16–128, 3×64×64 input, 10 classes."""
    return _create("resnet_tiny", _ARCH_TINY, **kwargs)


@register_model(family="resnet", **_TINY)
def resnet_tiny_bottleneck(**kwargs: Any) -> ResNet:
    """Test variant with bottleneck blocks (widths 8–64, expansion 4)."""
    return _create("resnet_tiny_bottleneck", {**_ARCH_TINY, "block": "bottleneck", "widths": (8, 16, 32, 64)}, **kwargs)


def _tiny_attn(attn: str) -> Any:
    def fn(**kwargs: Any) -> ResNet:
        return _create(f"resnet_tiny_{attn}", {**_ARCH_TINY, "attn": attn}, **kwargs)

    fn.__name__ = f"resnet_tiny_{attn}"
    fn.__doc__ = f"Test variant: resnet_tiny with '{attn}' attention in every residual block."
    return register_model(family="resnet", **_TINY)(fn)


# one tiny variant per attention block, so the registry-wide tests export every block inside a real backbone
for _attn in ("se", "eca", "sk", "cbam", "danet", "nonlocal", "mhsa", "transformer"):
    globals()[f"resnet_tiny_{_attn}"] = _tiny_attn(_attn)


@register_model(family="resnet", **_TINY)
def resnet_tiny_norms(**kwargs: Any) -> ResNet:
    """Test variant: resnet_tiny with SwitchableNorm everywhere (the norm the runtimes are least used to)."""
    return _create("resnet_tiny_norms", {**_ARCH_TINY, "norm": "sn"}, **kwargs)


__all__ = ["BasicBlock", "Bottleneck", "ResNet"]
