"""Spatial Transformer (Jaderberg et al. 2015): a localization net regresses an affine ``theta`` [N, 2, 3] from the
input, ``affine_grid`` turns it into sampling coordinates, and ``grid_sample`` (bilinear) resamples the input there.

The grid is written as one matmul of a constant base grid with ``theta`` — exactly ``F.affine_grid(theta, size,
align_corners=False)`` (a test checks it) — because ONNX has no ``AffineGrid`` before opset 20, while
``F.grid_sample`` exports as ONNX ``GridSample`` from opset 16 (ONNX Runtime and OpenVINO both run it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgecv.errors import ConfigError


def base_grid(h: int, w: int) -> torch.Tensor:
    """``[H*W, 3]`` rows ``(x, y, 1)`` at pixel centres in [-1, 1] (``align_corners=False``), row-major."""
    xs = (torch.arange(w, dtype=torch.float32) * 2 + 1) / w - 1
    ys = (torch.arange(h, dtype=torch.float32) * 2 + 1) / h - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy, torch.ones_like(gx)], -1).reshape(h * w, 3)


class SpatialTransformer(nn.Module):
    """Localization net → ``theta`` → affine grid → bilinear ``grid_sample``; output has the input's shape.

    Args:
        channels: C of the input map.
        size: its H = W (fixed: the localization net ends in a fully connected layer and the grid is a constant).
        widths: the localization net's two conv widths (5×5 then 3×3, each stride 2, ReLU, then 2×2 max pooling).
        hidden: width of the regressor's hidden layer.

    The regressor's last layer starts at zero weight and identity bias, so the block starts as the identity
    transform (the paper's initialisation).
    """

    def __init__(self, channels: int, size: int, widths: tuple[int, int] = (8, 16), hidden: int = 32) -> None:
        super().__init__()
        if size < 8:
            raise ConfigError(f"spatial transformer size: expected the input side (>= 8), got {size}")
        w1, w2 = widths
        self.loc = nn.Sequential(
            nn.Conv2d(channels, w1, 5, 2, 2), nn.ReLU(), nn.Conv2d(w1, w2, 3, 2, 1), nn.ReLU(), nn.MaxPool2d(2)
        )
        with torch.no_grad():
            feat = self.loc(torch.zeros(1, channels, size, size)).numel()
        last = nn.Linear(hidden, 6)
        nn.init.zeros_(last.weight)
        with torch.no_grad():
            last.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]))
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(feat, hidden), nn.ReLU(), last)
        self.size = size
        self.grid_base: torch.Tensor
        self.register_buffer("grid_base", base_grid(size, size), persistent=False)

    def theta(self, x: torch.Tensor) -> torch.Tensor:
        """The affine transform ``[N, 2, 3]`` (output pixel → input sampling point, normalised coordinates)."""
        return self.fc(self.loc(x)).reshape(-1, 2, 3)

    def grid(self, theta: torch.Tensor) -> torch.Tensor:
        """``F.affine_grid(theta, [N, C, S, S], align_corners=False)`` as a matmul: ``[N, S, S, 2]``."""
        return torch.matmul(self.grid_base, theta.transpose(1, 2)).reshape(-1, self.size, self.size, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.grid(self.theta(x))
        return F.grid_sample(x, g, mode="bilinear", padding_mode="zeros", align_corners=False)
