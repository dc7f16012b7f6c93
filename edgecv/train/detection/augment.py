"""Batch-level detection augmentation that keeps boxes right: random scale/crop (affine), horizontal flip, colour
jitter, and YOLOv2 multi-scale training (one random input size per batch, multiples of 32).

It runs in the detection task's ``collate`` on already-normalised tensors ``(pixel/255 - mean) / std``. Every step
works in pixel space (values in [0, 1]): the batch is mapped back with the model's ``mean``/``std`` first and
normalised again at the end, so the colour jitter's clamp to [0, 1] and the padding ``fill`` (114/255) mean the
same for a detector trained with ImageNet mean/std as for one trained with mean 0 / std 1. It uses the torch global
RNG, which the trainer reseeds per epoch (reproducible runs).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from edgecv.zoo.detection.settings import DetAugment

__all__ = ["DetAugment", "affine_boxes", "augment_batch"]


def affine_boxes(
    boxes: torch.Tensor, s: float, tx: float, ty: float, w: int, h: int, min_visible: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Map boxes through ``p' = (p - c)·s + c + t`` (c the image centre), clip to the image, and return
    (new boxes, keep mask) where a box keeps at least ``min_visible`` of its mapped area."""
    cx, cy = w / 2.0, h / 2.0
    b = boxes.clone()
    b[:, [0, 2]] = (b[:, [0, 2]] - cx) * s + cx + tx
    b[:, [1, 3]] = (b[:, [1, 3]] - cy) * s + cy + ty
    area = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    c = b.clone()
    c[:, [0, 2]] = c[:, [0, 2]].clamp(0, w)
    c[:, [1, 3]] = c[:, [1, 3]].clamp(0, h)
    carea = (c[:, 2] - c[:, 0]).clamp(min=0) * (c[:, 3] - c[:, 1]).clamp(min=0)
    keep = (carea >= min_visible * area.clamp(min=1e-6)) & (c[:, 2] - c[:, 0] >= 2) & (c[:, 3] - c[:, 1] >= 2)
    return c, keep


def affine_image(img: torch.Tensor, s: float, tx: float, ty: float, fill: float) -> torch.Tensor:
    """Warp one CHW image by the same map as :func:`affine_boxes` (bilinear, ``fill`` outside)."""
    _, h, w = img.shape
    # affine_grid maps output coords (normalised [-1, 1]) to input coords: in = (out - t_n) / s
    theta = torch.tensor(
        [[1.0 / s, 0.0, -2.0 * tx / w / s], [0.0, 1.0 / s, -2.0 * ty / h / s]], dtype=img.dtype
    ).unsqueeze(0)
    grid = F.affine_grid(theta, [1, *img.shape], align_corners=False)
    out = F.grid_sample((img - fill).unsqueeze(0), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out[0] + fill


def colour_jitter(img: torch.Tensor, strength: float) -> torch.Tensor:
    """Brightness, contrast and saturation each scaled by a factor in [1 - strength, 1 + strength]."""
    r = (torch.rand(3) * 2 - 1) * strength + 1
    x = img * r[0]
    mean = x.mean()
    x = (x - mean) * r[1] + mean
    grey = x.mean(0, keepdim=True)
    x = (x - grey) * r[2] + grey
    return x.clamp(0, 1)


def augment_batch(
    imgs: torch.Tensor,
    targets: list[dict[str, Any]],
    aug: DetAugment,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """Augment a normalised batch ``[B,3,H,W]`` and its targets (boxes xyxy pixels); returns new ones.

    ``mean``/``std`` are the model's input normalisation (``None``: mean 0 / std 1, the batch is in [0, 1])."""
    bsz, _, h, w = imgs.shape
    m = torch.as_tensor(mean if mean is not None else (0.0,) * 3, dtype=imgs.dtype).reshape(1, -1, 1, 1)
    sd = torch.as_tensor(std if std is not None else (1.0,) * 3, dtype=imgs.dtype).reshape(1, -1, 1, 1)
    imgs = imgs * sd + m  # pixel space, [0, 1]
    out_imgs = []
    out_t: list[dict[str, Any]] = []
    for i in range(bsz):
        img, t = imgs[i], dict(targets[i])
        boxes = torch.as_tensor(t["boxes"], dtype=torch.float32).reshape(-1, 4)
        labels = torch.as_tensor(t["labels"]).reshape(-1)
        if aug.hflip and float(torch.rand(())) < aug.hflip:
            img = img.flip(-1)
            boxes = torch.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], 1)
        if aug.scale or aug.translate:
            s = 1.0 + (float(torch.rand(())) * 2 - 1) * aug.scale
            tx, ty = ((torch.rand(2) * 2 - 1) * aug.translate * torch.tensor([w, h])).tolist()
            img = affine_image(img, s, tx, ty, aug.fill)
            boxes, keep = affine_boxes(boxes, s, tx, ty, w, h, aug.min_visible)
            boxes, labels = boxes[keep], labels[keep]
        if aug.hsv:
            img = colour_jitter(img, aug.hsv)
        t["boxes"], t["labels"] = boxes, labels
        out_imgs.append(img)
        out_t.append(t)
    x = (torch.stack(out_imgs) - m) / sd
    if aug.sizes:
        size = int(aug.sizes[int(torch.randint(len(aug.sizes), ()))])
        if size != h or size != w:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
            sx, sy = size / w, size / h
            for t in out_t:
                t["boxes"] = t["boxes"] * torch.tensor([sx, sy, sx, sy])
    return x, out_t
