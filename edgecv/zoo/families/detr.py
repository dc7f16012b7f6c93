"""A small DETR (Carion et al. 2020): CNN backbone → 1×1 projection + learned positions → transformer encoder →
transformer decoder whose object queries attend to each other (self-attention) and to the encoded image
(encoder–decoder "context" attention) → per query a class (C + "no object") and a box. Trained as set prediction:
each ground-truth box is matched to one query by the Hungarian algorithm
(``scipy.optimize.linear_sum_assignment`` on class + L1 + GIoU costs), unmatched queries learn "no object", and
every decoder layer gets the loss (auxiliary losses, as in the paper).

No NMS anywhere: the one-to-one matching teaches the queries not to duplicate. In eval mode ``forward`` returns the
same four outputs as the graph-NMS detectors (``boxes`` [B,K,4] xyxy input pixels, ``scores``, ``classes``,
``num_dets``; K = number of queries, sorted by score, ``num_dets`` = how many clear ``score_threshold``), so the
export is the model itself and the contract's decode says ``nms: none``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgecv.errors import ConfigError
from edgecv.zoo.detection.boxes import cxcywh_to_xyxy, elementwise_giou, generalized_box_iou, xyxy_to_cxcywh
from edgecv.zoo.detection.settings import DetAugment
from edgecv.zoo.families.faster_rcnn import SmallBackbone
from edgecv.zoo.layers import MultiHeadCrossAttention, TransformerBlock
from edgecv.zoo.layers.attention import Mlp
from edgecv.zoo.registry import build_variant, register_model


class DecoderLayer(nn.Module):
    """Pre-norm DETR decoder layer: query self-attention, encoder–decoder attention, MLP; query positions are
    added to queries and keys (never to values), image positions to the memory keys."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 2.0) -> None:
        super().__init__()
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.self_attn = MultiHeadCrossAttention(dim, num_heads)
        self.cross_attn = MultiHeadCrossAttention(dim, num_heads)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), "relu")

    def forward(
        self, tgt: torch.Tensor, query_pos: torch.Tensor, memory: torch.Tensor, pos: torch.Tensor
    ) -> torch.Tensor:
        q = self.norm1(tgt)
        tgt = tgt + self.self_attn(q + query_pos, q + query_pos, q)
        q = self.norm2(tgt)
        tgt = tgt + self.cross_attn(q + query_pos, memory + pos, memory)
        return tgt + self.mlp(self.norm3(tgt))


