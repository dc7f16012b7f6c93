"""torchvision detectors as edgecv detectors: Faster R-CNN (every backbone), Mask R-CNN and Keypoint R-CNN (boxes
only), RetinaNet, FCOS, SSD300 and SSDlite.

What is exported, and why it equals torchvision:

* torchvision's own ``GeneralizedRCNNTransform`` (normalize + aspect-keeping resize, or SSD's fixed-size resize) stays
  **in the graph**, and so does its post-processing (per-level top-k, score threshold, ``batched_nms`` →
  ONNX ``NonMaxSuppression``, ``transform.postprocess`` mapping boxes back to the size of the tensor it was given).
  The bundle therefore returns, for an input tensor, exactly the boxes the eager torchvision model returns for that
  tensor as an image, in its pixels; the device-side decoder maps them back to the original frame through the
  contract's resize (``letterbox`` for the aspect-keeping families, ``stretch`` for SSD, whose transform stretches).
  The contract feeds ``[0, 1]`` RGB (mean 0, std 1): the model normalizes itself.
* The graph ends in edgecv's standard detection outputs (``boxes``/``scores``/``classes``/``num_dets``, padded to
  ``max_det``). ``classes`` are torchvision's labels unchanged (index 0 is the background slot of the COCO-style
  category list; class names come from the default weights' ``categories`` when the class count matches, else
  ``__background__, 1, 2, …``: ``validate --val`` maps a COCO file's categories onto the slots after the background).
* Masks (Mask R-CNN) and keypoints (Keypoint R-CNN) are not exported: the graph stops at the boxes.
* ``--nms host``: RetinaNet, FCOS and SSD export their decoded candidates (boxes from anchors / points and the
  per-class scores torchvision ranks them by, in input pixels) and run NMS on the host (``boxes_scores``); the
  two-stage R-CNNs run NMS between their stages (RPN proposals), so they are refused in one line.

The input is one image (static batch 1, like the zoo's Faster R-CNN): torchvision's detectors take a list of images.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from edgecv.errors import ConfigError, ExportError
from edgecv.export.adapters import AdapterOptions, DetectorAdapter, register_adapter
from edgecv.zoo.families.faster_rcnn import empty_safe_nms, pad_detections, rcnn_detect

if TYPE_CHECKING:
    from edgecv.export.loaded import LoadedModel

_DETECTION_MODULE = "torchvision.models.detection"


def family(module: Any) -> str | None:
    """``rcnn``, ``retinanet``, ``fcos`` or ``ssd`` for a torchvision detector, else None."""
    if not type(module).__module__.startswith(_DETECTION_MODULE):
        return None
    from torchvision.models.detection.fcos import FCOS
    from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
    from torchvision.models.detection.retinanet import RetinaNet
    from torchvision.models.detection.ssd import SSD

    for cls, name in ((GeneralizedRCNN, "rcnn"), (RetinaNet, "retinanet"), (FCOS, "fcos"), (SSD, "ssd")):
        if isinstance(module, cls):
            return name
    return None


def num_classes(model: Any) -> int:
    """The number of label slots the detector scores (torchvision counts the background slot in)."""
    fam = family(model)
    if fam == "rcnn":
        return int(model.roi_heads.box_predictor.cls_score.out_features)
    if fam in ("retinanet", "fcos"):
        return int(model.head.classification_head.num_classes)
    if fam == "ssd":
        return int(model.head.classification_head.num_columns)
    raise ConfigError(f"torchvision adapter: expected a torchvision detector, found {type(model).__name__}")


def default_input_hw(model: Any) -> tuple[int, int]:
    """The default input size: SSD's fixed size, else a square of the transform's ``min_size`` (for that size the
    transform does not resize)."""
    t = model.transform
    if getattr(t, "fixed_size", None):
        h, w = t.fixed_size
        return int(h), int(w)
    side = int(t.min_size[-1])
    return side, side


class TorchvisionDetector(nn.Module):
    """torchvision detector → padded ``boxes [1,K,4]``, ``scores [1,K]``, ``classes [1,K]``, ``num_dets [1]``; its
    transform, NMS and box mapping run inside (``exports_graph_nms``)."""

    exports_graph_nms = True
    onnx_exporter = "torchscript"  # torchvision's NMS / RoIAlign symbolics are TorchScript-exporter ones

    def __init__(self, model: nn.Module, max_det: int = 100) -> None:
        super().__init__()
        self.model = model
        self.family = family(model)
        self.num_classes = num_classes(model)
        self.max_det = max_det

    def set_postprocess(self, score_threshold: float, iou_threshold: float, max_det: int) -> None:
        m: Any = self.model
        target = m.roi_heads if self.family == "rcnn" else m
        target.score_thresh, target.nms_thresh, target.detections_per_img = score_threshold, iou_threshold, max_det
        self.max_det = max_det

    def decode_info(self) -> dict[str, Any]:
        return {"num_classes": self.num_classes}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if torch.compiler.is_compiling():
            raise ExportError("torchvision detectors export with the TorchScript ONNX exporter (dynamo=False)")
        # a real op on the input keeps OpenVINO from naming the input port after torchvision's Unsqueeze; inputs are
        # in [0, 1] (contract scale 1/255, mean 0, std 1), so the clamp changes nothing
        images = list(x.clamp(0.0, 1.0))
        if self.family == "rcnn":
            dets = rcnn_detect(self.model, images)  # exportable for frames with no proposal or no box
        else:
            with empty_safe_nms():
                dets = self.model(images)
        return pad_detections(dets, self.max_det, x)


class TorchvisionCandidates(nn.Module):
    """RetinaNet / FCOS / SSD → every decoded candidate before NMS, for host NMS: ``boxes [1,N,4]`` xyxy in input
    pixels and ``scores [1,N,C]`` (RetinaNet: sigmoid; FCOS: √(sigmoid(cls)·sigmoid(centerness)); SSD: softmax with
    the background column zeroed) — the scores torchvision thresholds and ranks. ``decode`` is the identity, so the
    zoo's :class:`~edgecv.export.detection` wrappers apply unchanged."""

    onnx_exporter = "torchscript"

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        fam = family(model)
        if fam not in ("retinanet", "fcos", "ssd"):
            raise ConfigError(f"--nms host: expected RetinaNet, FCOS or SSD, found {type(model).__name__}")
        self.model, self.family = model, fam
        self.num_classes = num_classes(model)

    def decode(self, raw: Any) -> tuple[torch.Tensor, torch.Tensor]:
        boxes, scores = raw
        return boxes, scores

    def decode_info(self) -> dict[str, Any]:
        return {"format": "boxes_scores", "num_outputs": 2, "num_classes": self.num_classes}

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m: Any = self.model
        orig = [(int(x.shape[-2]), int(x.shape[-1]))] * x.shape[0]
        images, _ = m.transform(list(x.clamp(0.0, 1.0)))
        feats = m.backbone(images.tensors)
        if isinstance(feats, torch.Tensor):
            feats = {"0": feats}
        features = list(feats.values())
        head = m.head(features)
        if self.family == "retinanet":
            anchors = m.anchor_generator(images, features)
            deltas, logits = head["bbox_regression"], head["cls_logits"]
            scores = torch.sigmoid(logits)
            boxes = torch.stack([m.box_coder.decode_single(deltas[b], anchors[b]) for b in range(len(anchors))])
        elif self.family == "fcos":
            anchors = m.anchor_generator(images, features)
            deltas, logits, ctr = head["bbox_regression"], head["cls_logits"], head["bbox_ctrness"]
            scores = torch.sqrt(torch.sigmoid(logits) * torch.sigmoid(ctr))
            boxes = torch.stack([m.box_coder.decode(deltas[b], anchors[b]) for b in range(len(anchors))])
        else:
            anchors = m.anchor_generator(images, features)
            deltas, logits = head["bbox_regression"], head["cls_logits"]
            scores = torch.softmax(logits, -1)
            scores = torch.cat([torch.zeros_like(scores[..., :1]), scores[..., 1:]], -1)
            boxes = torch.stack([m.box_coder.decode_single(deltas[b], anchors[b]) for b in range(len(anchors))])
        from torchvision.models.detection.transform import resize_boxes
        from torchvision.ops import clip_boxes_to_image

        out = []
        for b in range(boxes.shape[0]):
            bx = clip_boxes_to_image(boxes[b], images.image_sizes[b])
            out.append(resize_boxes(bx, images.image_sizes[b], orig[b]))
        return torch.stack(out), scores


