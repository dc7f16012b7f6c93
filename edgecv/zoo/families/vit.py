"""A small Vision Transformer (Dosovitskiy et al.): conv patch embedding, class token, learned position
embedding, pre-norm transformer blocks, final LayerNorm, linear head on the class token. The layout follows timm's
``vit_small_patch16_224`` (22,050,664 parameters at 1000 classes).

The position embedding is sized for the default input, so the model exports at that fixed size (no interpolation
in the graph: that keeps it to ops every runtime runs).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from edgecv.errors import ConfigError
from edgecv.zoo.layers import TransformerBlock
from edgecv.zoo.registry import build_variant, register_model


class PatchEmbed(nn.Module):
    """Non-overlapping p×p patches → D-dim tokens, via a p×p conv with stride p."""

    def __init__(self, img_size: int, patch_size: int, in_chans: int, dim: int) -> None:
        super().__init__()
        if img_size % patch_size:
            raise ConfigError(f"vit: expected img_size divisible by patch_size={patch_size}, got {img_size}")
        self.num_patches = (img_size // patch_size) ** 2
        self.proj = nn.Conv2d(in_chans, dim, patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # [N, T, D]


class VisionTransformer(nn.Module):
    """ViT classifier. Output: logits ``[N, num_classes]``."""

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        dim: int = 384,
        depth: int = 12,
        num_heads: int = 6,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        act: str = "gelu",
    ) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches + 1, dim))
        self.blocks = nn.Sequential(*[TransformerBlock(dim, num_heads, mlp_ratio, qkv_bias, act) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.patch_embed(x)
        cls = self.cls_token.expand(t.shape[0], -1, -1)
        t = torch.cat([cls, t], 1) + self.pos_embed
        t = self.norm(self.blocks(t))
        return self.head(t[:, 0])


def _create(variant: str, arch: dict[str, Any], **kwargs: Any) -> VisionTransformer:
    return build_variant(variant, VisionTransformer, arch, **kwargs)


@register_model(family="vit", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
def vit_small(**kwargs: Any) -> VisionTransformer:
    """ViT-S/16 at 224 (dim 384, depth 12, 6 heads)."""
    return _create("vit_small", {"img_size": 224, "patch_size": 16, "dim": 384, "depth": 12, "num_heads": 6}, **kwargs)


@register_model(
    family="vit", input_size=(3, 64, 64), num_classes=10, tiny=True, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)
)
def vit_tiny(**kwargs: Any) -> VisionTransformer:
    """Test variant: 3×64×64 input, 8×8 patches (64 tokens + cls), dim 64, depth 2, 2 heads, 10 classes."""
    return _create(
        "vit_tiny",
        {"img_size": 64, "patch_size": 8, "dim": 64, "depth": 2, "num_heads": 2, "num_classes": 10},
        **kwargs,
    )