class DETR(nn.Module):
    """DETR-style detector.

    Args:
        num_classes: C (the "no object" class is added internally).
        input_size: square input side (stride-16 backbone: ``input_size / 16`` squared memory tokens).
        dim, heads, enc_layers, dec_layers, num_queries: transformer size.
        backbone / backbone_kwargs / widths: a zoo model cut at stride 16, or a small conv backbone.
        cost_class, cost_bbox, cost_giou: Hungarian matching weights; ``eos_coef``: weight of "no object" in the
            class loss; the loss weights equal the matching weights (the paper's 1 / 5 / 2).
        score_threshold: ``num_dets`` counts the queries at or above it.
    """

    nms_free = True

    def __init__(
        self,
        num_classes: int = 8,
        input_size: int = 96,
        dim: int = 96,
        heads: int = 4,
        enc_layers: int = 2,
        dec_layers: int = 3,
        num_queries: int = 12,
        backbone: str | None = None,
        backbone_kwargs: dict[str, Any] | None = None,
        widths: tuple[int, ...] = (16, 32, 64, 128),
        cost_class: float = 1.0,
        cost_bbox: float = 5.0,
        cost_giou: float = 2.0,
        eos_coef: float = 0.1,
        score_threshold: float = 0.001,
        train_aug: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if input_size % 16:
            raise ConfigError(f"detr input_size: expected a multiple of 16 (stride-16 backbone), found {input_size}")
        self.num_classes, self.input_size, self.num_queries = num_classes, input_size, num_queries
        self.train_aug = DetAugment.from_dict(train_aug)
        self.backbone = SmallBackbone(widths, backbone, backbone_kwargs)
        self.proj = nn.Conv2d(self.backbone.out_channels, dim, 1)
        side = input_size // 16
        self.pos = nn.Parameter(torch.randn(1, side * side, dim) * 0.02)  # learned image positions
        self.encoder = nn.ModuleList([TransformerBlock(dim, heads, 2.0, act="relu") for _ in range(enc_layers)])
        self.query_pos = nn.Parameter(torch.randn(1, num_queries, dim))  # the object queries
        self.decoder = nn.ModuleList([DecoderLayer(dim, heads) for _ in range(dec_layers)])
        self.dec_norm = nn.LayerNorm(dim)
        self.class_head = nn.Linear(dim, num_classes + 1)
        self.box_head = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, 4))
        self.cost_class, self.cost_bbox, self.cost_giou, self.eos_coef = cost_class, cost_bbox, cost_giou, eos_coef
        self.score_threshold = score_threshold

    # ------------------------------------------------------------------------------------------ network
    def heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per decoder layer: class logits ``[L, B, Q, C+1]`` and boxes ``[L, B, Q, 4]`` (cxcywh in [0, 1])."""
        f = self.proj(self.backbone(x)).flatten(2).transpose(1, 2)  # [B, HW, D]
        pos = self.pos
        mem = f
        for blk in self.encoder:
            mem = blk(mem + pos) - pos  # positions enter each layer (DETR adds them to q/k at every layer)
        qp = self.query_pos.expand(x.shape[0], -1, -1)
        tgt = torch.zeros_like(qp)
        logits, boxes = [], []
        for layer in self.decoder:
            tgt = layer(tgt, qp, mem, pos)
            h = self.dec_norm(tgt)
            logits.append(self.class_head(h))
            boxes.append(torch.sigmoid(self.box_head(h)))
        return torch.stack(logits), torch.stack(boxes)

    def forward(self, x: torch.Tensor) -> Any:
        logits, boxes = self.heads(x)
        if self.training:
            return {"logits": logits, "boxes": boxes}
        return self.detections(logits[-1], boxes[-1])

    def detections(self, logits: torch.Tensor, boxes: torch.Tensor) -> dict[str, torch.Tensor]:
        """Last-layer predictions → all Q queries sorted by score (no NMS), ``num_dets`` above the threshold."""
        prob = torch.softmax(logits, -1)[..., : self.num_classes]
        scores, classes = prob.max(-1)
        order = torch.argsort(scores, dim=1, descending=True)
        scores = torch.gather(scores, 1, order)
        classes = torch.gather(classes, 1, order)
        xyxy = cxcywh_to_xyxy(boxes) * float(self.input_size)
        xyxy = torch.gather(xyxy, 1, order.unsqueeze(-1).expand(-1, -1, 4))
        num = (scores >= self.score_threshold).sum(1).to(torch.int64)
        return {"boxes": xyxy, "scores": scores, "classes": classes.to(torch.int64), "num_dets": num}

    # ------------------------------------------------------------------------------------------ training
    @torch.no_grad()
    def match(
        self, logits: torch.Tensor, boxes: torch.Tensor, tgt_labels: torch.Tensor, tgt_boxes: torch.Tensor
    ) -> tuple[np.ndarray, np.ndarray]:
        """Hungarian matching of one image: (query indices, target indices) minimising
        ``-cost_class·p(class) + cost_bbox·L1(cxcywh) - cost_giou·GIoU``."""
        from scipy.optimize import linear_sum_assignment

        if tgt_labels.numel() == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        prob = logits.softmax(-1)[:, tgt_labels]  # [Q, T]
        l1 = torch.cdist(boxes, tgt_boxes, p=1)
        giou = generalized_box_iou(cxcywh_to_xyxy(boxes), cxcywh_to_xyxy(tgt_boxes))
        cost = self.cost_bbox * l1 - self.cost_class * prob - self.cost_giou * giou
        qi, ti = linear_sum_assignment(cost.cpu().numpy())
        return qi.astype(np.int64), ti.astype(np.int64)

    def set_loss(
        self, logits: torch.Tensor, boxes: torch.Tensor, targets: list[dict[str, torch.Tensor]]
    ) -> dict[str, torch.Tensor]:
        """One decoder layer's loss over the batch: weighted CE (no-object down-weighted) + L1 + GIoU on matches."""
        b, q, _ = logits.shape
        cls_t = torch.full((b, q), self.num_classes, dtype=torch.int64, device=logits.device)
        src_b, tgt_b = [], []
        for i, t in enumerate(targets):
            labels = t["labels"].long().reshape(-1)
            tb = xyxy_to_cxcywh(t["boxes"].float().reshape(-1, 4)) / float(self.input_size)
            qi, ti = self.match(logits[i], boxes[i], labels, tb)
            cls_t[i, torch.as_tensor(qi)] = labels[torch.as_tensor(ti)]
            src_b.append(boxes[i, torch.as_tensor(qi)])
            tgt_b.append(tb[torch.as_tensor(ti)])
        weight = torch.ones(self.num_classes + 1, device=logits.device)
        weight[-1] = self.eos_coef
        loss_ce = F.cross_entropy(logits.reshape(-1, self.num_classes + 1), cls_t.reshape(-1), weight)
        sb, tbx = torch.cat(src_b), torch.cat(tgt_b)
        n = max(int(sb.shape[0]), 1)
        loss_l1 = F.l1_loss(sb, tbx, reduction="sum") / n
        loss_giou = (1 - elementwise_giou(cxcywh_to_xyxy(sb), cxcywh_to_xyxy(tbx))).sum() / n
        return {"loss_ce": loss_ce, "loss_bbox": loss_l1, "loss_giou": loss_giou}

    def compute_loss(self, outputs: Any, targets: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if not isinstance(outputs, dict) or "logits" not in outputs:
            return {"loss": torch.zeros(())}  # eval-mode outputs are detections: no loss there
        total = torch.zeros((), device=outputs["logits"].device)
        last: dict[str, torch.Tensor] = {}
        for lg, bx in zip(outputs["logits"], outputs["boxes"]):  # every decoder layer (auxiliary losses)
            last = self.set_loss(lg, bx, targets)
            total = (
                total
                + self.cost_class * last["loss_ce"]
                + self.cost_bbox * last["loss_bbox"]
                + self.cost_giou * last["loss_giou"]
            )
        return {"loss": total, **{k: v.detach() for k, v in last.items()}}

    @torch.no_grad()
    def postprocess(self, outputs: Any, **_: Any) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        if "logits" in outputs:
            outputs = self.detections(outputs["logits"][-1], outputs["boxes"][-1])
        res = []
        for i in range(outputs["boxes"].shape[0]):
            n = int(outputs["num_dets"][i])
            res.append((outputs["boxes"][i, :n], outputs["scores"][i, :n], outputs["classes"][i, :n]))
        return res

    def set_postprocess(self, score_threshold: float, iou_threshold: float, max_det: int) -> None:
        self.score_threshold = score_threshold  # no NMS: the IoU threshold has nothing to act on

    def decode_info(self) -> dict[str, Any]:
        return {"num_classes": self.num_classes}


_DET: dict[str, Any] = {
    "task": "detect",
    "mean": (0.0, 0.0, 0.0),
    "std": (1.0, 1.0, 1.0),
    "resize": "letterbox",
    "scale": 1.0 / 255.0,
    "family": "detr",
}


@register_model(input_size=(3, 96, 96), num_classes=8, **_DET)
def detr_shapes(**kwargs: Any) -> DETR:
    """DETR-style detector for the 96 px shapes: the shipped shapes classifier's features to stride 16, a 2-layer
    encoder and 3-layer decoder (dim 96, 4 heads), 12 object queries."""
    return build_variant("detr_shapes", DETR, {"backbone": "shapes_classifier"}, **kwargs)


@register_model(input_size=(3, 64, 64), num_classes=8, tiny=True, **_DET)
def detr_tiny(**kwargs: Any) -> DETR:
    """Test variant: 4-stage conv backbone (8…32), dim 32, 1 encoder + 2 decoder layers, 6 queries, 64 px."""
    return build_variant(
        "detr_tiny",
        DETR,
        {
            "input_size": 64,
            "dim": 32,
            "heads": 2,
            "enc_layers": 1,
            "dec_layers": 2,
            "num_queries": 6,
            "widths": (8, 16, 16, 32),
        },
        **kwargs,
    )
