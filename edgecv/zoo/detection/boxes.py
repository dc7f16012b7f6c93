"""Box utilities shared by every detector: format conversion, IoU / GIoU (torch and numpy), box coding.

Boxes are ``xyxy`` in pixels unless a name says otherwise. The torch IoU / GIoU come from ``torchvision.ops``
(well-tested, exportable); the numpy twins serve the runtime tier and the tests that check one against the other.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torchvision.ops import box_iou as _tv_box_iou
from torchvision.ops import generalized_box_iou as _tv_giou

from edgecv.tasks.detect import box_iou as _np_box_iou
from edgecv.tasks.detect import generalized_box_iou as _np_giou

# exp() argument cap in box decoding: a box can grow at most e^4.135 ≈ 62× its prior (torchvision's value)
BBOX_XFORM_CLIP = math.log(1000.0 / 16)


# ----------------------------------------------------------------------------------------- conversion
def xyxy_to_cxcywh(b: torch.Tensor) -> torch.Tensor:
    x1, y1, x2, y2 = b.unbind(-1)
    return torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], dim=-1)


def cxcywh_to_xyxy(b: torch.Tensor) -> torch.Tensor:
    cx, cy, w, h = b.unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)


def xyxy_to_cxcywh_np(b: np.ndarray) -> np.ndarray:
    b = np.asarray(b, np.float32)
    return np.stack(
        [(b[..., 0] + b[..., 2]) / 2, (b[..., 1] + b[..., 3]) / 2, b[..., 2] - b[..., 0], b[..., 3] - b[..., 1]],
        axis=-1,
    )


def cxcywh_to_xyxy_np(b: np.ndarray) -> np.ndarray:
    b = np.asarray(b, np.float32)
    return np.stack(
        [b[..., 0] - b[..., 2] / 2, b[..., 1] - b[..., 3] / 2, b[..., 0] + b[..., 2] / 2, b[..., 1] + b[..., 3] / 2],
        axis=-1,
    )


# ----------------------------------------------------------------------------------------- IoU / GIoU
def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of ``a`` [N,4] and ``b`` [M,4] (xyxy) → [N,M]."""
    return _tv_box_iou(a, b)


