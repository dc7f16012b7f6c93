"""Lossy pass ``act_relu6``: smooth activations → ReLU6."""

from __future__ import annotations

from edgecv.rewrite.base import register_pass
from edgecv.rewrite.passes.act_relu import _ActSwap


@register_pass("act_relu6", description="SiLU/GELU/Hardswish/Mish -> ReLU6")
class ActToReLU6(_ActSwap):
    """SiLU / GELU / Hardswish / Mish → ReLU6 (bounded: friendlier activation ranges for INT8)."""

    target = "relu6"
