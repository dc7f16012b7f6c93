"""The YOLO line, v1 → v3, sharing one detector interface (raw head maps out of ``forward``; ``decode``,
``postprocess``, ``decode_info`` and the ``loss_spec`` that ``edgecv.train.detection`` trains with beside it).

- **YOLOv1** (Redmon et al. 2016): conv backbone, fully connected head predicting on an S×S grid B boxes
  (x, y, √w, √h, confidence) and one set of class probabilities per cell; sum-of-squares loss (λcoord, λnoobj).
- **YOLOv2** (Redmon & Farhadi 2017): batch norm on every conv, anchor priors from dimension clusters
  (``edgecv anchors``), direct location prediction (σ offsets in the cell, exp × prior), the passthrough layer
  (space-to-depth of the stride-16 map concatenated to the stride-32 one), softmax classes, multi-scale training.
- **YOLOv3** (Redmon & Farhadi 2018): darknet-style residual backbone, FPN-style top-down path with three
  detection scales (strides 8/16/32, three priors each), independent logistic classifiers (BCE). The backbone can
  be any zoo MobileNet/ResNet (with an attention block): ``yolov3(backbone="mobilenet_v2", attn="se")``.

Every variant's input is RGB scaled to [0, 1] (mean 0, std 1) and letterboxed (``resize="letterbox"``).

``shapes_detector`` is the shipped default: ``yolov3_tiny`` with the weights in
``edgecv/zoo/weights/yolov3_tiny_synth.pt`` (trained by ``python scripts/shipped_detector.py
recipes/detector.yaml runs/detector``; the JSON beside them records its val mAP for PyTorch / ONNX Runtime /
OpenVINO).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torchvision.ops import batched_nms

from edgecv.errors import ConfigError
from edgecv.zoo.detection.boxes import yolo_decode
from edgecv.zoo.detection.settings import DetAugment
from edgecv.zoo.layers import ConvNormAct, init_weights
from edgecv.zoo.registry import MODELS, build_variant, detector_cfg, register_model

# COCO anchors of YOLOv3 at 416 px (w, h), smallest first; scaled to the input size when none are given
COCO_ANCHORS_416 = [(10, 13), (16, 30), (33, 23), (30, 61), (62, 45), (59, 119), (116, 90), (156, 198), (373, 326)]


def scaled_anchors(input_size: int, n_scales: int, per_scale: int = 3) -> list[list[tuple[float, float]]]:
    """COCO's nine priors scaled from 416 px to ``input_size`` and split over ``n_scales`` (small → large)."""
    r = input_size / 416.0
    a = [(round(w * r, 2), round(h * r, 2)) for w, h in COCO_ANCHORS_416]
    if n_scales * per_scale != len(a):
        idx = torch.linspace(0, len(a) - 1, n_scales * per_scale).round().long().tolist()
        a = [a[i] for i in idx]
    return [a[i * per_scale : (i + 1) * per_scale] for i in range(n_scales)]


def _anchors_arg(anchors: Any, n_scales: int) -> list[list[tuple[float, float]]]:
    """Accept per-scale lists, or one flat list of (w, h) sorted by area and split evenly over the scales."""
    a = [list(x) for x in anchors]
    if a and all(len(x) == 2 and not isinstance(x[0], (list, tuple)) for x in a):
        flat = sorted(((float(w), float(h)) for w, h in a), key=lambda p: p[0] * p[1])
        if len(flat) % n_scales:
            raise ConfigError(
                f"anchors: expected a multiple of {n_scales} priors (one group per scale), found {len(flat)}"
            )
        k = len(flat) // n_scales
        return [flat[i * k : (i + 1) * k] for i in range(n_scales)]
    if len(a) != n_scales:
        raise ConfigError(f"anchors: expected {n_scales} groups (one per scale), found {len(a)}")
    return [[(float(w), float(h)) for w, h in g] for g in a]


