"""Edge variants sized to train in minutes on a laptop CPU, and the shipped default models trained from them.

* ``mobilenet_v2_edge``: a shortened MobileNetV2 (stem, 4 inverted-residual stages at width ~0.5, 1×1 head),
  3×64×64 input. About 7× fewer multiply-adds than ``mobilenet_v2_tiny`` at the same input, because it drops the
  wide late stages that a 64 px image cannot feed anyway.
* ``unet_dw_edge``: a depthwise UNet on the ``mobilenet_v2_edge`` encoder (skips at strides 1-8, depthwise-separable
  decoder), 3×64×64 input; its encoder can start from the shipped classifier.
* ``shapes_classifier`` / ``shapes_segmenter``: those two architectures with the weights shipped in
  ``edgecv/zoo/weights`` (trained by ``recipes/classifier.yaml`` / ``recipes/segmenter.yaml`` on the synthetic
  shapes data; see each ``<name>.json`` for the metric on the held-out split and how to reproduce it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgecv.errors import ConfigError, ModelSourceError
from edgecv.zoo.families.mobilenet import InvertedResidual, _classifier_init, make_divisible
from edgecv.zoo.families.unet import DoubleConv, Up
from edgecv.zoo.layers import ConvNormAct, init_weights
from edgecv.zoo.registry import build_variant, register_model

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"

# t (expansion), c (channels at width 1.0), n (repeats), s (first stride): MobileNetV2's first stages, cut at
# stride 16 (4×4 maps at 64 px), with a smaller expansion to keep the 1×1 convs cheap on CPU
_EDGE_CFG = [(1, 32, 1, 1), (4, 48, 2, 2), (4, 96, 2, 2), (4, 192, 2, 2)]

# what the synthetic generator writes (edgecv.data.synth.class_names); kept literal so building a model needs no
# OpenCV / scikit-image
_SHAPES = ("circle", "ring", "square", "rectangle", "triangle", "star", "cross", "hexagon")
SHAPES_CLASSIFY = sorted(_SHAPES)
SHAPES_SEGMENT = ["background", *_SHAPES]
SHAPES_MEAN = (0.485, 0.456, 0.406)
SHAPES_STD = (0.229, 0.224, 0.225)


class MobileNetV2Edge(nn.Module):
    """MobileNetV2 cut to four inverted-residual stages: stem s2, stages to stride 16, 1×1 head, pool, linear."""

    def __init__(
        self,
        num_classes: int = 8,
        in_chans: int = 3,
        width_mult: float = 0.5,
        head_channels: int = 256,
        norm: str = "bn",
        act: str = "relu6",
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if width_mult <= 0:
            raise ConfigError(f"mobilenet_v2_edge width_mult: expected > 0, got {width_mult}")
        ch = make_divisible(32 * width_mult)
        layers: list[nn.Module] = [ConvNormAct(in_chans, ch, 3, 2, norm=norm, act=act)]
        for t, c, n, s in _EDGE_CFG:
            out = make_divisible(c * width_mult)
            for i in range(n):
                layers.append(InvertedResidual(ch, out, s if i == 0 else 1, t, norm, act))
                ch = out
        layers.append(ConvNormAct(ch, head_channels, 1, norm=norm, act=act))
        self.features = nn.Sequential(*layers)
        self.num_features = head_channels
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(head_channels, num_classes))
        _classifier_init(self)
        # channels-last weights make oneDNN run every conv channels-last on CPU: 1.5-2x faster training here
        # (measured on 2 shared cores); state dicts and ONNX export are unaffected
        self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean((2, 3)))


class UNetDWEdge(nn.Module):
    """A depthwise UNet: the :class:`MobileNetV2Edge` feature stack as encoder (skips at strides 2, 4, 8, the
    1×1 head at stride 16 as bottleneck), a plain 3×3 conv-BN-ReLU at full resolution as the stride-1 skip, and a
    decoder of transposed-conv ×2 up-sampling + concatenation + depthwise-separable double convs.

    ``encoder`` names a shipped classifier (``shapes_classifier``) whose features initialise the encoder: per-pixel
    shape classes are learnt in minutes from shape-aware features, while from scratch a small UNet spent its first
    thousand steps at background-vs-object only (mIoU ~13%).
    """

    def __init__(
        self,
        num_classes: int = 9,
        in_chans: int = 3,
        width_mult: float = 0.5,
        head_channels: int = 256,
        stem_channels: int = 16,
        encoder: str | None = None,
        norm: str = "bn",
        act: str = "relu",
    ) -> None:
        super().__init__()
        enc = MobileNetV2Edge(
            num_classes=8, in_chans=in_chans, width_mult=width_mult, head_channels=head_channels, norm=norm
        )
        if encoder is not None:
            _load_shipped(enc, encoder)
        self.encoder = enc.features
        # feature index → skip: after the stride-2 stage, and the last block of the stride-4 and stride-8 stages
        self.skip_at = (1, 3, 5)
        skip_ch = [self.encoder[i].conv[-1].out_channels for i in self.skip_at]  # type: ignore[union-attr,index]
        self.stem = ConvNormAct(in_chans, stem_channels, 3, norm=norm, act=act)
        widths = [stem_channels, *skip_ch]  # decoder widths at strides 1, 2, 4, 8
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        ch = head_channels
        for w in reversed(widths):
            self.ups.append(Up(ch, w, "transpose"))
            self.decoders.append(DoubleConv(2 * w, w, "dw_separable", norm, act))
            ch = w
        self.head = nn.Conv2d(ch, num_classes, 1)
        for m in [self.stem, self.ups, self.decoders, self.head]:
            init_weights(m, "kaiming_normal", mode="fan_out", nonlinearity="relu")
        self.to(memory_format=torch.channels_last)  # as in MobileNetV2Edge: faster depthwise convs on CPU

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.stem(x)]
        for i, layer in enumerate(self.encoder):
            x = layer(x)
            if i in self.skip_at:
                skips.append(x)
        for up, dec, skip in zip(self.ups, self.decoders, reversed(skips)):
            x = dec(torch.cat([up(x), skip], 1))
        return self.head(x)


_create = build_variant  # caller kwargs override the variant's arch; bad arguments are one line


def _load_shipped(model: nn.Module, name: str, weights_dir: Path | None = None) -> nn.Module:
    """Load ``<weights_dir>/<name>.pt`` (a plain state dict, read with ``weights_only=True``) into ``model``."""
    path = (weights_dir or WEIGHTS_DIR) / f"{name}.pt"
    if not path.is_file():
        raise ModelSourceError(
            f"{name}: expected shipped weights at {path}, found no file (train them with "
            f"'python -m edgecv.train.defaults')"
        )
    sd = torch.load(path, map_location="cpu", weights_only=True)
    try:
        model.load_state_dict(sd)
    except RuntimeError as exc:
        raise ModelSourceError(f"{name}: {path} does not fit the model ({str(exc).splitlines()[0]})") from None
    return model.eval()


def shipped_info(name: str, weights_dir: Path | None = None) -> dict[str, Any]:
    """The record beside a shipped state dict (metric, held-out split, preprocessing, classes, training time)."""
    path = (weights_dir or WEIGHTS_DIR) / f"{name}.json"
    if not path.is_file():
        raise ModelSourceError(f"{name}: expected a metrics record at {path}, found no file")
    return dict(json.loads(path.read_text()))


_CLS: dict[str, Any] = {"family": "edge", "input_size": (3, 64, 64), "mean": SHAPES_MEAN, "std": SHAPES_STD}
_CLS_ARCH: dict[str, Any] = {"width_mult": 0.5, "head_channels": 256, "num_classes": 8}
_SEG_ARCH: dict[str, Any] = {"width_mult": 0.5, "head_channels": 256, "stem_channels": 16, "num_classes": 9}


@register_model(task="classify", num_classes=8, **_CLS)
def mobilenet_v2_edge(**kwargs: Any) -> MobileNetV2Edge:
    """MobileNetV2 cut to 4 stages at width 0.5 with a 256-channel head, 3×64×64 input, 8 classes (random init)."""
    return _create("mobilenet_v2_edge", MobileNetV2Edge, _CLS_ARCH, **kwargs)


@register_model(task="segment", num_classes=9, **_CLS)
def unet_dw_edge(**kwargs: Any) -> UNetDWEdge:
    """Depthwise UNet on the mobilenet_v2_edge encoder (4 up-samplings), 3×64×64 input, 9 classes; random init
    unless ``encoder="shapes_classifier"``."""
    return _create("unet_dw_edge", UNetDWEdge, _SEG_ARCH, **kwargs)


def _shipped(name: str, variant: str, cls: type[nn.Module], arch: dict[str, Any], kwargs: dict[str, Any]) -> Any:
    weights = kwargs.pop("pretrained", True)
    fixed = {k: v for k, v in kwargs.items() if k in arch and v != arch[k]}
    if weights and fixed:
        raise ConfigError(
            f"{name}: the shipped weights are for {variant} with {arch}; got {fixed} "
            f"(pass pretrained=False for a random-init model of another shape)"
        )
    model = _create(name, cls, arch, **kwargs)
    return _load_shipped(model, name) if weights else model


@register_model(
    task="classify",
    num_classes=8,
    class_names=SHAPES_CLASSIFY,
    reference_split={"task": "classify", "size": 64, "seed": 0},
    **_CLS,
)
def shapes_classifier(**kwargs: Any) -> MobileNetV2Edge:
    """mobilenet_v2_edge trained on the synthetic shapes (8 classes, 64 px) by recipes/classifier.yaml; weights and
    held-out metric in edgecv/zoo/weights/shapes_classifier.{pt,json}."""
    return _shipped("shapes_classifier", "mobilenet_v2_edge", MobileNetV2Edge, _CLS_ARCH, kwargs)


@register_model(
    task="segment",
    num_classes=9,
    class_names=SHAPES_SEGMENT,
    reference_split={"task": "segment", "size": 64, "seed": 0},
    **_CLS,
)
def shapes_segmenter(**kwargs: Any) -> UNetDWEdge:
    """unet_dw_edge trained on the synthetic shapes (background + 8 classes, 64 px) by recipes/segmenter.yaml;
    weights and held-out mIoU in edgecv/zoo/weights/shapes_segmenter.{pt,json}."""
    return _shipped("shapes_segmenter", "unet_dw_edge", UNetDWEdge, _SEG_ARCH, kwargs)
