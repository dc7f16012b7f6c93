"""A classifier behind a Spatial Transformer: the STN first undoes the affine distortion of the input, then a
classifier reads the resampled image — a zoo model (``stn_classifier``: the shipped ``shapes_classifier``, trained
on undistorted shapes) or a small conv-BN-ReLU stack (``stn_tiny``). Trained on the synthetic shapes with random
rotation, zoom and shift (``recipes/stn_classifier.yaml``). Exports with ONNX ``GridSample`` (opset ≥ 16).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from edgecv.zoo.families.edge import SHAPES_CLASSIFY, SHAPES_MEAN, SHAPES_STD
from edgecv.zoo.layers import ConvNormAct, init_weights
from edgecv.zoo.layers.spatial import SpatialTransformer
from edgecv.zoo.registry import MODELS, build_variant, register_model


class STNClassifier(nn.Module):
    """Spatial transformer on the image, then conv stages (each a stride-2 3×3 conv-BN-ReLU), GAP, linear."""

    def __init__(
        self,
        num_classes: int = 8,
        in_chans: int = 3,
        input_size: int = 64,
        widths: tuple[int, ...] = (16, 32, 64, 128),
        loc_widths: tuple[int, int] = (8, 16),
        loc_hidden: int = 32,
        stn: bool = True,
        backbone: str | None = None,
        backbone_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.stn = SpatialTransformer(in_chans, input_size, loc_widths, loc_hidden) if stn else nn.Identity()
        self.net: nn.Module | None = None
        if backbone is not None:  # a whole zoo classifier behind the transformer
            # every family is registered by now: importing any family module runs edgecv.zoo.families first
            self.net = MODELS.get(backbone)(**(backbone_kwargs or {}))
            return
        layers: list[nn.Module] = []
        ch = in_chans
        for w in widths:
            layers.append(ConvNormAct(ch, w, 3, 2))
            ch = w
        self.features = nn.Sequential(*layers)
        init_weights(self.features, "kaiming_normal", mode="fan_out", nonlinearity="relu")
        self.classifier = nn.Linear(ch, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.net is not None:
            return self.net(self.stn(x))  # type: ignore[no-any-return]
        return self.classifier(self.features(self.stn(x)).mean((2, 3)))


_SHAPES: dict[str, Any] = {"task": "classify", "num_classes": 8, "family": "stn"}


@register_model(input_size=(3, 64, 64), mean=SHAPES_MEAN, std=SHAPES_STD, class_names=SHAPES_CLASSIFY, **_SHAPES)
def stn_classifier(**kwargs: Any) -> STNClassifier:
    """STN (localization 8/16 channels) in front of the shipped shapes_classifier, 3×64×64 input, 8 shape classes:
    training teaches the transformer to undo the distortions the classifier never saw."""
    return build_variant("stn_classifier", STNClassifier, {"backbone": "shapes_classifier"}, **kwargs)


@register_model(input_size=(3, 32, 32), tiny=True, **_SHAPES)
def stn_tiny(**kwargs: Any) -> STNClassifier:
    """Test variant: STN + 3-stage classifier (8…32 channels), 3×32×32 input."""
    return build_variant(
        "stn_tiny",
        STNClassifier,
        {"input_size": 32, "widths": (8, 16, 32), "loc_widths": (4, 8), "loc_hidden": 16},
        **kwargs,
    )