def _anchor_loss_spec(
    anchors: list[list[tuple[float, float]]], strides: list[float], num_classes: int, **kw: Any
) -> dict[str, Any]:
    """The YOLOv2/v3 loss this model trains with, as settings (``edgecv.train.detection.losses`` builds it)."""
    return {"kind": "yolo_anchor", "anchors": anchors, "strides": strides, "num_classes": num_classes, **kw}


class _Detector(nn.Module):
    """Shared plumbing: post-processing thresholds, training-time augmentation."""

    num_classes: int
    score_threshold = 0.001
    iou_threshold = 0.5
    max_det = 100

    def _setup(self, num_classes: int, input_size: int, train_aug: dict[str, Any] | None) -> None:
        if num_classes < 1:
            raise ConfigError(f"num_classes: expected >= 1, found {num_classes}")
        self.num_classes = num_classes
        self.input_size = input_size
        self.train_aug = DetAugment.from_dict(train_aug)

    def decode(self, outputs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw outputs → (boxes [B,N,4] xyxy input pixels, scores [B,N,C]); traceable (used in export)."""
        raise NotImplementedError

    @torch.no_grad()
    def postprocess(
        self,
        outputs: Any,
        score_threshold: float | None = None,
        iou_threshold: float | None = None,
        max_det: int | None = None,
    ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Per image (boxes, scores, classes) after per-class NMS (``torchvision.ops.batched_nms``)."""
        st = self.score_threshold if score_threshold is None else score_threshold
        it = self.iou_threshold if iou_threshold is None else iou_threshold
        md = self.max_det if max_det is None else max_det
        boxes, scores = self.decode(outputs)
        res = []
        for b in range(boxes.shape[0]):
            i, c = torch.nonzero(scores[b] > st, as_tuple=True)
            s = scores[b][i, c]
            bx = boxes[b][i]
            keep = batched_nms(bx, s, c, it)[:md]
            res.append((bx[keep], s[keep], c[keep]))
        return res

    @torch.no_grad()
    def predict(self, x: torch.Tensor, **kw: Any) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Eval-mode detections of a batch (input-tensor pixels)."""
        was = self.training
        self.eval()
        try:
            return self.postprocess(self(x), **kw)
        finally:
            self.train(was)


# ============================================================================================== YOLOv1
class YOLOv1(_Detector):
    """YOLOv1: conv backbone (conv-BN-leaky + max-pool) → fully connected head → [B, S, S, nb*5 + C].

    Args:
        num_classes: C.
        input_size: square input side (the FC head fixes it; it must be a multiple of ``S * 2**len(widths)``…
            or rather the backbone's output is average-pooled to S×S).
        grid: S.
        num_boxes: B, predictors per cell.
        widths: channels of the backbone stages (each followed by a stride-2 max-pool).
        hidden: width of the first FC layer.
    """

    def __init__(
        self,
        num_classes: int = 20,
        input_size: int = 448,
        grid: int = 7,
        num_boxes: int = 2,
        widths: tuple[int, ...] = (64, 192, 256, 512, 1024, 1024),
        hidden: int = 4096,
        dropout: float = 0.5,
        lambda_coord: float = 5.0,
        lambda_noobj: float = 0.5,
        train_aug: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self._setup(num_classes, input_size, train_aug)
        self.grid, self.num_boxes = grid, num_boxes
        layers: list[nn.Module] = []
        ch = 3
        for i, w in enumerate(widths):
            layers += [ConvNormAct(ch, w, 7 if i == 0 else 3, norm="bn", act="leaky_relu"), nn.MaxPool2d(2, 2)]
            ch = w
        self.features = nn.Sequential(
            *layers, ConvNormAct(ch, ch, 3, norm="bn", act="leaky_relu"), nn.AdaptiveAvgPool2d(grid)
        )
        self.out_ch = num_boxes * 5 + num_classes
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(ch * grid * grid, hidden),
            nn.LeakyReLU(0.1),
            nn.Dropout(dropout),
            nn.Linear(hidden, grid * grid * self.out_ch),
        )
        # the loss lives in the trainer (edgecv.train.detection.losses); the model only says which and with what
        self.loss_spec = {
            "kind": "yolo_v1",
            "num_classes": num_classes,
            "num_boxes": num_boxes,
            "lambda_coord": lambda_coord,
            "lambda_noobj": lambda_noobj,
        }
        init_weights(self.features, "kaiming_normal", mode="fan_out", nonlinearity="leaky_relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)).reshape(-1, self.grid, self.grid, self.out_ch)

    @property
    def _hw(self) -> tuple[int, int]:
        return (self.input_size, self.input_size)

    def decode(self, outputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = outputs.float()
        bsz, sh, sw, _ = out.shape
        nb = self.num_boxes
        ih, iw = self._hw
        box = torch.sigmoid(out[..., : nb * 5].reshape(bsz, sh, sw, nb, 5))
        cls = torch.softmax(out[..., nb * 5 :], -1)
        gy, gx = torch.meshgrid(torch.arange(sh, device=out.device), torch.arange(sw, device=out.device), indexing="ij")
        cx = (box[..., 0] + gx[None, :, :, None]) / sw * iw
        cy = (box[..., 1] + gy[None, :, :, None]) / sh * ih
        w, h = box[..., 2] ** 2 * iw, box[..., 3] ** 2 * ih
        boxes = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1).reshape(bsz, -1, 4)
        scores = (box[..., 4:5] * cls[:, :, :, None, :]).reshape(bsz, -1, self.num_classes)
        return boxes, scores

    def decode_info(self) -> dict[str, Any]:
        return {"format": "yolo_grid", "num_boxes": self.num_boxes, "grid": self.grid, "num_classes": self.num_classes}


# ============================================================================================== YOLOv2
class YOLOv2(_Detector):
    """YOLOv2: Darknet-19-style backbone (BN everywhere), passthrough layer, one stride-32 anchor head.

    Args:
        num_classes: C.
        input_size: nominal square input side (multi-scale training draws others from ``train_aug.sizes``).
        anchors: k priors (w, h) in input pixels at ``input_size`` (from ``edgecv anchors DATA -k 5``); default:
            five COCO-like priors scaled to the input size.
        widths: channels of the five stride-2 stages (the last is the stride-32 trunk).
        passthrough_ch: 1×1 reduction of the stride-16 map before space-to-depth (64 in the paper).
    """

    def __init__(
        self,
        num_classes: int = 20,
        input_size: int = 416,
        anchors: Any = None,
        widths: tuple[int, ...] = (32, 64, 128, 256, 512, 1024),
        passthrough_ch: int = 64,
        train_aug: dict[str, Any] | None = None,
        pos_iou: float = 0.5,
        ignore_iou: float = 0.6,
    ) -> None:
        super().__init__()
        self._setup(num_classes, input_size, train_aug)
        if len(widths) != 6:
            raise ConfigError(f"yolov2 widths: expected 6 stage widths, found {len(widths)}")
        act = "leaky_relu"
        self.anchors = (
            _anchors_arg(anchors, 1)
            if anchors is not None
            else [[a for g in scaled_anchors(input_size, 1, 5) for a in g]]
        )
        na = len(self.anchors[0])

        def stage(cin: int, cout: int, n: int) -> nn.Sequential:
            # Darknet-19 stage: alternate 3×3 (cout) and 1×1 (cout/2) convs
            mods: list[nn.Module] = [ConvNormAct(cin, cout, 3, norm="bn", act=act)]
            for _ in range(n // 2):
                mods += [
                    ConvNormAct(cout, cout // 2, 1, norm="bn", act=act),
                    ConvNormAct(cout // 2, cout, 3, norm="bn", act=act),
                ]
            return nn.Sequential(*mods)

        w = widths
        self.stem = nn.Sequential(
            ConvNormAct(3, w[0], 3, norm="bn", act=act),
            nn.MaxPool2d(2, 2),
            stage(w[0], w[1], 1),
            nn.MaxPool2d(2, 2),
            stage(w[1], w[2], 2),
            nn.MaxPool2d(2, 2),
            stage(w[2], w[3], 2),
            nn.MaxPool2d(2, 2),
            stage(w[3], w[4], 4),
        )  # stride 16
        self.trunk = nn.Sequential(
            nn.MaxPool2d(2, 2),
            stage(w[4], w[5], 4),
            ConvNormAct(w[5], w[5], 3, norm="bn", act=act),
            ConvNormAct(w[5], w[5], 3, norm="bn", act=act),
        )  # stride 32
        self.passthrough = nn.Sequential(
            ConvNormAct(w[4], passthrough_ch, 1, norm="bn", act=act), nn.PixelUnshuffle(2)
        )  # space-to-depth: 2×2 blocks → 4× channels
        self.fuse = ConvNormAct(w[5] + 4 * passthrough_ch, w[5], 3, norm="bn", act=act)
        self.head = nn.Conv2d(w[5], na * (5 + num_classes), 1)
        self.strides = [32.0]
        self.loss_spec = _anchor_loss_spec(
            self.anchors,
            self.strides,
            num_classes,
            cls_act="softmax",
            pos_iou=pos_iou,
            ignore_iou=ignore_iou,
            balance=[1.0],
        )
        init_weights(self, "kaiming_normal", mode="fan_out", nonlinearity="leaky_relu")
        _init_head(self.head, na, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        c4 = self.stem(x)
        c5 = self.trunk(c4)
        return (self.head(self.fuse(torch.cat([c5, self.passthrough(c4)], 1))),)

    def decode(self, outputs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        return _decode_anchor_maps(list(outputs), self.anchors, self.strides, self.num_classes, "softmax")

    def decode_info(self) -> dict[str, Any]:
        return {
            "format": "yolo_anchors",
            "anchors": [[list(a) for a in g] for g in self.anchors],
            "strides": self.strides,
            "cls_act": "softmax",
            "num_classes": self.num_classes,
        }


def _init_head(conv: nn.Conv2d, na: int, nc: int) -> None:
    """Prior-probability bias init (RetinaNet): objectness starts at p ≈ 0.01 and classes near 1/C, so the first
    steps are not swamped by the many easy background cells."""
    import math

    with torch.no_grad():
        if conv.bias is None:
            raise ConfigError("detection head: expected a conv with a bias (prior-probability init)")
        b = conv.bias.view(na, 5 + nc)
        b[:, 4] = math.log(0.01 / 0.99)
        b[:, 5:] = math.log(0.6 / max(nc - 0.99, 1.0))


def _decode_anchor_maps(
    maps: list[torch.Tensor], anchors: list[list[tuple[float, float]]], strides: list[float], nc: int, cls_act: str
) -> tuple[torch.Tensor, torch.Tensor]:
    boxes, scores = [], []
    for m, anc, s in zip(maps, anchors, strides):
        bsz, _, h, w = m.shape
        a = len(anc)
        t = m.float().reshape(bsz, a, 5 + nc, h, w).permute(0, 1, 3, 4, 2)
        gy, gx = torch.meshgrid(torch.arange(h, device=m.device), torch.arange(w, device=m.device), indexing="ij")
        grid = torch.stack([gx, gy], -1).float()[None, None]
        at = torch.tensor(anc, dtype=torch.float32, device=m.device)[None, :, None, None]
        boxes.append(yolo_decode(t[..., :4], grid, at, s).reshape(bsz, -1, 4))
        cls = torch.softmax(t[..., 5:], -1) if cls_act == "softmax" else torch.sigmoid(t[..., 5:])
        scores.append((torch.sigmoid(t[..., 4:5]) * cls).reshape(bsz, -1, nc))
    return torch.cat(boxes, 1), torch.cat(scores, 1)


# ============================================================================================== YOLOv3
class DarknetResidual(nn.Module):
    """Darknet-53 residual unit: 1×1 to half the channels, 3×3 back, added to the input."""

    def __init__(self, ch: int, act: str = "leaky_relu") -> None:
        super().__init__()
        self.conv1 = ConvNormAct(ch, ch // 2, 1, norm="bn", act=act)
        self.conv2 = ConvNormAct(ch // 2, ch, 3, norm="bn", act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.conv1(x))


class DarknetBackbone(nn.Module):
    """Darknet-style residual backbone: a 3×3 stem then five stride-2 stages of residual units.
    Returns the stride-8, 16 and 32 maps."""

    def __init__(
        self,
        widths: tuple[int, ...] = (32, 64, 128, 256, 512, 1024),
        depths: tuple[int, ...] = (1, 2, 8, 8, 4),
        act: str = "leaky_relu",
    ) -> None:
        super().__init__()
        if len(widths) != 6 or len(depths) != 5:
            raise ConfigError(f"darknet: expected 6 widths and 5 depths, found {len(widths)} and {len(depths)}")
        self.stem = ConvNormAct(3, widths[0], 3, norm="bn", act=act)
        self.stages = nn.ModuleList(
            nn.Sequential(
                ConvNormAct(widths[i], widths[i + 1], 3, 2, norm="bn", act=act),
                *[DarknetResidual(widths[i + 1], act) for _ in range(depths[i])],
            )
            for i in range(5)
        )
        self.channels = list(widths[3:])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        feats = []
        for i, st in enumerate(self.stages):
            x = st(x)
            if i >= 2:
                feats.append(x)
        return feats


class ZooBackbone(nn.Module):
    """A zoo classifier (MobileNet / ResNet, with its attention option) cut into feature taps at strides
    8, 16 and 32 (found by a probe forward pass; the classifier head is dropped)."""

    def __init__(self, name: str, **kwargs: Any) -> None:
        super().__init__()
        # every family is registered by now: importing any family module runs edgecv.zoo.families first
        net = MODELS.get(name)(**kwargs)
        if hasattr(net, "features") and isinstance(net.features, nn.Sequential):
            mods = list(net.features)
        elif hasattr(net, "stem") and hasattr(net, "stages"):
            mods = [net.stem, *list(net.stages)]
        else:
            raise ConfigError(f"backbone '{name}': expected a zoo model with .features or .stem/.stages")
        x = torch.zeros(1, 3, 64, 64)
        taps: dict[int, int] = {}
        chans: dict[int, int] = {}
        was = net.training
        net.eval()
        with torch.no_grad():
            for i, m in enumerate(mods):
                x = m(x)
                s = 64 // x.shape[-1]
                if s in (8, 16, 32):
                    taps[s], chans[s] = i, x.shape[1]
        net.train(was)
        if sorted(taps) != [8, 16, 32]:
            raise ConfigError(f"backbone '{name}': expected feature maps at strides 8, 16 and 32, found {sorted(taps)}")
        self.body = nn.ModuleList(mods[: taps[32] + 1])
        self.taps = [taps[8], taps[16], taps[32]]
        self.channels = [chans[8], chans[16], chans[32]]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for i, m in enumerate(self.body):
            x = m(x)
            if i in self.taps:
                feats.append(x)
        return feats


class YOLOv3(_Detector):
    """YOLOv3: backbone (darknet-style residual, or a zoo MobileNet/ResNet) + FPN-style top-down neck with three
    heads (strides 8/16/32), independent logistic class scores.

    Args:
        num_classes: C.
        input_size: nominal square input side.
        anchors: nine priors (w, h) in input pixels (flat list, split small → large over the three scales, or three
            groups); default: COCO's scaled to ``input_size``.
        backbone: ``darknet`` or a zoo model name (``mobilenet_v2``, ``resnet18``, …).
        attn: attention block for a zoo backbone (``se``, ``cbam``, …).
        widths, depths: darknet stage widths / residual units (ignored for zoo backbones).
        neck_ch: channels of the neck at stride 32, 16, 8 (default: half the backbone's channels there).
        train_aug: training augmentation (see :class:`~edgecv.zoo.detection.settings.DetAugment`).
    """

    def __init__(
        self,
        num_classes: int = 80,
        input_size: int = 416,
        anchors: Any = None,
        backbone: str = "darknet",
        attn: str | None = None,
        backbone_kwargs: dict[str, Any] | None = None,
        widths: tuple[int, ...] = (32, 64, 128, 256, 512, 1024),
        depths: tuple[int, ...] = (1, 2, 8, 8, 4),
        neck_ch: tuple[int, int, int] | None = None,
        train_aug: dict[str, Any] | None = None,
        pos_iou: float = 0.3,
        ignore_iou: float = 0.5,
        lambda_box: float = 0.05,
        lambda_obj: float = 1.0,
        lambda_cls: float = 0.25,
        cls_act: str = "sigmoid",
    ) -> None:
        super().__init__()
        self._setup(num_classes, input_size, train_aug)
        if cls_act not in ("sigmoid", "softmax"):
            raise ConfigError(f"yolov3 cls_act: expected 'sigmoid' or 'softmax', found '{cls_act}'")
        self.cls_act = cls_act
        act = "leaky_relu"
        if backbone == "darknet":
            if attn is not None:
                raise ConfigError(
                    "yolov3 attn: attention blocks apply to a zoo backbone (mobilenet_v2, resnet18, "
                    "…), not to backbone='darknet'"
                )
            self.backbone: nn.Module = DarknetBackbone(tuple(widths), tuple(depths), act)
        else:
            kw = dict(backbone_kwargs or {})
            if attn is not None:
                kw["attn"] = attn
            self.backbone = ZooBackbone(backbone, **kw)
        c3, c4, c5 = self.backbone.channels  # type: ignore[union-attr]
        n5, n4, n3 = neck_ch or (max(c5 // 2, 16), max(c4 // 2, 16), max(c3 // 2, 16))
        self.anchors = _anchors_arg(anchors, 3) if anchors is not None else scaled_anchors(input_size, 3)
        na = len(self.anchors[0])
        self.strides = [8.0, 16.0, 32.0]
        no = na * (5 + num_classes)

        def conv_set(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                ConvNormAct(cin, cout, 1, norm="bn", act=act),
                ConvNormAct(cout, cout * 2, 3, norm="bn", act=act),
                ConvNormAct(cout * 2, cout, 1, norm="bn", act=act),
            )

        self.p5 = conv_set(c5, n5)
        self.lat5 = nn.Sequential(ConvNormAct(n5, n4, 1, norm="bn", act=act), nn.Upsample(scale_factor=2.0))
        self.p4 = conv_set(c4 + n4, n4)
        self.lat4 = nn.Sequential(ConvNormAct(n4, n3, 1, norm="bn", act=act), nn.Upsample(scale_factor=2.0))
        self.p3 = conv_set(c3 + n3, n3)
        self.heads = nn.ModuleList(
            nn.Sequential(ConvNormAct(c, c * 2, 3, norm="bn", act=act), nn.Conv2d(c * 2, no, 1)) for c in (n3, n4, n5)
        )
        if backbone == "darknet":
            init_weights(self.backbone, "kaiming_normal", mode="fan_out", nonlinearity="leaky_relu")
        for mod in (self.p5, self.lat5, self.p4, self.lat4, self.p3, self.heads):
            init_weights(mod, "kaiming_normal", mode="fan_out", nonlinearity="leaky_relu")
        for h in self.heads:
            _init_head(h[-1], na, num_classes)  # type: ignore[index]
        self.loss_spec = _anchor_loss_spec(
            self.anchors,
            self.strides,
            num_classes,
            cls_act=cls_act,
            pos_iou=pos_iou,
            ignore_iou=ignore_iou,
            lambda_box=lambda_box,
            lambda_obj=lambda_obj,
            lambda_cls=lambda_cls,
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c3, c4, c5 = self.backbone(x)
        p5 = self.p5(c5)
        p4 = self.p4(torch.cat([self.lat5(p5), c4], 1))
        p3 = self.p3(torch.cat([self.lat4(p4), c3], 1))
        return self.heads[0](p3), self.heads[1](p4), self.heads[2](p5)

    def decode(self, outputs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        return _decode_anchor_maps(list(outputs), self.anchors, self.strides, self.num_classes, self.cls_act)

    def decode_info(self) -> dict[str, Any]:
        return {
            "format": "yolo_anchors",
            "anchors": [[list(a) for a in g] for g in self.anchors],
            "strides": self.strides,
            "cls_act": self.cls_act,
            "num_classes": self.num_classes,
        }


# ============================================================================================== registry
_create = build_variant  # caller kwargs override the variant's arch; bad arguments are one line


_DET = detector_cfg("yolo")


@register_model(input_size=(3, 448, 448), num_classes=20, **_DET)
def yolov1(**kwargs: Any) -> YOLOv1:
    """YOLOv1 (7×7 grid, 2 boxes per cell, 448 px)."""
    return _create("yolov1", YOLOv1, {}, **kwargs)


@register_model(input_size=(3, 64, 64), num_classes=8, tiny=True, **_DET)
def yolov1_tiny(**kwargs: Any) -> YOLOv1:
    """Test variant: YOLOv1 with a 4×4 grid at 64 px, narrow backbone, 128-wide FC."""
    return _create(
        "yolov1_tiny",
        YOLOv1,
        {"num_classes": 8, "input_size": 64, "grid": 4, "widths": (8, 16, 32, 32), "hidden": 128, "dropout": 0.0},
        **kwargs,
    )


@register_model(input_size=(3, 416, 416), num_classes=20, **_DET)
def yolov2(**kwargs: Any) -> YOLOv2:
    """YOLOv2 (Darknet-19-style trunk, passthrough, 5 priors, 416 px, multi-scale 320–608)."""
    return _create(
        "yolov2",
        YOLOv2,
        {"train_aug": {"sizes": list(range(320, 609, 32)), "hflip": 0.5, "scale": 0.25, "hsv": 0.3}},
        **kwargs,
    )


@register_model(input_size=(3, 64, 64), num_classes=8, tiny=True, **_DET)
def yolov2_tiny(**kwargs: Any) -> YOLOv2:
    """Test variant: YOLOv2 at 64 px, widths 8…128, multi-scale 64/96."""
    return _create(
        "yolov2_tiny",
        YOLOv2,
        {
            "num_classes": 8,
            "input_size": 64,
            "widths": (8, 16, 16, 32, 32, 64),
            "passthrough_ch": 8,
            "train_aug": {"sizes": [64, 96]},
        },
        **kwargs,
    )


@register_model(input_size=(3, 416, 416), num_classes=80, **_DET)
def yolov3(**kwargs: Any) -> YOLOv3:
    """YOLOv3 (Darknet-53-style residual backbone, three scales, 416 px)."""
    return _create("yolov3", YOLOv3, {}, **kwargs)


@register_model(input_size=(3, 96, 96), num_classes=8, **_DET)
def yolov3_tiny(**kwargs: Any) -> YOLOv3:
    """The shipped default detector's architecture: a narrow darknet-style residual backbone (widths 16…128; no
    residual unit at stride 2, where a unit costs a third of the training step on CPU, then 1/2/2/1 units), three
    scales, 96 px, 8 synthetic shape classes; 0.76 M parameters. The class term is weighted up (λcls = 2): with
    independent logistic classes the mean BCE spreads each positive's gradient over the 8 logits, and classes were
    what the model learnt last."""
    return _create(
        "yolov3_tiny",
        YOLOv3,
        {
            "num_classes": 8,
            "input_size": 96,
            "widths": (16, 32, 48, 64, 96, 128),
            "depths": (0, 1, 2, 2, 1),
            "lambda_cls": 2.0,
        },
        **kwargs,
    )


@register_model(input_size=(3, 64, 64), num_classes=8, tiny=True, **_DET)
def yolov3_test(**kwargs: Any) -> YOLOv3:
    """Test variant: YOLOv3 at 64 px with widths 8…64 and one residual unit per stage."""
    return _create(
        "yolov3_test",
        YOLOv3,
        {"num_classes": 8, "input_size": 64, "widths": (8, 8, 16, 16, 32, 64), "depths": (1, 1, 1, 1, 1)},
        **kwargs,
    )


@register_model(input_size=(3, 64, 64), num_classes=8, tiny=True, **_DET)
def yolov3_mobilenet_test(**kwargs: Any) -> YOLOv3:
    """Test variant: YOLOv3 heads on mobilenet_v2_tiny with SE attention, 64 px."""
    return _create(
        "yolov3_mobilenet_test",
        YOLOv3,
        {"num_classes": 8, "input_size": 64, "backbone": "mobilenet_v2_tiny", "attn": "se"},
        **kwargs,
    )


# ============================================================================================== shipped default
# The shipped default detector: yolov3_tiny with the recipe's anchors (dimension clusters of the synthetic train
# split) and class activation; recipes/detector.yaml trains it (python scripts/shipped_detector.py) and the
# weights + their val mAP live in edgecv/zoo/weights/yolov3_tiny_synth.{pt,json}.
SHAPES_DETECTOR_STEM = "yolov3_tiny_synth"
SHAPES_DETECTOR_ARCH: dict[str, Any] = {
    "anchors": [[16, 15], [18, 18], [20, 21], [26, 24], [23, 28], [28, 29], [34, 32], [37, 37], [41, 42]]
}
_SHAPES = ("circle", "ring", "square", "rectangle", "triangle", "star", "cross", "hexagon")  # edgecv.data.synth order


def _weights_dir() -> Any:
    from pathlib import Path

    return Path(__file__).resolve().parents[1] / "weights"


@register_model(
    input_size=(3, 96, 96),
    num_classes=8,
    class_names=list(_SHAPES),
    reference_split={"task": "detect", "size": 96, "seed": 0},
    **_DET,
)
def shapes_detector(**kwargs: Any) -> YOLOv3:
    """The shipped default detector: ``yolov3_tiny`` trained on the synthetic shapes (8 classes, 96 px, letterbox)
    with the weights in edgecv/zoo/weights/yolov3_tiny_synth.pt; its val mAP, data split and training record are in
    the JSON beside them. ``pretrained=False`` gives the same architecture with random init."""
    from edgecv.errors import ModelSourceError

    pretrained = bool(kwargs.pop("pretrained", True))
    pinned = {**SHAPES_DETECTOR_ARCH, "num_classes": 8, "input_size": 96}
    fixed = {k: v for k, v in kwargs.items() if k in pinned and v != pinned[k]}
    if pretrained and fixed:
        raise ConfigError(
            f"shapes_detector: the shipped weights fix {sorted(fixed)}; pass pretrained=False to change them"
        )
    model = yolov3_tiny(**{**SHAPES_DETECTOR_ARCH, **kwargs})
    if not pretrained:
        return model
    path = _weights_dir() / f"{SHAPES_DETECTOR_STEM}.pt"
    if not path.is_file():
        raise ModelSourceError(
            f"shapes_detector: expected shipped weights at {path}, found no file (train them "
            "with 'python scripts/shipped_detector.py recipes/detector.yaml runs/detector')"
        )
    sd = torch.load(path, map_location="cpu", weights_only=True)
    try:
        model.load_state_dict(sd)
    except RuntimeError as exc:
        raise ModelSourceError(
            f"shapes_detector: {path} does not fit the architecture ({str(exc).splitlines()[0]})"
        ) from None
    return model.eval()