def generalized_box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise GIoU (Rezatofighi et al. 2019) → [N,M], in [-1, 1]."""
    return _tv_giou(a, b)


def elementwise_giou(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """GIoU of matching rows ``a[i]`` / ``b[i]`` (the loss form: no N×M matrix)."""
    ix1, iy1 = torch.max(a[..., 0], b[..., 0]), torch.max(a[..., 1], b[..., 1])
    ix2, iy2 = torch.min(a[..., 2], b[..., 2]), torch.min(a[..., 3], b[..., 3])
    inter = (ix2 - ix1).clamp(min=0) * (iy2 - iy1).clamp(min=0)
    area_a = (a[..., 2] - a[..., 0]).clamp(min=0) * (a[..., 3] - a[..., 1]).clamp(min=0)
    area_b = (b[..., 2] - b[..., 0]).clamp(min=0) * (b[..., 3] - b[..., 1]).clamp(min=0)
    union = area_a + area_b - inter
    iou = inter / (union + eps)
    cx1, cy1 = torch.min(a[..., 0], b[..., 0]), torch.min(a[..., 1], b[..., 1])
    cx2, cy2 = torch.max(a[..., 2], b[..., 2]), torch.max(a[..., 3], b[..., 3])
    hull = (cx2 - cx1).clamp(min=0) * (cy2 - cy1).clamp(min=0)
    return iou - (hull - union) / (hull + eps)


# numpy twins live in the runtime tier (no torch there); re-exported here so build-tier code finds both together
box_iou_np = _np_box_iou
generalized_box_iou_np = _np_giou


def wh_iou(wh1: torch.Tensor, wh2: torch.Tensor) -> torch.Tensor:
    """IoU of boxes that share a centre, from widths/heights only: [N,2] × [M,2] → [N,M] (anchor matching)."""
    inter = torch.min(wh1[:, None], wh2[None]).prod(-1)
    return inter / (wh1.prod(-1)[:, None] + wh2.prod(-1)[None] - inter).clamp(min=1e-9)


def wh_iou_np(wh1: np.ndarray, wh2: np.ndarray) -> np.ndarray:
    wh1 = np.asarray(wh1, np.float64).reshape(-1, 2)
    wh2 = np.asarray(wh2, np.float64).reshape(-1, 2)
    inter = np.minimum(wh1[:, None], wh2[None]).prod(-1)
    return inter / np.maximum(wh1.prod(-1)[:, None] + wh2.prod(-1)[None] - inter, 1e-12)


# ----------------------------------------------------------------------------------------- box coding
class BoxCoder:
    """R-CNN box deltas (Girshick 2015): ``(dx, dy, dw, dh) = (w_x (gx - px)/pw, w_y (gy - py)/ph,
    w_w log(gw/pw), w_h log(gh/ph))``; :meth:`decode` inverts it with the exp clipped."""

    def __init__(
        self, weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0), clip: float = BBOX_XFORM_CLIP
    ) -> None:
        self.weights = weights
        self.clip = clip

    def encode(self, gt: torch.Tensor, priors: torch.Tensor) -> torch.Tensor:
        wx, wy, ww, wh = self.weights
        p, g = xyxy_to_cxcywh(priors), xyxy_to_cxcywh(gt)
        pw, ph = p[..., 2].clamp(min=1e-6), p[..., 3].clamp(min=1e-6)
        return torch.stack(
            [
                wx * (g[..., 0] - p[..., 0]) / pw,
                wy * (g[..., 1] - p[..., 1]) / ph,
                ww * torch.log(g[..., 2].clamp(min=1e-6) / pw),
                wh * torch.log(g[..., 3].clamp(min=1e-6) / ph),
            ],
            dim=-1,
        )

    def decode(self, deltas: torch.Tensor, priors: torch.Tensor) -> torch.Tensor:
        wx, wy, ww, wh = self.weights
        p = xyxy_to_cxcywh(priors)
        cx = deltas[..., 0] / wx * p[..., 2] + p[..., 0]
        cy = deltas[..., 1] / wy * p[..., 3] + p[..., 1]
        w = torch.exp((deltas[..., 2] / ww).clamp(max=self.clip)) * p[..., 2]
        h = torch.exp((deltas[..., 3] / wh).clamp(max=self.clip)) * p[..., 3]
        return cxcywh_to_xyxy(torch.stack([cx, cy, w, h], dim=-1))

    def encode_np(self, gt: np.ndarray, priors: np.ndarray) -> np.ndarray:
        return self.encode(
            torch.as_tensor(gt, dtype=torch.float64), torch.as_tensor(priors, dtype=torch.float64)
        ).numpy()

    def decode_np(self, deltas: np.ndarray, priors: np.ndarray) -> np.ndarray:
        wx, wy, ww, wh = self.weights
        p = xyxy_to_cxcywh_np(priors).astype(np.float64)
        d = np.asarray(deltas, np.float64)
        cx = d[..., 0] / wx * p[..., 2] + p[..., 0]
        cy = d[..., 1] / wy * p[..., 3] + p[..., 1]
        w = np.exp(np.minimum(d[..., 2] / ww, self.clip)) * p[..., 2]
        h = np.exp(np.minimum(d[..., 3] / wh, self.clip)) * p[..., 3]
        return cxcywh_to_xyxy_np(np.stack([cx, cy, w, h], axis=-1))


def yolo_decode(t: torch.Tensor, grid_xy: torch.Tensor, anchors_wh: torch.Tensor, stride: float) -> torch.Tensor:
    """YOLOv2/v3 direct location prediction: ``b_xy = (σ(t_xy) + c_xy)·stride``, ``b_wh = p_wh·exp(t_wh)``.

    Args:
        t: [..., 4] raw (tx, ty, tw, th).
        grid_xy: cell offsets broadcastable to ``t[..., :2]``.
        anchors_wh: priors in input pixels broadcastable to ``t[..., 2:]``.
        stride: input pixels per cell.

    Returns:
        [..., 4] boxes xyxy in input pixels.
    """
    xy = (torch.sigmoid(t[..., :2]) + grid_xy) * stride
    wh = torch.exp(t[..., 2:4].clamp(max=BBOX_XFORM_CLIP)) * anchors_wh
    return torch.cat([xy - wh / 2, xy + wh / 2], dim=-1)


def yolo_decode_np(t: np.ndarray, grid_xy: np.ndarray, anchors_wh: np.ndarray, stride: float) -> np.ndarray:
    """numpy twin of :func:`yolo_decode` (runtime tier host decode)."""
    t = np.asarray(t, np.float32)
    xy = (1.0 / (1.0 + np.exp(-t[..., :2])) + grid_xy) * stride
    wh = np.exp(np.minimum(t[..., 2:4], BBOX_XFORM_CLIP)) * anchors_wh
    return np.concatenate([xy - wh / 2, xy + wh / 2], axis=-1).astype(np.float32)
