"""Faster R-CNN (Ren et al. 2015) from ``torchvision.models.detection`` building blocks: a small backbone, an RPN
(anchors at several scales and aspect ratios, objectness, box regression, proposal NMS), RoI Align (or RoI Pool)
and a two-FC box head with per-class box regression.

The module speaks the zoo detector interface: ``forward(x)`` in eval mode returns the graph-NMS outputs
(``boxes`` [B,K,4] xyxy input pixels, ``scores``, ``classes``, ``num_dets``; K = ``max_det``, padded), and in train
mode hands the images to :meth:`compute_loss`, which runs torchvision's RPN and RoI-head losses with the targets.
Exports with the TorchScript ONNX exporter (opset ≥ 16): RoiAlign and NonMaxSuppression stay in the graph; batch 1.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.ops import MultiScaleRoIAlign, roi_pool

from edgecv.errors import ConfigError, ExportError
from edgecv.zoo.detection.settings import DetAugment
from edgecv.zoo.layers import ConvNormAct, init_weights
from edgecv.zoo.registry import MODELS, build_variant, detector_cfg, register_model


@contextlib.contextmanager
def empty_safe_nms() -> Iterator[None]:
    """While a graph is traced, torchvision's ``batched_nms`` without its "no box" branch.

    torchvision's ``_batched_nms_coordinate_trick`` returns a constant empty tensor when there is no box, scripted
    into an ONNX ``If``; OpenVINO (2025-2026) takes that empty constant for one element, so a frame with no detection
    came out with ``num_dets`` 1 and a garbage box. This version needs no branch: the class offset is the same
    ``max + 1`` for any box (boxes are clipped to the image before NMS, so ``max(boxes, 0) == max(boxes)``) and is
    defined for none, and ONNX ``NonMaxSuppression`` over no box selects none on every engine. Eager runs (not
    tracing) are left untouched."""
    import torchvision.ops.boxes as box_ops

    if not torch.jit.is_tracing():
        yield
        return
    original = box_ops.batched_nms

    def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float) -> Any:
        top = torch.cat([boxes.reshape(-1), boxes.new_zeros(1)]).max()
        return box_ops.nms(boxes + (idxs.to(boxes) * (top + 1))[:, None], scores, iou_threshold)

    box_ops.batched_nms = batched_nms  # rpn, roi_heads, retinanet, fcos and ssd call it as box_ops.batched_nms
    try:
        yield
    finally:
        box_ops.batched_nms = original


def rcnn_detect(model: Any, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    """torchvision ``GeneralizedRCNN.forward`` in eval mode (Faster/Mask/Keypoint R-CNN), exportable for frames
    with no proposal and no detection: one zero-size proposal is appended to each image's proposals, and NMS runs
    through :func:`empty_safe_nms`.

    torchvision decodes box deltas through ``reshape(number of proposals, -1)`` only when that number is above
    zero, a Python branch the tracer fixes: the exported graph then failed (``Reshape {0,36} -> {0,-1}``) on a
    frame where the RPN keeps nothing, e.g. an empty scene under ``rpn_score_thresh`` (0.05 for torchvision's
    mobilenet_v3 builders). The extra proposal decodes to a zero-size box, which ``postprocess_detections`` drops
    (``remove_small_boxes``) before NMS, and every other proposal is scored on its own: the boxes are
    torchvision's."""
    sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
    with empty_safe_nms():
        batch, _ = model.transform(images)
        features = model.backbone(batch.tensors)
        if isinstance(features, torch.Tensor):
            features = OrderedDict([("0", features)])
        proposals, _ = model.rpn(batch, features)
        proposals = [torch.cat([p, p.new_zeros(1, 4)]) for p in proposals]
        dets, _ = model.roi_heads(features, proposals, batch.image_sizes)
    return model.transform.postprocess(dets, batch.image_sizes, sizes)  # type: ignore[no-any-return]


def pad_detections(
    dets: list[dict[str, torch.Tensor]], k: int, x: torch.Tensor, label_shift: int = 0
) -> dict[str, torch.Tensor]:
    """torchvision's per-image detection dicts as edgecv's standard outputs: ``boxes``/``scores``/``classes``
    padded or cut to a fixed ``k`` (static output shapes for every backend), ``num_dets`` the real count per image;
    ``label_shift`` is added to the labels (-1: the zoo's detectors count classes from 0, past the background)."""
    boxes, scores, classes, nums = [], [], [], []
    for d in dets:
        boxes.append(torch.cat([d["boxes"], x.new_zeros(k, 4)])[:k])
        scores.append(torch.cat([d["scores"], x.new_zeros(k)])[:k])
        labels = d["labels"].to(torch.int64) + label_shift
        classes.append(torch.cat([labels, torch.zeros(k, dtype=torch.int64, device=x.device)])[:k])
        nums.append(torch.clamp(torch.tensor(d["scores"].shape[0], device=x.device), max=k).reshape(1))
    return {
        "boxes": torch.stack(boxes),
        "scores": torch.stack(scores),
        "classes": torch.stack(classes),
        "num_dets": torch.cat(nums).to(torch.int64),
    }


