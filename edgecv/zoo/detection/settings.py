"""What a detector declares about its own training, as plain settings the model keeps (and validates when it is
built): the augmentation it wants (:class:`DetAugment`). The code that acts on them lives in the build tier's
trainer, ``edgecv.train.detection`` (augmentation, losses, the trainer task): the zoo never imports train.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edgecv.errors import ConfigError


@dataclass
class DetAugment:
    """Augmentation strengths (0 disables each).

    Attributes:
        scale: zoom factor drawn from [1 - scale, 1 + scale] (zoom-out pads with ``fill``; zoom-in crops).
        translate: shift as a fraction of the image side.
        hflip: probability of a horizontal flip.
        hsv: colour jitter strength (brightness, contrast and saturation each by ±hsv).
        sizes: multi-scale training sizes (square, multiples of 32); empty keeps the loader's size.
        min_visible: a box keeps this fraction of its area inside the crop or it is dropped.
        fill: padding value (114/255, the letterbox grey).
    """

    scale: float = 0.0
    translate: float = 0.0
    hflip: float = 0.0
    hsv: float = 0.0
    sizes: list[int] = field(default_factory=list)
    min_visible: float = 0.35
    fill: float = 114.0 / 255.0

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> DetAugment:
        d = dict(d or {})
        allowed = set(cls.__dataclass_fields__)
        bad = sorted(set(d) - allowed)
        if bad:
            raise ConfigError(f"model.kwargs.train_aug: unknown key '{bad[0]}' (allowed: {', '.join(sorted(allowed))})")
        aug = cls(**d)
        if not 0 <= aug.scale < 1:
            raise ConfigError(f"model.kwargs.train_aug.scale: expected 0 <= scale < 1, found {aug.scale}")
        for s in aug.sizes:
            if int(s) % 32:
                raise ConfigError(f"model.kwargs.train_aug.sizes: expected multiples of 32, found {s}")
        return aug

    @property
    def active(self) -> bool:
        return bool(self.scale or self.translate or self.hflip or self.hsv or self.sizes)
