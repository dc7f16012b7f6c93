"""Building blocks chosen by name: convs, norms, activations, attention, weight init."""

from edgecv.zoo.layers.act import ACTS, create_act
from edgecv.zoo.layers.attention import (
    ATTNS,
    CBAM,
    MHSA2d,
    MultiHeadCrossAttention,
    ChannelAttention,
    DualAttention,
    EfficientChannelAttention,
    MultiHeadSelfAttention,
    NonLocal,
    PositionAttention,
    SelectiveKernel,
    SqueezeExcite,
    TransformerBlock,
    TransformerBlock2d,
    create_attn,
    eca_kernel_size,
)
from edgecv.zoo.layers.conv import (
    ConvBnAct,
    ConvNormAct,
    DepthwiseSeparableConv,
    GlobalDepthwiseConv,
    conv2d,
    create_conv,
    same_padding,
)
from edgecv.zoo.layers.init import INITS, init_weights
from edgecv.zoo.layers.norm import NORMS, LayerNorm2d, SwitchableNorm2d, create_norm

__all__ = [
    "ACTS", "ATTNS", "CBAM", "INITS", "NORMS", "ChannelAttention", "ConvBnAct", "ConvNormAct",
    "DepthwiseSeparableConv", "DualAttention", "EfficientChannelAttention", "GlobalDepthwiseConv", "LayerNorm2d",
    "MHSA2d", "MultiHeadCrossAttention", "MultiHeadSelfAttention", "NonLocal", "PositionAttention", "SelectiveKernel", "SqueezeExcite",
    "SwitchableNorm2d", "TransformerBlock", "TransformerBlock2d", "conv2d", "create_act", "create_attn", "create_conv",
    "create_norm", "eca_kernel_size", "init_weights", "same_padding",
]