class RoIPoolLayer(MultiScaleRoIAlign):
    """RoI max pooling (Fast R-CNN) in MultiScaleRoIAlign's place (torchvision's RoIHeads accepts only that type),
    on one feature map."""

    def __init__(self, featmap: str, output_size: int, spatial_scale: float) -> None:
        super().__init__([featmap], output_size, sampling_ratio=0)
        self.featmap, self.pool_size, self.spatial_scale = featmap, output_size, spatial_scale

    def forward(
        self, features: dict[str, torch.Tensor], proposals: list[torch.Tensor], image_shapes: list[tuple[int, int]]
    ) -> torch.Tensor:
        return roi_pool(features[self.featmap], proposals, self.pool_size, self.spatial_scale)


class SmallBackbone(nn.Module):
    """A stride-16 conv-BN-ReLU backbone (4 stride-2 stages) for the CPU variants; or a zoo MobileNet cut at
    stride 16."""

    def __init__(
        self,
        widths: tuple[int, ...] = (16, 32, 64, 128),
        zoo: str | None = None,
        zoo_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if zoo is not None:
            # every family is registered by now: importing any family module runs edgecv.zoo.families first
            net = MODELS.get(zoo)(**(zoo_kwargs or {}))
            if not isinstance(getattr(net, "features", None), nn.Sequential):
                raise ConfigError(f"faster_rcnn backbone '{zoo}': expected a zoo model with .features")
            mods, x = [], torch.zeros(1, 3, 64, 64)
            net.eval()
            with torch.no_grad():
                for m in net.features:
                    y = m(x)
                    if 64 // y.shape[-1] > 16:
                        break
                    mods.append(m)
                    x = y
            self.body = nn.Sequential(*mods)
            self.out_channels = int(x.shape[1])
        else:
            layers: list[nn.Module] = []
            ch = 3
            for w in widths:
                layers += [ConvNormAct(ch, w, 3, 2), ConvNormAct(w, w, 3)]
                ch = w
            self.body = nn.Sequential(*layers)
            self.out_channels = ch
            init_weights(self.body, "kaiming_normal", mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class FasterRCNNDetector(nn.Module):
    """Faster R-CNN over a stride-16 backbone.

    Args:
        num_classes: C (background is added internally).
        input_size: square input side (the internal transform keeps it: no resize, mean 0 / std 1).
        anchor_sizes: RPN anchor sizes in pixels; ``aspect_ratios``: h/w ratios — every size × ratio per location.
        roi: ``align`` (RoI Align, sampling ratio 2) or ``pool`` (RoI max pooling).
        widths / backbone: a small conv backbone, or a zoo model name with ``backbone_kwargs``.
        rpn_*_top_n, box_*: torchvision's RPN / box-head settings.
    """

    exports_graph_nms = True

    def __init__(
        self,
        num_classes: int = 8,
        input_size: int = 128,
        anchor_sizes: tuple[int, ...] = (16, 32, 64),
        aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0),
        roi: str = "align",
        roi_size: int = 7,
        widths: tuple[int, ...] = (16, 32, 64, 128),
        backbone: str | None = None,
        backbone_kwargs: dict[str, Any] | None = None,
        representation: int = 256,
        rpn_pre_nms_top_n: int = 300,
        rpn_post_nms_top_n: int = 100,
        box_batch_size_per_image: int = 128,
        max_det: int = 100,
        score_threshold: float = 0.001,
        iou_threshold: float = 0.5,
        train_aug: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if roi not in ("align", "pool"):
            raise ConfigError(f"faster_rcnn roi: expected 'align' or 'pool', found '{roi}'")
        self.num_classes, self.input_size = num_classes, input_size
        self.train_aug = DetAugment.from_dict(train_aug)
        body = SmallBackbone(widths, backbone, backbone_kwargs)
        anchors = AnchorGenerator(sizes=(tuple(anchor_sizes),), aspect_ratios=(tuple(aspect_ratios),))
        pool: nn.Module = (
            MultiScaleRoIAlign(["0"], roi_size, sampling_ratio=2)
            if roi == "align"
            else RoIPoolLayer("0", roi_size, 1.0 / 16)
        )
        self.max_det = max_det
        self.frcnn = FasterRCNN(
            body,
            num_classes=num_classes + 1,
            min_size=input_size,
            max_size=input_size,
            image_mean=[0.0, 0.0, 0.0],
            image_std=[1.0, 1.0, 1.0],
            rpn_anchor_generator=anchors,
            box_roi_pool=pool,
            rpn_pre_nms_top_n_train=rpn_pre_nms_top_n * 2,
            rpn_pre_nms_top_n_test=rpn_pre_nms_top_n,
            rpn_post_nms_top_n_train=rpn_post_nms_top_n * 2,
            rpn_post_nms_top_n_test=rpn_post_nms_top_n,
            box_batch_size_per_image=box_batch_size_per_image,
            box_detections_per_img=max_det,
            box_score_thresh=score_threshold,
            box_nms_thresh=iou_threshold,
        )
        if representation != 1024:  # torchvision's default TwoMLPHead is 1024 wide: too big for a CPU variant
            from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead

            self.frcnn.roi_heads.box_head = TwoMLPHead(body.out_channels * roi_size**2, representation)
            self.frcnn.roi_heads.box_predictor = FastRCNNPredictor(representation, num_classes + 1)

    def set_postprocess(self, score_threshold: float, iou_threshold: float, max_det: int) -> None:
        rh = self.frcnn.roi_heads
        rh.score_thresh, rh.nms_thresh, rh.detections_per_img = score_threshold, iou_threshold, max_det
        self.max_det = max_det

    def forward(self, x: torch.Tensor) -> Any:
        if self.training:
            return {"images": x}  # the losses need the targets: compute_loss runs the network
        if torch.compiler.is_compiling():
            raise ExportError("faster_rcnn exports with the TorchScript ONNX exporter (dynamo=False)")
        # a real op on the input keeps OpenVINO from naming the input port after torchvision's Unsqueeze
        # (its runner reads port.get_any_name()); inputs are in [0, 1] (scale 1/255), so the clamp changes nothing
        dets = rcnn_detect(self.frcnn, list(x.clamp(0.0, 1.0)))
        return pad_detections(dets, self.max_det, x, label_shift=-1)  # labels shift back past background

    def compute_loss(self, outputs: Any, targets: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if not isinstance(outputs, dict) or "images" not in outputs:
            return {"loss": torch.zeros(())}  # eval-mode outputs carry no loss (torchvision computes none there)
        tg = [{"boxes": t["boxes"].float().reshape(-1, 4), "labels": t["labels"].long() + 1} for t in targets]  # novm
        was = self.frcnn.training
        self.frcnn.train()
        losses = self.frcnn(list(outputs["images"]), tg)
        self.frcnn.train(was)
        total = sum(losses.values())
        return {"loss": total, **{k: v.detach() for k, v in losses.items()}}

    @torch.no_grad()
    def postprocess(self, outputs: Any, **_: Any) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        res = []
        for b in range(outputs["boxes"].shape[0]):
            n = int(outputs["num_dets"][b])
            res.append((outputs["boxes"][b, :n], outputs["scores"][b, :n], outputs["classes"][b, :n]))
        return res

    def decode_info(self) -> dict[str, Any]:
        return {"num_classes": self.num_classes}


def _create(variant: str, arch: dict[str, Any], **kwargs: Any) -> FasterRCNNDetector:
    return build_variant(variant, FasterRCNNDetector, arch, **kwargs)


_DET = detector_cfg("faster_rcnn")


@register_model(input_size=(3, 128, 128), num_classes=8, **_DET)
def fasterrcnn_mobile(**kwargs: Any) -> FasterRCNNDetector:
    """Mobile Faster R-CNN that trains on CPU: mobilenet_v2 (width 0.5) to stride 16, RoI Align, 128 px."""
    return _create("fasterrcnn_mobile", {"backbone": "mobilenet_v2", "backbone_kwargs": {"width_mult": 0.5}}, **kwargs)


@register_model(input_size=(3, 64, 64), num_classes=8, tiny=True, **_DET)
def fasterrcnn_tiny(**kwargs: Any) -> FasterRCNNDetector:
    """Test variant: 4-stage conv backbone (8…32 channels), anchors 8/16/32, RoI Align 4×4, 64 px."""
    return _create(
        "fasterrcnn_tiny",
        {
            "input_size": 64,
            "widths": (8, 16, 16, 32),
            "anchor_sizes": (8, 16, 32),
            "roi_size": 4,
            "representation": 64,
            "rpn_pre_nms_top_n": 100,
            "rpn_post_nms_top_n": 30,
            "box_batch_size_per_image": 32,
        },
        **kwargs,
    )
