"""A small DETR (Carion et al. 2020) with the DETR-family changes that make it converge in minutes on CPU:
CNN backbone → 1×1 projections (stride 16 plus a stride-8 level, summed: small objects) + fixed sine positions →
transformer encoder → transformer decoder whose object queries attend to each other (self-attention) and to the
encoded image (encoder–decoder "context" attention) → per query C class logits and a box. Trained as set
prediction: each ground-truth box is matched to one query by the Hungarian algorithm
(``scipy.optimize.linear_sum_assignment`` on class + L1 + GIoU costs), unmatched queries learn "no object", and
every decoder layer gets the loss (auxiliary losses, as in the paper).

What differs from the 2020 paper, each from a published DETR variant:

* object queries are boxes (DAB-DETR, Liu et al. 2022): a query's positional embedding is an MLP of the sine
  embedding of its current box, so the encoder–decoder attention looks where the box is; the first boxes are
  learnable anchors, or (``two_stage``, Deformable DETR's two-stage variant with RT-DETR's query selection) the
  top-scoring boxes that the encoder tokens predict, their loss the same Hungarian set loss;
* iterative box refinement (Deformable DETR, Zhu et al. 2021): each decoder layer predicts an offset to the
  previous layer's box in inverse-sigmoid space; the next layer starts from that box (detached);
* sigmoid focal classification (Deformable / Conditional DETR): C independent sigmoids, no "no object" class,
  focal cost in the matching and focal loss (weights class 2, L1 5, GIoU 2);
* fixed 2-D sine positions for the image tokens (as the paper), in the same embedding as the anchors.

No NMS anywhere: the one-to-one matching teaches the queries not to duplicate. In eval mode ``forward`` returns the
same four outputs as the graph-NMS detectors (``boxes`` [B,K,4] xyxy input pixels, ``scores``, ``classes``,
``num_dets``; K = number of queries, sorted by score, ``num_dets`` = how many clear ``score_threshold``), so the
export is the model itself and the contract's decode says ``nms: none``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgecv.errors import ConfigError
from edgecv.zoo.detection.boxes import cxcywh_to_xyxy, elementwise_giou, generalized_box_iou, xyxy_to_cxcywh
from edgecv.zoo.detection.settings import DetAugment
from edgecv.zoo.families.edge import SHAPES_MEAN, SHAPES_STD
from edgecv.zoo.families.faster_rcnn import SmallBackbone
from edgecv.zoo.layers import MultiHeadCrossAttention
from edgecv.zoo.layers.attention import Mlp
from edgecv.zoo.registry import build_variant, detector_cfg, register_model


def sine_embed(coords: torch.Tensor, dim_per_coord: int, temperature: float = 10000.0) -> torch.Tensor:
    """Sine/cosine embedding of coordinates in [0, 1]: ``[..., k]`` → ``[..., k * dim_per_coord]`` (each coordinate
    scaled by 2π and divided by ``temperature ** (2i / dim_per_coord)``; sin on even, cos on odd channels)."""
    i = torch.arange(dim_per_coord, dtype=torch.float32, device=coords.device)
    dim_t = temperature ** (2 * torch.div(i, 2, rounding_mode="floor") / dim_per_coord)
    pos = coords.unsqueeze(-1) * (2 * math.pi) / dim_t  # [..., k, d]
    emb = torch.stack((pos[..., 0::2].sin(), pos[..., 1::2].cos()), -1).flatten(-2)
    return emb.flatten(-2)


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    x = x.clamp(0.0, 1.0)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


class EncoderLayer(nn.Module):
    """Pre-norm DETR encoder layer: self-attention with the positions added to queries and keys (not values)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 2.0) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = MultiHeadCrossAttention(dim, num_heads)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), "relu")

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h + pos, h + pos, h)
        return x + self.mlp(self.norm2(x))


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
        num_classes: C (sigmoid per class; "no object" is all C low).
        input_size: square input side (a multiple of 16).
        dim, heads, enc_layers, dec_layers, num_queries: transformer size.
        stride: 16 (backbone output only) or 8 (plus the backbone's stride-8 features, the stride-16 level
            up-sampled ×2 and added): ``(input_size / stride)²`` memory tokens.
        backbone / backbone_kwargs / widths: a zoo model cut at stride 16, or a small conv backbone.
        backbone_lr_scale: the backbone's learning rate relative to the recipe's (DETR trains its pretrained
            backbone 10× slower than the transformer).
        two_stage: Deformable DETR's two-stage variant with RT-DETR's query selection: every encoder token
            predicts a class and a box (relative to its cell), trained with the same Hungarian set loss; the
            ``num_queries`` top-scoring tokens give the decoder its first boxes and content (both detached). Without
            it the queries start from learnable anchor boxes (DAB-DETR).
        cost_class, cost_bbox, cost_giou: Hungarian matching weights, equal to the loss weights (2 / 5 / 2).
        focal_alpha, focal_gamma: sigmoid focal loss (Lin et al. 2017) parameters.
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
        stride: int = 16,
        backbone: str | None = None,
        backbone_kwargs: dict[str, Any] | None = None,
        widths: tuple[int, ...] = (16, 32, 64, 128),
        backbone_lr_scale: float = 1.0,
        two_stage: bool = False,
        cost_class: float = 2.0,
        cost_bbox: float = 5.0,
        cost_giou: float = 2.0,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        score_threshold: float = 0.001,
        train_aug: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if input_size % 16:
            raise ConfigError(f"detr input_size: expected a multiple of 16 (stride-16 backbone), found {input_size}")
        if stride not in (8, 16):
            raise ConfigError(f"detr stride: expected 8 or 16, found {stride}")
        if dim % 4:
            raise ConfigError(f"detr dim: expected a multiple of 4 (sine embedding of 4 box coordinates), found {dim}")
        self.num_classes, self.input_size, self.num_queries = num_classes, input_size, num_queries
        self.train_aug = DetAugment.from_dict(train_aug)
        self.backbone = SmallBackbone(widths, backbone, backbone_kwargs)
        self.split, c8 = self._stride8_split(self.backbone.body)
        self.stride = stride
        self.proj = nn.Conv2d(self.backbone.out_channels, dim, 1)
        self.proj8 = nn.Conv2d(c8, dim, 1) if stride == 8 else None
        self.in_norm = nn.GroupNorm(1, dim)
        side = input_size // stride
        ys, xs = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
        centers = torch.stack([(xs.flatten() + 0.5) / side, (ys.flatten() + 0.5) / side], -1).float()
        self.register_buffer("pos", sine_embed(centers, dim // 2).unsqueeze(0), persistent=False)  # [1, HW, D]
        self.encoder = nn.ModuleList([EncoderLayer(dim, heads) for _ in range(enc_layers)])
        self.two_stage = two_stage
        if two_stage:
            # per encoder token: a box relative to its cell (centre, side 0.25) and C class logits
            wh = torch.full_like(centers, 0.25)
            self.register_buffer("token_anchors", inverse_sigmoid(torch.cat([centers, wh], 1)).unsqueeze(0), False)
            self.enc_norm = nn.LayerNorm(dim)
            self.enc_class = nn.Linear(dim, num_classes)
            enc_out = nn.Linear(dim, 4)
            nn.init.zeros_(enc_out.weight)
            nn.init.zeros_(enc_out.bias)
            self.enc_box = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), enc_out)
            nn.init.constant_(self.enc_class.bias, -math.log((1 - 0.01) / 0.01))
        else:
            # the object queries: learnable anchor boxes (cx, cy, w, h) in inverse-sigmoid space, centres on a grid
            g = math.ceil(math.sqrt(num_queries))
            k = torch.arange(num_queries)
            init = torch.stack(
                [((k % g) + 0.5) / g, ((k // g) + 0.5) / g, torch.full_like(k, 1), torch.full_like(k, 1)], 1
            )
            init = init.float() * torch.tensor([1.0, 1.0, 0.2, 0.2])
            self.anchors = nn.Parameter(inverse_sigmoid(init))
        # sine(anchor) [4 · D/2] → query position [D] (DAB-DETR's ref_point_head)
        self.query_pos_head = nn.Sequential(nn.Linear(2 * dim, dim), nn.ReLU(), nn.Linear(dim, dim))
        self.decoder = nn.ModuleList([DecoderLayer(dim, heads) for _ in range(dec_layers)])
        self.dec_norm = nn.LayerNorm(dim)
        self.class_head = nn.Linear(dim, num_classes)
        hidden = [nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim), nn.ReLU()]
        box_out = nn.Linear(dim, 4)
        nn.init.zeros_(box_out.weight)  # zero offsets: layer 0 starts at the anchors
        nn.init.zeros_(box_out.bias)
        self.box_head = nn.Sequential(*hidden, box_out)
        nn.init.constant_(self.class_head.bias, -math.log((1 - 0.01) / 0.01))  # prior 0.01: focal loss init
        self.cost_class, self.cost_bbox, self.cost_giou = cost_class, cost_bbox, cost_giou
        self.focal_alpha, self.focal_gamma = focal_alpha, focal_gamma
        self.lr_scale = {"backbone.": backbone_lr_scale} if backbone_lr_scale != 1.0 else {}
        self.score_threshold = score_threshold

    @staticmethod
    def _stride8_split(body: nn.Sequential) -> tuple[int, int]:
        """Index of the last backbone module at stride 8 (≤ 8) and its channels."""
        x, idx, ch = torch.zeros(1, 3, 64, 64), -1, 3
        was = body.training
        body.eval()
        with torch.no_grad():
            for i, m in enumerate(body):
                x = m(x)
                if 64 // x.shape[-1] <= 8:
                    idx, ch = i, int(x.shape[1])
        body.train(was)
        return idx, ch

    # ------------------------------------------------------------------------------------------ network
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Image tokens ``[B, HW, D]`` at the model's stride."""
        body = self.backbone.body
        f8 = x
        for m in body[: self.split + 1]:
            f8 = m(f8)
        f = f8
        for m in body[self.split + 1 :]:
            f = m(f)
        f = self.proj(f)
        if self.proj8 is not None:
            f = F.interpolate(f, scale_factor=2.0, mode="nearest") + self.proj8(f8)
        return self.in_norm(f).flatten(2).transpose(1, 2)

    def heads(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per decoder layer: class logits ``logits`` ``[L, B, Q, C]`` and ``boxes`` ``[L, B, Q, 4]`` (cxcywh in
        [0, 1]); two-stage also the encoder tokens' ``enc_logits`` ``[B, HW, C]`` and ``enc_boxes``."""
        mem = self.features(x)
        pos = self.pos
        for enc in self.encoder:
            mem = enc(mem, pos)
        b, d = x.shape[0], mem.shape[-1]
        out: dict[str, torch.Tensor] = {}
        if self.two_stage:
            e = self.enc_norm(mem)
            enc_logits = self.enc_class(e)
            enc_boxes = torch.sigmoid(self.enc_box(e) + self.token_anchors)
            top = torch.topk(enc_logits.max(-1).values, self.num_queries, dim=1).indices  # [B, Q]
            ref = torch.gather(enc_boxes, 1, top.unsqueeze(-1).expand(-1, -1, 4)).detach()
            tgt = torch.gather(mem, 1, top.unsqueeze(-1).expand(-1, -1, d)).detach()
            out = {"enc_logits": enc_logits, "enc_boxes": enc_boxes}
        else:
            ref = torch.sigmoid(self.anchors).unsqueeze(0).repeat(b, 1, 1)  # [B, Q, 4]
            tgt = torch.zeros(b, self.num_queries, d, dtype=mem.dtype, device=mem.device)
        logits, boxes = [], []
        for layer in self.decoder:
            qp = self.query_pos_head(sine_embed(ref, d // 2))
            tgt = layer(tgt, qp, mem, pos)
            h = self.dec_norm(tgt)
            logits.append(self.class_head(h))
            box = torch.sigmoid(self.box_head(h) + inverse_sigmoid(ref))
            boxes.append(box)
            ref = box.detach()  # iterative refinement: the next layer starts here, gradients stay per layer
        return {"logits": torch.stack(logits), "boxes": torch.stack(boxes), **out}

    def forward(self, x: torch.Tensor) -> Any:
        out = self.heads(x)
        if self.training:
            return out
        return self.detections(out["logits"][-1], out["boxes"][-1])

    def detections(self, logits: torch.Tensor, boxes: torch.Tensor) -> dict[str, torch.Tensor]:
        """Last-layer predictions → all Q queries sorted by score (no NMS), ``num_dets`` above the threshold."""
        scores, classes = torch.sigmoid(logits).max(-1)
        order = torch.argsort(scores, dim=1, descending=True)
        scores = torch.gather(scores, 1, order)
        classes = torch.gather(classes, 1, order)
        xyxy = cxcywh_to_xyxy(boxes) * float(self.input_size)
        xyxy = torch.gather(xyxy, 1, order.unsqueeze(-1).expand(-1, -1, 4))
        num = (scores >= self.score_threshold).sum(1).to(torch.int64)
        return {"boxes": xyxy, "scores": scores, "classes": classes.to(torch.int64), "num_dets": num}

    # ------------------------------------------------------------------------------------------ training
    def focal_class_cost(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Deformable DETR's matching cost ``[Q, T]``: focal loss of calling the query positive for the target's
        class minus that of calling it negative."""
        p = logits.sigmoid()[:, labels]
        a, g = self.focal_alpha, self.focal_gamma
        neg = (1 - a) * p**g * -torch.log(1 - p + 1e-8)
        pos = a * (1 - p) ** g * -torch.log(p + 1e-8)
        return pos - neg

    def _cost(self, logits: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        """Matching cost ``[N, T]`` of N predictions against T targets:
        ``cost_class·focal + cost_bbox·L1(cxcywh) - cost_giou·GIoU``."""
        l1 = torch.cdist(boxes, tgt, p=1)
        giou = generalized_box_iou(cxcywh_to_xyxy(boxes), cxcywh_to_xyxy(tgt))
        return self.cost_class * self.focal_class_cost(logits, labels) + self.cost_bbox * l1 - self.cost_giou * giou

    @torch.no_grad()
    def match(
        self, logits: torch.Tensor, boxes: torch.Tensor, tgt_labels: torch.Tensor, tgt_boxes: torch.Tensor
    ) -> tuple[np.ndarray, np.ndarray]:
        """Hungarian matching of one image: (query indices, target indices) of the minimum total cost."""
        from scipy.optimize import linear_sum_assignment

        if tgt_labels.numel() == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        qi, ti = linear_sum_assignment(self._cost(logits, boxes, tgt_labels, tgt_boxes).cpu().numpy())
        return qi.astype(np.int64), ti.astype(np.int64)

    @torch.no_grad()
    def match_batch(
        self, logits: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor, tgt: torch.Tensor, sizes: list[int]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Hungarian matching of a batch (DETR's way: one cost matrix of every query against every target of the
        batch, then one assignment per image on its block). Targets are concatenated, ``sizes`` per image.
        Returns (image, query, index into the concatenated targets) of each match."""
        from scipy.optimize import linear_sum_assignment

        b, q = logits.shape[:2]
        empty = torch.zeros(0, dtype=torch.int64)
        if sum(sizes) == 0:
            return empty, empty, empty
        cost = self._cost(logits.flatten(0, 1), boxes.flatten(0, 1), labels, tgt).reshape(b, q, -1).cpu().numpy()
        bi, qi, ti = [], [], []
        start = 0
        for i, n in enumerate(sizes):
            if n:
                r, c = linear_sum_assignment(cost[i, :, start : start + n])
                bi.append(np.full(len(r), i))
                qi.append(r)
                ti.append(c + start)
            start += n
        return tuple(torch.as_tensor(np.concatenate(v).astype(np.int64)) for v in (bi, qi, ti))  # type: ignore[return-value]

    def set_loss(
        self, logits: torch.Tensor, boxes: torch.Tensor, targets: list[dict[str, torch.Tensor]]
    ) -> dict[str, torch.Tensor]:
        """One decoder layer's loss over the batch: sigmoid focal loss on every query (one-hot on matches, all zero
        elsewhere) + L1 + GIoU on matches, each divided by the number of target boxes."""
        from torchvision.ops import sigmoid_focal_loss

        labels = torch.cat([t["labels"].long().reshape(-1) for t in targets]).to(logits.device)
        tgt = torch.cat([t["boxes"].float().reshape(-1, 4) for t in targets]).to(logits.device)
        tgt = xyxy_to_cxcywh(tgt) / float(self.input_size)
        bi, qi, ti = self.match_batch(logits, boxes, labels, tgt, [int(t["labels"].numel()) for t in targets])
        bi, qi, ti = bi.to(logits.device), qi.to(logits.device), ti.to(logits.device)
        onehot = torch.zeros_like(logits)
        onehot[bi, qi, labels[ti]] = 1.0
        sb, tbx = boxes[bi, qi], tgt[ti]
        n = max(int(sb.shape[0]), 1)
        loss_ce = sigmoid_focal_loss(logits, onehot, self.focal_alpha, self.focal_gamma, "sum") / n
        loss_l1 = F.l1_loss(sb, tbx, reduction="sum") / n
        loss_giou = (1 - elementwise_giou(cxcywh_to_xyxy(sb), cxcywh_to_xyxy(tbx))).sum() / n
        return {"loss_ce": loss_ce, "loss_bbox": loss_l1, "loss_giou": loss_giou}

    def compute_loss(self, outputs: Any, targets: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if not isinstance(outputs, dict) or "logits" not in outputs:
            return {"loss": torch.zeros(())}  # eval-mode outputs are detections: no loss there
        total = torch.zeros((), device=outputs["logits"].device)
        last: dict[str, torch.Tensor] = {}
        layers = list(zip(outputs["logits"], outputs["boxes"]))  # every decoder layer (auxiliary losses)
        if "enc_logits" in outputs:  # two-stage: the encoder's token predictions get the same set loss
            layers.insert(0, (outputs["enc_logits"], outputs["enc_boxes"]))
        for lg, bx in layers:
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


_DET = detector_cfg("detr")


@register_model(input_size=(3, 96, 96), num_classes=8, **{**_DET, "mean": SHAPES_MEAN, "std": SHAPES_STD})
def detr_shapes(**kwargs: Any) -> DETR:
    """DETR-style detector for the 96 px shapes: the shipped shapes classifier's features (stride 16 + stride 8,
    12×12 tokens; its mean/std), a 2-layer encoder and 4-layer decoder (dim 128, 4 heads), 10 anchor-box queries
    (at most 5 objects per image), backbone at 0.1× the learning rate."""
    arch = {
        "backbone": "shapes_classifier",
        "dim": 128,
        "dec_layers": 4,
        "num_queries": 10,
        "stride": 8,
        "backbone_lr_scale": 0.1,
        "two_stage": True,
    }
    return build_variant("detr_shapes", DETR, arch, **kwargs)


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
