"""R-CNN (Girshick et al. 2014) and Fast R-CNN (Girshick 2015) over selective search proposals.

Both detectors take the image and its proposals: ``forward(x, rois)`` with ``rois`` [K,5] = (batch index, x1, y1,
x2, y2) in input pixels — the layout of ONNX ``MaxRoiPool`` — and return per-proposal, per-class outputs:

- ``roi_scores`` [K,C] in [0, 1], ``roi_boxes`` [K,C,4] class-specific regressed xyxy boxes (input pixels,
  clipped), ``roi_batch`` [K] (the batch index of each row).

Per-class NMS runs afterwards (:meth:`postprocess` in torch; on the host from the bundle contract,
``decode.format: proposals``). Without ``rois`` (``rois=None``) the module runs selective search itself
(:mod:`edgecv.tasks.proposals`, OpenCV contrib), so the trainer's evaluation needs nothing else.

- :class:`RCNN`: every proposal is warped to ``crop_size``² (anisotropic bilinear warp, with the paper's context
  padding of 16 px at 227) — in the graph, as RoIAlign on the image with one sample per bin — then a CNN (the zoo
  backbone) → fc features; one linear SVM per class (hinge loss, positives = ground-truth boxes, negatives = IoU <
  0.3, the paper's rule) on those features; class-specific box regression (least squares on the pooled conv
  features, "pool5", of proposals with IoU ≥ 0.6). The CNN itself is fine-tuned with a softmax over C + 1 classes
  (IoU ≥ 0.5 positives), as in the paper; the SVMs and regressors see detached features, so they are trained on the
  CNN's features rather than through them. Scores are ``sigmoid(SVM margin)`` (a monotone map, so ranking and NMS
  are the SVM's).
- :class:`FastRCNN`: one shared feature map per image, RoI max pooling (``roi="pool"``, ONNX ``MaxRoiPool``) or
  RoIAlign (``roi="align"``, ONNX ``RoiAlign``), two fc layers, softmax classifier (C + 1) and class-specific box
  regressor trained together with the multitask loss (cross-entropy + λ·smooth L1, λ = 1), 25 % foreground
  (IoU ≥ 0.5) and background from IoU [0.1, 0.5).

Box targets are encoded as in both papers (centre offsets / size, log scale ratios), normalised by (10, 10, 5, 5).
Proposals of the training images are cached per image content (selective search is the slow part; the recipes
turn augmentation off so the cache hits from the second epoch on).
"""

from __future__ import annotations

import hashlib
import math
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import batched_nms, box_iou, roi_align, roi_pool

from edgecv.errors import ConfigError
from edgecv.tasks.proposals import MODES, selective_search
from edgecv.zoo.families.faster_rcnn import SmallBackbone
from edgecv.zoo.registry import build_variant, detector_cfg, register_model

BOX_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
_CLAMP = math.log(1000.0 / 16)
#: R-CNN's context padding: 16 pixels of context around the warped 227-pixel crop
CONTEXT_PAD = 16.0 / 227.0
OUTPUTS = ["roi_scores", "roi_boxes", "roi_batch"]


def encode_boxes(gt: torch.Tensor, prop: torch.Tensor) -> torch.Tensor:
    """Regression targets (tx, ty, tw, th)·(10, 10, 5, 5) of ``gt`` [N,4] w.r.t. proposals ``prop`` [N,4]."""
    pw, ph = (prop[:, 2] - prop[:, 0]).clamp(min=1e-3), (prop[:, 3] - prop[:, 1]).clamp(min=1e-3)
    px, py = prop[:, 0] + 0.5 * pw, prop[:, 1] + 0.5 * ph
    gw, gh = (gt[:, 2] - gt[:, 0]).clamp(min=1e-3), (gt[:, 3] - gt[:, 1]).clamp(min=1e-3)
    gx, gy = gt[:, 0] + 0.5 * gw, gt[:, 1] + 0.5 * gh
    wx, wy, ww, wh = BOX_WEIGHTS
    return torch.stack(
        [wx * (gx - px) / pw, wy * (gy - py) / ph, ww * torch.log(gw / pw), wh * torch.log(gh / ph)], dim=1
    )


