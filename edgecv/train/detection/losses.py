"""Detection losses with their target assignment.

- :class:`YoloV1Loss`: Redmon et al. 2016 sum-of-squares loss — λcoord on (x, y) and on (√w, √h), the responsible
  predictor is the one of the B in the cell with the highest IoU, its confidence target is that IoU, λnoobj on the
  confidence of every other predictor, squared error on the cell's class probabilities.
- :class:`YoloAnchorLoss`: YOLOv2/v3 — each ground truth goes to its best prior by shape IoU (and any prior over
  ``pos_iou``) at the cell holding its centre, on the scale owning that prior; GIoU box loss, objectness BCE with
  predictions that already overlap a ground truth by ``ignore_iou`` left out (YOLOv3's ignore rule), classes by
  softmax CE (v2) or independent logistic BCE (v3).

Targets are the trainer's list of dicts ``{"boxes": [N,4] xyxy input pixels, "labels": [N]}``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from edgecv.zoo.detection.boxes import box_iou, elementwise_giou, wh_iou, yolo_decode


def flatten_targets(targets: list[dict[str, Any]], device: torch.device) -> torch.Tensor:
    """[G, 6] rows (image index, class, x1, y1, x2, y2) over the batch."""
    rows = []
    for i, t in enumerate(targets):
        b = torch.as_tensor(t["boxes"], dtype=torch.float32, device=device).reshape(-1, 4)
        lab = torch.as_tensor(t["labels"], device=device).reshape(-1).float()
        if b.shape[0]:
            rows.append(torch.cat([torch.full_like(lab[:, None], float(i)), lab[:, None], b], 1))
    return torch.cat(rows) if rows else torch.zeros(0, 6, device=device)


class YoloV1Loss(nn.Module):
    """YOLOv1 loss over an output [B, S, S, nb*5 + C] (box values through a sigmoid, classes through softmax)."""

    def __init__(
        self, num_classes: int, num_boxes: int = 2, lambda_coord: float = 5.0, lambda_noobj: float = 0.5
    ) -> None:
        super().__init__()
        self.nc, self.nb = num_classes, num_boxes
        self.lambda_coord, self.lambda_noobj = lambda_coord, lambda_noobj

    def forward(
        self, out: torch.Tensor, targets: list[dict[str, Any]], input_hw: tuple[int, int]
    ) -> dict[str, torch.Tensor]:
        bsz, sh, sw, _ = out.shape
        ih, iw = input_hw
        dev = out.device
        box = torch.sigmoid(out[..., : self.nb * 5].reshape(bsz, sh, sw, self.nb, 5).float())
        prob = torch.softmax(out[..., self.nb * 5 :].float(), -1)
        gt = flatten_targets(targets, dev)
        conf_t = torch.zeros(bsz, sh, sw, self.nb, device=dev)
        resp = torch.zeros(bsz, sh, sw, self.nb, dtype=torch.bool, device=dev)
        coord_loss = out.new_zeros(())
        cls_loss = out.new_zeros(())
        if gt.shape[0]:
            b = gt[:, 0].long()  # novm
            cx, cy = (gt[:, 2] + gt[:, 4]) / 2 / iw, (gt[:, 3] + gt[:, 5]) / 2 / ih  # normalised
            w, h = ((gt[:, 4] - gt[:, 2]) / iw).clamp(1e-6, 1), ((gt[:, 5] - gt[:, 3]) / ih).clamp(1e-6, 1)
            gx = (cx * sw).clamp(0, sw - 1e-4)
            gy = (cy * sh).clamp(0, sh - 1e-4)
            gi, gj = gx.long(), gy.long()
            p = box[b, gj, gi]  # [G, nb, 5]
            # predicted boxes in normalised image coordinates, to pick the responsible predictor by IoU
            pcx, pcy = (p[..., 0] + gi[:, None]) / sw, (p[..., 1] + gj[:, None]) / sh
            pw, ph = p[..., 2] ** 2, p[..., 3] ** 2
            pb = torch.stack([pcx - pw / 2, pcy - ph / 2, pcx + pw / 2, pcy + ph / 2], -1)
            tb = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)
            ious = torch.stack([box_iou(pb[g].detach(), tb[g : g + 1])[:, 0] for g in range(gt.shape[0])])
            best = ious.argmax(1)
            sel = p[torch.arange(gt.shape[0], device=dev), best]  # [G, 5]
            coord_loss = ((sel[:, 0] - (gx - gi)) ** 2 + (sel[:, 1] - (gy - gj)) ** 2).sum() + (
                (sel[:, 2] - w.sqrt()) ** 2 + (sel[:, 3] - h.sqrt()) ** 2
            ).sum()
            resp[b, gj, gi, best] = True
            conf_t[b, gj, gi, best] = ious[torch.arange(gt.shape[0], device=dev), best].clamp(0, 1)
            cls_t = torch.zeros(bsz, sh, sw, self.nc, device=dev)
            has_obj = torch.zeros(bsz, sh, sw, dtype=torch.bool, device=dev)
            cls_t[b, gj, gi, gt[:, 1].long()] = 1.0  # novm
            has_obj[b, gj, gi] = True
            cls_loss = ((prob - cls_t) ** 2).sum(-1)[has_obj].sum()
        conf = box[..., 4]
        obj_loss = ((conf - conf_t) ** 2)[resp].sum()
        noobj_loss = (conf**2)[~resp].sum()
        total = (self.lambda_coord * coord_loss + obj_loss + self.lambda_noobj * noobj_loss + cls_loss) / bsz
        return {
            "loss": total,
            "coord": coord_loss.detach() / bsz,
            "obj": obj_loss.detach() / bsz,
            "noobj": noobj_loss.detach() / bsz,
            "cls": cls_loss.detach() / bsz,
        }


class YoloAnchorLoss(nn.Module):
    """YOLOv2/v3 loss over raw maps ``[B, A*(5+C), H, W]`` per scale.

    Args:
        anchors: per scale, the (w, h) priors in input pixels.
        strides: input pixels per cell, per scale.
        num_classes: C.
        cls_act: ``softmax`` (YOLOv2, CE) or ``sigmoid`` (YOLOv3, independent BCE).
        pos_iou: extra priors whose shape IoU with a ground truth exceeds this are positives too.
        ignore_iou: predictions overlapping a ground truth this much are not pushed to background.
        lambda_box, lambda_obj, lambda_cls: term weights; ``balance`` weighs objectness per scale.
    """

    def __init__(
        self,
        anchors: list[list[tuple[float, float]]],
        strides: list[float],
        num_classes: int,
        cls_act: str = "sigmoid",
        pos_iou: float = 0.5,
        ignore_iou: float = 0.5,
        lambda_box: float = 1.0,
        lambda_obj: float = 1.0,
        lambda_cls: float = 0.5,
        balance: list[float] | None = None,
    ) -> None:
        super().__init__()
        self.anchors = [torch.tensor(a, dtype=torch.float32) for a in anchors]
        self.strides = [float(s) for s in strides]
        self.nc = num_classes
        self.cls_act = cls_act
        self.pos_iou, self.ignore_iou = pos_iou, ignore_iou
        self.lambda_box, self.lambda_obj, self.lambda_cls = lambda_box, lambda_obj, lambda_cls
        n = len(anchors)
        self.balance = balance or ([4.0, 1.0, 0.4][:n] if n == 3 else [1.0] * n)

    def forward(self, maps: list[torch.Tensor], targets: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        dev = maps[0].device
        gt = flatten_targets(targets, dev)
        all_anchors = torch.cat(self.anchors).to(dev)  # [sumA, 2]
        n_per = [len(a) for a in self.anchors]
        scale_of = torch.repeat_interleave(torch.arange(len(n_per), device=dev), torch.tensor(n_per, device=dev))
        local = torch.cat([torch.arange(n, device=dev) for n in n_per])
        if gt.shape[0]:
            gwh = (gt[:, 4:6] - gt[:, 2:4]).clamp(min=1e-3)
            shape_iou = wh_iou(gwh, all_anchors)  # [G, sumA]
            pos = shape_iou > self.pos_iou
            pos[torch.arange(gt.shape[0], device=dev), shape_iou.argmax(1)] = True
        lbox, lobj, lcls = maps[0].new_zeros(()), maps[0].new_zeros(()), maps[0].new_zeros(())
        n_pos = 0
        for li, m in enumerate(maps):
            bsz, _, h, w = m.shape
            a = len(self.anchors[li])
            s = self.strides[li]
            t = m.float().reshape(bsz, a, 5 + self.nc, h, w).permute(0, 1, 3, 4, 2)  # [B,A,H,W,5+C]
            anc = self.anchors[li].to(dev)
            gy, gx = torch.meshgrid(torch.arange(h, device=dev), torch.arange(w, device=dev), indexing="ij")
            grid = torch.stack([gx, gy], -1).float()[None, None]  # [1,1,H,W,2]
            pbox = yolo_decode(t[..., :4], grid, anc[None, :, None, None], s)  # [B,A,H,W,4]
            obj_t = torch.zeros(bsz, a, h, w, device=dev)
            obj_w = torch.ones(bsz, a, h, w, device=dev)
            if gt.shape[0]:
                # YOLOv3 ignore rule: a prediction already overlapping some ground truth is not a negative
                with torch.no_grad():
                    for bi in range(bsz):
                        g = gt[gt[:, 0] == bi]
                        if g.shape[0]:
                            best = box_iou(pbox[bi].reshape(-1, 4), g[:, 2:6]).max(1).values.reshape(a, h, w)
                            obj_w[bi][best > self.ignore_iou] = 0.0
                gi_idx, ai_all = torch.nonzero(pos & (scale_of[None] == li), as_tuple=True)
                if gi_idx.numel():
                    g = gt[gi_idx]
                    ai = local[ai_all]
                    b = g[:, 0].long()  # novm
                    cx, cy = (g[:, 2] + g[:, 4]) / 2, (g[:, 3] + g[:, 5]) / 2
                    ci = (cx / s).long().clamp(0, w - 1)  # novm
                    cj = (cy / s).long().clamp(0, h - 1)  # novm
                    pb = pbox[b, ai, cj, ci]
                    giou = elementwise_giou(pb, g[:, 2:6])
                    lbox = lbox + (1.0 - giou).mean()
                    obj_t[b, ai, cj, ci] = giou.detach().clamp(0, 1).to(obj_t.dtype)
                    obj_w[b, ai, cj, ci] = 1.0
                    logits = t[b, ai, cj, ci, 5:]
                    if self.cls_act == "softmax":
                        lcls = lcls + F.cross_entropy(logits, g[:, 1].long())  # novm
                    else:
                        onehot = F.one_hot(g[:, 1].long(), self.nc).float()  # novm
                        lcls = lcls + F.binary_cross_entropy_with_logits(logits, onehot)
                    n_pos += int(gi_idx.numel())
            bce = F.binary_cross_entropy_with_logits(t[..., 4], obj_t, reduction="none")
            lobj = lobj + self.balance[li] * (bce * obj_w).sum() / obj_w.sum().clamp(min=1)
        total = self.lambda_box * lbox + self.lambda_obj * lobj + self.lambda_cls * lcls
        return {
            "loss": total,
            "box": lbox.detach(),
            "obj": lobj.detach(),
            "cls": lcls.detach(),
            "n_pos": torch.tensor(float(n_pos)),
        }


def detector_loss(model: Any) -> Any:
    """``(outputs, targets) -> {"loss", ...}`` for a detector: its own ``compute_loss`` when it has one (DETR,
    Faster R-CNN: the loss is part of the architecture), else the loss its ``loss_spec`` names (the YOLO family:
    ``{"kind": "yolo_v1" | "yolo_anchor", **arguments}``)."""
    own = getattr(model, "compute_loss", None)
    if callable(own):
        return own
    spec = dict(getattr(model, "loss_spec", None) or {})
    kind = spec.pop("kind", None)
    if kind == "yolo_v1":
        v1 = YoloV1Loss(**spec)
        return lambda outputs, targets: v1(outputs, targets, (model.input_size, model.input_size))
    if kind == "yolo_anchor":
        anchor = YoloAnchorLoss(**spec)
        return lambda outputs, targets: anchor(list(outputs), targets)
    from edgecv.errors import ConfigError

    raise ConfigError(
        f"{type(model).__name__}: expected a detector with compute_loss(outputs, targets) or a loss_spec "
        f"(kind yolo_v1 or yolo_anchor), found {'kind ' + repr(kind) if kind else 'neither'}"
    )