def _class_names(model: Any, loaded: LoadedModel, nc: int) -> list[str]:
    if loaded.contract.class_names and len(loaded.contract.class_names) == nc:
        return list(loaded.contract.class_names)
    name = loaded.source_info.get("spec", "")
    if isinstance(name, str) and name.startswith("torchvision:"):
        try:
            import torchvision.models as tvm

            cats = list(tvm.get_model_weights(name.split(":", 1)[1]).DEFAULT.meta.get("categories") or [])
            if len(cats) == nc:
                return [str(c) for c in cats]
        except Exception:  # noqa: BLE001, S110 - no weight enum or no categories: no names, the model still exports
            pass
    # unnamed: slot 0 is torchvision's background (as in its category lists), so validate --val maps a data set's
    # categories onto labels 1..C-1, the labels a model trained with torchvision's references predicts
    return ["__background__", *(str(k) for k in range(1, nc))]


def wrap(loaded: LoadedModel, options: AdapterOptions) -> LoadedModel:
    """A torchvision detector → a graph-NMS module (or RetinaNet/FCOS/SSD candidates for ``--nms host``) and the
    contract that feeds it: ``[0, 1]`` RGB, letterbox (aspect-keeping families) or stretch (SSD)."""
    model = loaded.module
    fam = family(model)
    if fam is None:
        raise ConfigError(f"torchvision adapter: expected a torchvision detector, found {type(model).__name__}")
    if options.nms == "host" and fam == "rcnn":
        raise ConfigError(
            f"--nms host: {type(model).__name__} runs NMS between its stages (RPN proposals, then the "
            "box head), so its raw head cannot be decoded on the host; export it with --nms graph"
        )
    model.eval()
    module: nn.Module = (
        TorchvisionCandidates(model)
        if options.nms == "host"
        else TorchvisionDetector(model, max_det=options.max_det or 100)
    )
    nc = num_classes(model)
    contract = loaded.contract
    upd: dict[str, Any] = {
        "task": "detect",
        "mean": [0.0, 0.0, 0.0],
        "std": [1.0, 1.0, 1.0],
        "scale": 1.0 / 255.0,
        "color": "RGB",
        "resize": "stretch" if fam == "ssd" else "letterbox",
        "class_names": options.class_names or _class_names(model, loaded, nc),
    }
    contract = contract.model_copy(update=upd)
    return dataclasses.replace(loaded, module=module, contract=contract, guess_task=False)


ADAPTER = register_adapter(
    DetectorAdapter(
        name="torchvision",
        matches=lambda m: family(m) is not None,
        wrap=wrap,
        description="Faster R-CNN, Mask R-CNN / Keypoint R-CNN (boxes), RetinaNet, FCOS, SSD300, SSDlite",
    )
)