def decode_boxes(deltas: torch.Tensor, prop: torch.Tensor, size: int) -> torch.Tensor:
    """Class-specific deltas [K,C,4] on proposals [K,4] → boxes [K,C,4] xyxy clipped to a ``size``² image."""
    pw, ph = (prop[:, 2] - prop[:, 0])[:, None], (prop[:, 3] - prop[:, 1])[:, None]
    px, py = prop[:, 0:1] + 0.5 * pw, prop[:, 1:2] + 0.5 * ph
    wx, wy, ww, wh = BOX_WEIGHTS
    dx, dy = deltas[..., 0] / wx, deltas[..., 1] / wy
    dw, dh = (deltas[..., 2] / ww).clamp(max=_CLAMP), (deltas[..., 3] / wh).clamp(max=_CLAMP)
    cx, cy = px + dx * pw, py + dy * ph
    w, h = pw * torch.exp(dw), ph * torch.exp(dh)
    boxes = torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)
    return boxes.clamp(0.0, float(size))


class _ProposalDetector(nn.Module):
    """What R-CNN and Fast R-CNN share: proposals, RoI sampling, the outputs and post-processing."""

    #: the module takes (image, rois); export and ``edgecv run`` feed rois from the host
    proposals_input = True
    input_names: ClassVar[list[str]] = ["input", "rois"]

    def __init__(
        self,
        num_classes: int,
        input_size: int,
        max_proposals: int,
        ss_mode: str,
        min_proposal: float,
        rois_per_image: int,
        fg_fraction: float,
        max_det: int,
        score_threshold: float,
        iou_threshold: float,
    ) -> None:
        super().__init__()
        if ss_mode not in MODES:
            raise ConfigError(f"ss_mode: expected one of {', '.join(MODES)}, found '{ss_mode}'")
        self.num_classes, self.input_size = num_classes, input_size
        self.max_proposals, self.ss_mode, self.min_proposal = max_proposals, ss_mode, min_proposal
        self.rois_per_image, self.fg_fraction = rois_per_image, fg_fraction
        self.max_det, self.score_threshold, self.iou_threshold = max_det, score_threshold, iou_threshold
        self.train_aug = None
        self._cache: dict[bytes, np.ndarray] = {}

    # ------------------------------------------------------------------ proposals
    def proposals_spec(self) -> dict[str, Any]:
        """The contract's ``decode.proposals``: how the host makes the ``rois`` input per frame."""
        return {
            "input": "rois",
            "method": "selective_search",
            "max_proposals": self.max_proposals,
            "mode": self.ss_mode,
            "min_size": self.min_proposal,
        }

    def image_proposals(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Selective search on each image of the batch (inputs in [0, 1]) → [N_i,4] xyxy, cached by content."""
        out = []
        imgs = (x.detach().clamp(0, 1) * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        for img in imgs:
            key = hashlib.blake2b(img.tobytes(), digest_size=16).digest()
            boxes = self._cache.get(key)
            if boxes is None:
                boxes = selective_search(img, self.max_proposals, self.ss_mode, self.min_proposal)
                if len(self._cache) < 100_000:
                    self._cache[key] = boxes
            out.append(torch.from_numpy(boxes).to(x.device))
        return out

    def example_inputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(image, rois) for an export check: the module's own proposals of ``x``."""
        return x, _rois(self.image_proposals(x), x)

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor, rois: torch.Tensor | None = None) -> Any:
        if self.training:
            return {"images": x}  # the losses need the targets: compute_loss samples the proposals
        if rois is None:
            rois = _rois(self.image_proposals(x), x)
        scores, deltas = self.score_rois(x, rois)
        boxes = decode_boxes(deltas.reshape(-1, self.num_classes, 4), rois[:, 1:], self.input_size)
        return {"roi_scores": scores, "roi_boxes": boxes, "roi_batch": rois[:, 0]}

    def score_rois(self, x: torch.Tensor, rois: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-RoI class scores [K,C] in [0, 1] and class-specific deltas [K,C·4]."""
        raise NotImplementedError

    # ------------------------------------------------------------------ training
    def sample(
        self, props: torch.Tensor, gt: torch.Tensor, labels: torch.Tensor, gen: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training RoIs of one image: the ground truth plus proposals, ``fg_fraction`` foreground (IoU ≥ 0.5)
        and background from IoU [0.1, 0.5) (any IoU < 0.5 when that range is empty).

        Returns boxes [R,4], labels [R] (0 background, 1..C), max IoU [R], matched ground truth [R,4] and its
        class [R] (1..C, whatever the IoU; 0 in an image without boxes)."""
        cand = torch.cat([gt, props]) if gt.numel() else props
        if gt.numel():
            iou = box_iou(cand, gt)
            best, idx = iou.max(1)
            lab, matched = labels[idx] + 1, gt[idx]
        else:
            best = torch.zeros(len(cand), device=cand.device)
            lab, matched = torch.zeros(len(cand), dtype=torch.int64, device=cand.device), cand.clone()
        n_gt = len(gt)
        fg = torch.nonzero(best >= 0.5).flatten()
        bg = torch.nonzero((best < 0.5) & (best >= 0.1)).flatten()
        if bg.numel() == 0:
            bg = torch.nonzero(best < 0.5).flatten()
        n_fg = min(int(round(self.rois_per_image * self.fg_fraction)), fg.numel())
        # every ground-truth box is kept (R-CNN's SVM positives), the other foreground is sampled
        rest = fg[fg >= n_gt]
        fg = torch.cat([fg[fg < n_gt], rest[torch.randperm(rest.numel(), generator=gen)[: max(0, n_fg - n_gt)]]])
        n_bg = min(self.rois_per_image - fg.numel(), bg.numel())
        bg = bg[torch.randperm(bg.numel(), generator=gen)[:n_bg]]
        keep = torch.cat([fg, bg])
        cls = lab.clone()
        lab = lab.clone()
        lab[best < 0.5] = 0
        return cand[keep], lab[keep], best[keep], matched[keep], cls[keep]

    def _batch_samples(
        self, x: torch.Tensor, targets: list[dict[str, Any]]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        props = self.image_proposals(x)
        rois, labs, ious, gts, cls = [], [], [], [], []
        for b, (p, t) in enumerate(zip(props, targets)):
            gt = t["boxes"].float().reshape(-1, 4).to(x.device)
            boxes, lab, iou, matched, c = self.sample(p, gt, t["labels"].long().reshape(-1).to(x.device))
            rois.append(torch.cat([torch.full((len(boxes), 1), float(b), device=x.device), boxes], 1))
            labs.append(lab)
            ious.append(iou)
            gts.append(matched)
            cls.append(c)
        return torch.cat(rois), torch.cat(labs), torch.cat(ious), torch.cat(gts), torch.cat(cls)

    # ------------------------------------------------------------------ post-processing
    def set_postprocess(self, score_threshold: float, iou_threshold: float, max_det: int) -> None:
        self.score_threshold, self.iou_threshold, self.max_det = score_threshold, iou_threshold, max_det

    @torch.no_grad()
    def postprocess(self, outputs: Any, **_: Any) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Per image: every (proposal, class) pair over the score threshold, per-class NMS, the ``max_det`` best."""
        scores, boxes, batch = outputs["roi_scores"], outputs["roi_boxes"], outputs["roi_batch"].long()
        n_img = int(batch.max()) + 1 if batch.numel() else 0
        res = []
        for b in range(n_img):
            m = batch == b
            s, bx = scores[m], boxes[m]
            r, c = torch.nonzero(s >= self.score_threshold, as_tuple=True)
            sc, bb = s[r, c], bx[r, c]
            keep = batched_nms(bb, sc, c, self.iou_threshold)[: self.max_det]
            res.append((bb[keep], sc[keep], c[keep]))
        return res

    def decode_info(self) -> dict[str, Any]:
        return {"num_classes": self.num_classes, "format": "proposals", "proposals": self.proposals_spec()}


def _rois(props: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    rows = [torch.cat([torch.full((len(p), 1), float(b), device=x.device), p.float()], 1) for b, p in enumerate(props)]
    return torch.cat(rows) if rows else x.new_zeros(0, 5)


class RCNN(_ProposalDetector):
    """R-CNN: warp every proposal, CNN features, per-class linear SVMs + class-specific box regression.

    Args:
        num_classes: C. input_size: square input side. crop_size: the warped proposal side (the paper's 227).
        context_pad: context added around each proposal, as a fraction of the warped side (paper 16/227).
        widths / backbone / backbone_kwargs: the CNN (faster_rcnn's :class:`SmallBackbone`).
        representation: fc feature width ("fc7"). svm_c: L2 weight on the SVMs; svm_pos_weight: weight of positives.
        bbox_iou: proposals at least this close to a ground truth train the box regressor (paper 0.6);
        bbox_l2: ridge weight on the regressor.
        max_proposals, ss_mode, min_proposal: selective search (the paper: fast mode, ~2000 proposals).
        rois_per_image, fg_fraction: fine-tuning mini-batch per image (paper 128 per batch of 32 + 96).
    """

    def __init__(
        self,
        num_classes: int = 8,
        input_size: int = 128,
        crop_size: int = 64,
        context_pad: float = CONTEXT_PAD,
        widths: tuple[int, ...] = (16, 32, 64, 128),
        backbone: str | None = None,
        backbone_kwargs: dict[str, Any] | None = None,
        representation: int = 256,
        svm_c: float = 1e-3,
        svm_pos_weight: float = 2.0,
        bbox_iou: float = 0.6,
        bbox_l2: float = 1e-3,
        max_proposals: int = 2000,
        ss_mode: str = "fast",
        min_proposal: float = 4.0,
        rois_per_image: int = 32,
        fg_fraction: float = 0.25,
        max_det: int = 100,
        score_threshold: float = 0.001,
        iou_threshold: float = 0.3,
    ) -> None:
        super().__init__(
            num_classes,
            input_size,
            max_proposals,
            ss_mode,
            min_proposal,
            rois_per_image,
            fg_fraction,
            max_det,
            score_threshold,
            iou_threshold,
        )
        self.crop_size, self.context_pad = crop_size, context_pad
        self.svm_c, self.svm_pos_weight, self.bbox_iou, self.bbox_l2 = svm_c, svm_pos_weight, bbox_iou, bbox_l2
        self.cnn = SmallBackbone(widths, backbone, backbone_kwargs)
        with torch.no_grad():
            fmap = self.cnn.eval()(torch.zeros(1, 3, crop_size, crop_size)).shape[-1]
        self.pool5 = self.cnn.out_channels * fmap * fmap
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(self.pool5, representation), nn.ReLU(inplace=True))
        self.finetune = nn.Linear(representation, num_classes + 1)  # softmax fine-tuning head (not used at test)
        self.svm = nn.Linear(representation, num_classes)
        self.bbox = nn.Linear(self.pool5, num_classes * 4)
        nn.init.normal_(self.bbox.weight, std=0.001)
        nn.init.zeros_(self.bbox.bias)

    def warp(self, x: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        """Proposals [K,5] → warped crops [K,3,S,S]: the box grown by the context padding, bilinear samples."""
        s = float(self.crop_size)
        grow = s / max(s - 2.0 * self.context_pad * s, 1.0)
        c = (rois[:, 1:3] + rois[:, 3:5]) * 0.5
        half = (rois[:, 3:5] - rois[:, 1:3]) * (0.5 * grow)
        padded = torch.cat([rois[:, :1], c - half, c + half], 1)
        return roi_align(x, padded, (self.crop_size, self.crop_size), 1.0, sampling_ratio=1, aligned=True)

    def features(self, x: torch.Tensor, rois: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(pool5 [K,D5] flattened conv features, fc7 [K,D]) of the warped proposals."""
        pool5 = self.cnn(self.warp(x, rois)).flatten(1)
        return pool5, self.fc(pool5)

    def score_rois(self, x: torch.Tensor, rois: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pool5, fc7 = self.features(x, rois)
        return torch.sigmoid(self.svm(fc7)), self.bbox(pool5)

    def compute_loss(self, outputs: Any, targets: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if not isinstance(outputs, dict) or "images" not in outputs:
            return {"loss": torch.zeros(())}
        x = outputs["images"]
        rois, labels, ious, gts, near = self._batch_samples(x, targets)
        pool5, fc7 = self.features(x, rois)
        # 1. fine-tune the CNN with a softmax over C + 1 classes (IoU >= 0.5 positive)
        ce = F.cross_entropy(self.finetune(fc7), labels)
        # 2. one linear SVM per class on the (fixed) features: positives are the ground-truth boxes, negatives
        #    IoU < 0.3 with every box of that class; hinge loss (hard examples are the ones with a non-zero hinge)
        f = fc7.detach()
        margins = self.svm(f)
        is_gt = ious >= 0.999
        pos = F.one_hot(labels.clamp(min=1) - 1, self.num_classes).bool() & (labels > 0)[:, None] & is_gt[:, None]
        # IoU in [0.3, 1) with a box of the class (not the box itself) is ignored for that class
        near_c = F.one_hot(near.clamp(min=1) - 1, self.num_classes).bool() & (near > 0)[:, None]
        neg = ~(near_c & (ious >= 0.3)[:, None]) & ~pos
        y = pos.float() - neg.float()  # +1 / -1 / 0 (ignored)
        w = torch.where(pos, torch.full_like(margins, self.svm_pos_weight), neg.float())
        hinge = (w * F.relu(1.0 - y * margins)).sum() / w.sum().clamp(min=1.0)
        hinge = hinge + self.svm_c * self.svm.weight.pow(2).sum()
        # 3. class-specific box regression on pool5 (least squares, ridge), proposals with IoU >= bbox_iou
        m = (labels > 0) & (ious >= self.bbox_iou)
        if m.any():
            d = self.bbox(pool5.detach()[m]).reshape(-1, self.num_classes, 4)
            d = d[torch.arange(d.shape[0]), labels[m] - 1]
            reg = F.mse_loss(d, encode_boxes(gts[m], rois[m, 1:]), reduction="sum") / max(1, int(m.sum()))
        else:
            reg = pool5.sum() * 0.0
        reg = reg + self.bbox_l2 * self.bbox.weight.pow(2).sum()
        total = ce + hinge + reg
        return {"loss": total, "finetune_ce": ce.detach(), "svm_hinge": hinge.detach(), "bbox_ls": reg.detach()}


class FastRCNN(_ProposalDetector):
    """Fast R-CNN: one feature map per image, RoI pooling, two fc layers, softmax + box regression (multitask).

    Args:
        roi: ``pool`` (RoI max pooling, ONNX MaxRoiPool) or ``align`` (RoIAlign, ONNX RoiAlign).
        roi_size: the pooled H×W (paper 7). representation: fc width. loc_weight: λ of the multitask loss.
        rois_per_image: RoIs sampled per image (paper 64 with 2 images per batch). Others as :class:`RCNN`.
    """

    def __init__(
        self,
        num_classes: int = 8,
        input_size: int = 128,
        roi: str = "pool",
        roi_size: int = 7,
        widths: tuple[int, ...] = (16, 32, 64, 128),
        backbone: str | None = None,
        backbone_kwargs: dict[str, Any] | None = None,
        representation: int = 256,
        loc_weight: float = 1.0,
        max_proposals: int = 2000,
        ss_mode: str = "fast",
        min_proposal: float = 4.0,
        rois_per_image: int = 64,
        fg_fraction: float = 0.25,
        max_det: int = 100,
        score_threshold: float = 0.001,
        iou_threshold: float = 0.3,
    ) -> None:
        super().__init__(
            num_classes,
            input_size,
            max_proposals,
            ss_mode,
            min_proposal,
            rois_per_image,
            fg_fraction,
            max_det,
            score_threshold,
            iou_threshold,
        )
        if roi not in ("pool", "align"):
            raise ConfigError(f"fast_rcnn roi: expected 'pool' or 'align', found '{roi}'")
        self.roi, self.roi_size, self.loc_weight = roi, roi_size, loc_weight
        self.backbone = SmallBackbone(widths, backbone, backbone_kwargs)
        with torch.no_grad():
            self.stride = input_size // self.backbone.eval()(torch.zeros(1, 3, input_size, input_size)).shape[-1]
        d = self.backbone.out_channels * roi_size * roi_size
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(d, representation),
            nn.ReLU(inplace=True),
            nn.Linear(representation, representation),
            nn.ReLU(inplace=True),
        )
        self.cls = nn.Linear(representation, num_classes + 1)
        self.bbox = nn.Linear(representation, num_classes * 4)
        nn.init.normal_(self.cls.weight, std=0.01)
        nn.init.normal_(self.bbox.weight, std=0.001)
        nn.init.zeros_(self.cls.bias)
        nn.init.zeros_(self.bbox.bias)

    def pool(self, fmap: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        scale = 1.0 / self.stride
        if self.roi == "pool":
            return roi_pool(fmap, rois, self.roi_size, scale)
        return roi_align(fmap, rois, self.roi_size, scale, sampling_ratio=2)

    def head_outputs(self, x: torch.Tensor, rois: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Class logits [K,C+1] and deltas [K,C·4]."""
        h = self.head(self.pool(self.backbone(x), rois))
        return self.cls(h), self.bbox(h)

    def score_rois(self, x: torch.Tensor, rois: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, deltas = self.head_outputs(x, rois)
        return F.softmax(logits, dim=1)[:, 1:], deltas

    def compute_loss(self, outputs: Any, targets: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if not isinstance(outputs, dict) or "images" not in outputs:
            return {"loss": torch.zeros(())}
        x = outputs["images"]
        rois, labels, _ious, gts, _near = self._batch_samples(x, targets)
        logits, deltas = self.head_outputs(x, rois)
        ce = F.cross_entropy(logits, labels)
        fg = labels > 0
        if fg.any():
            d = deltas[fg].reshape(-1, self.num_classes, 4)
            d = d[torch.arange(d.shape[0]), labels[fg] - 1]
            loc = F.smooth_l1_loss(d, encode_boxes(gts[fg], rois[fg, 1:]), beta=1.0, reduction="sum") / len(labels)
        else:
            loc = deltas.sum() * 0.0
        total = ce + self.loc_weight * loc
        return {"loss": total, "cls_ce": ce.detach(), "loc_smooth_l1": loc.detach()}


# ---------------------------------------------------------------------------------------------- variants
#: the backbone of the zoo's fasterrcnn_mobile (mobilenet_v2 width 0.5 cut at stride 16): the three compare alike
MOBILE = {"backbone": "mobilenet_v2", "backbone_kwargs": {"width_mult": 0.5}}
_TINY = {"input_size": 64, "widths": (8, 16, 16, 32), "representation": 64, "max_proposals": 40}


@register_model(input_size=(3, 128, 128), num_classes=8, **detector_cfg("rcnn"))
def rcnn_mobile(**kwargs: Any) -> RCNN:
    """R-CNN on fasterrcnn_mobile's backbone: selective search (fast, ≤ 200 proposals), 64-px warps, SVMs."""
    return build_variant("rcnn_mobile", RCNN, {**MOBILE, "max_proposals": 200, "crop_size": 64}, **kwargs)


@register_model(input_size=(3, 64, 64), num_classes=8, tiny=True, **detector_cfg("rcnn"))
def rcnn_tiny(**kwargs: Any) -> RCNN:
    """Test variant: 4-stage conv CNN (8…32 channels), 32-px warps, ≤ 40 proposals, 64 px."""
    return build_variant("rcnn_tiny", RCNN, {**_TINY, "crop_size": 32}, **kwargs)


@register_model(input_size=(3, 128, 128), num_classes=8, **detector_cfg("fast_rcnn"))
def fast_rcnn_mobile(**kwargs: Any) -> FastRCNN:
    """Fast R-CNN on fasterrcnn_mobile's backbone: selective search (≤ 200 proposals), RoI max pooling 7×7."""
    return build_variant("fast_rcnn_mobile", FastRCNN, {**MOBILE, "max_proposals": 200}, **kwargs)


@register_model(input_size=(3, 64, 64), num_classes=8, tiny=True, **detector_cfg("fast_rcnn"))
def fast_rcnn_tiny(**kwargs: Any) -> FastRCNN:
    """Test variant: 4-stage conv backbone (8…32 channels), RoI pool 4×4, ≤ 40 proposals, 64 px."""
    return build_variant("fast_rcnn_tiny", FastRCNN, {**_TINY, "roi_size": 4}, **kwargs)
