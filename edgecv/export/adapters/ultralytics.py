"""Ultralytics YOLO adapter: YOLOv3u/v5u/v6/v8/v9/v10/11/12/26 models (``ultralytics.nn.tasks``) exported like a zoo
detector.

Two sources build an Ultralytics model (both end in :func:`load_ultralytics`):

* ``ultralytics:<model>.yaml`` — built from a yaml shipped with Ultralytics (``yolov8n.yaml``, ``yolo11s.yaml``,
  ``yolov10n.yaml``, ``yolo26n.yaml``; the scale letter picks the width/depth as in Ultralytics) or a local yaml
  file, with random weights (seeded), exactly as Ultralytics builds the model a trained checkpoint holds. Kwargs:
  ``nc`` (or ``num_classes``), ``imgsz`` (default 640), ``ch``.
* an Ultralytics checkpoint (``best.pt``, ``ultralytics:best.pt``): a full Python pickle, so loading it runs code
  from the file; it is loaded only with ``trust_checkpoint=True`` (``--trust-checkpoint``) and the manifest records
  ``trusted_pickle: true``. Such a bundle's live reference is never rebuilt from the manifest (see
  :func:`edgecv.export.sources.load_model_from_manifest`): validate compares with ``reference.npz`` unless the user
  names a ``file.py:factory`` that loads the checkpoint.

A model returned by a ``file.py:factory`` is matched by :func:`matches` and wrapped the same way.

The wrapped module speaks the zoo detector protocol (:mod:`edgecv.export.adapters`):

* NMS heads (Detect, Segment — boxes only): ``forward`` returns ``(boxes [B,A,4] xyxy input pixels, scores
  [B,A,C])``, decoded from Ultralytics' own inference output (DFL + anchors + strides in the graph), with each anchor
  keeping only its best class, as Ultralytics' ``non_max_suppression(multi_label=False)`` does; ``decode`` passes
  them through, so graph NMS and ``--nms host`` (``format: boxes_scores``) select the same boxes as ``predict()``.
* NMS-free end-to-end heads (v10Detect, the ``end2end`` heads of YOLO26): graph-native; the head's own top-k runs in
  the graph and the outputs are ``boxes, scores, classes, num_dets`` (rows at or below ``score_threshold`` zeroed).

Preprocessing is Ultralytics': letterbox to the model's ``imgsz`` (centred, gray 114), RGB, ``/255``, no mean/std.
Classification models (``ClassificationModel``) load through the same source with a center-crop contract; pose, OBB,
semantic/depth and RT-DETR heads are refused with one line. This is the build tier; Ultralytics is the optional extra
``edgecv[ultralytics]`` (AGPL-3.0).
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgecv.errors import ConfigError, ModelSourceError, UnknownNameError
from edgecv.export.adapters import AdapterOptions, DetectorAdapter, register_adapter

if TYPE_CHECKING:
    from edgecv.export.loaded import LoadedModel

PREFIX = "ultralytics:"
#: head classes whose inference output is [B, 4 + nc (+ extra), anchors] decoded boxes (xywh) + class scores
NMS_HEADS = ("Detect", "Segment", "Segment26", "YOLOEDetect", "YOLOESegment", "YOLOESegment26", "WorldDetect")
#: heads the adapter does not export (their outputs are not boxes + class scores)
REFUSED_HEADS = {
    "Pose": "pose keypoints",
    "Pose26": "pose keypoints",
    "OBB": "rotated boxes",
    "OBB26": "rotated boxes",
    "RTDETRDecoder": "RT-DETR queries",
    "SemanticSegment": "semantic masks",
    "Depth": "depth maps",
}
#: Ultralytics' preprocessing (LetterBox + /255, no normalization)
CONTRACT_DEFAULTS: dict[str, Any] = {
    "resize": "letterbox",
    "pad_value": 114,
    "color": "RGB",
    "scale": 1.0 / 255.0,
    "mean": [0.0, 0.0, 0.0],
    "std": [1.0, 1.0, 1.0],
    "layout": "NCHW",
    "dtype": "float32",
}
DEFAULT_IMGSZ = 640
_BUILD_KWARGS = ("nc", "num_classes", "imgsz", "ch")


def _ultralytics() -> Any:
    # Ultralytics logs to stdout; keep it quiet so `--json` output stays clean (a user's own setting wins)
    os.environ.setdefault("YOLO_VERBOSE", "False")
    os.environ.setdefault("YOLO_OFFLINE", "True")
    from edgecv._lazy import lazy_import

    return lazy_import("ultralytics", "ultralytics")


# --------------------------------------------------------------------------------------------- matching
def matches(module: Any) -> bool:
    """An Ultralytics model (``ultralytics.nn.tasks.*Model``) whose last layer is a head the adapter knows."""
    if not type(module).__module__.startswith("ultralytics."):
        return False
    head = _head(module)
    return head is not None and (
        type(head).__name__ in NMS_HEADS or type(head).__name__ in REFUSED_HEADS or _is_detect(head)
    )


def _head(module: Any) -> Any:
    layers = getattr(module, "model", None)
    try:
        return layers[-1] if layers is not None else None
    except (TypeError, IndexError):
        return None


def _is_detect(head: Any) -> bool:
    return any(c.__name__ == "Detect" and c.__module__.startswith("ultralytics.") for c in type(head).__mro__)


def is_end2end(head: Any) -> bool:
    """Whether the head infers NMS-free (one-to-one branch: v10Detect, YOLO26's end2end heads)."""
    return bool(getattr(head, "end2end", False))


def class_names(module: Any, nc: int) -> list[str]:
    names = getattr(module, "names", None)
    if isinstance(names, dict) and len(names) == nc:
        return [str(names[k]) for k in sorted(names)]
    if isinstance(names, (list, tuple)) and len(names) == nc:
        return [str(n) for n in names]
    return [str(k) for k in range(nc)]


def model_strides(module: Any) -> list[int]:
    stride: Any = getattr(_head(module), "stride", None)
    if stride is None or not len(stride):
        stride = getattr(module, "stride", None)
    if stride is None:
        return [32]
    return [int(s) for s in (stride.tolist() if hasattr(stride, "tolist") else stride)]


# --------------------------------------------------------------------------------------------- wrappers
def _wrappers() -> tuple[type, type]:
    from edgecv._lazy import lazy_import

    lazy_import("torch")  # a missing torch fails here, naming the extra to install
    import torch

    class UltralyticsDetector(torch.nn.Module):
        """Ultralytics model with an NMS head → ``(boxes xyxy [B,A,4], scores [B,A,C])``, best class per anchor."""

        def __init__(self, model: Any, num_classes: int, strides: list[int]) -> None:
            super().__init__()
            self.model = model
            self.num_classes = num_classes
            self.strides = list(strides)

        def forward(self, x: Any) -> tuple[Any, Any]:
            y = self.model(x)
            if isinstance(y, (tuple, list)):  # Segment: (detections, prototypes); the boxes are the first
                y = y[0]
            nc = self.num_classes
            xywh = y[:, :4].transpose(1, 2)
            scores = y[:, 4 : 4 + nc].transpose(1, 2)
            xy, wh = xywh[..., :2], xywh[..., 2:4]
            boxes = torch.cat([xy - wh / 2, xy + wh / 2], -1)
            # Ultralytics' NMS (multi_label=False) gives each anchor its best class only: zero the others, so that
            # per-class NMS here suppresses exactly what predict() suppresses
            best = scores.amax(-1, keepdim=True)
            scores = torch.where(scores >= best, scores, torch.zeros_like(scores))
            return boxes, scores

        def decode(self, raw: Any) -> tuple[Any, Any]:
            boxes, scores = raw
            return boxes, scores

        def decode_info(self) -> dict[str, Any]:
            return {
                "format": "boxes_scores",
                "num_classes": self.num_classes,
                "num_outputs": 2,
                "head_strides": self.strides,
            }

    class UltralyticsEnd2End(torch.nn.Module):
        """NMS-free Ultralytics head → graph outputs ``boxes, scores, classes, num_dets`` (its own top-k)."""

        exports_graph_nms = True

        def __init__(self, model: Any, num_classes: int) -> None:
            super().__init__()
            self.model = model
            self.num_classes = num_classes
            self.score_threshold = 0.001

        def set_postprocess(self, score_threshold: float, iou_threshold: float, max_det: int) -> None:
            self.score_threshold = float(score_threshold)  # no NMS, so no IoU threshold
            _head(self.model).max_det = int(max_det)

        def forward(self, x: Any) -> dict[str, Any]:
            y = self.model(x)
            if isinstance(y, (tuple, list)):
                y = y[0]
            # [B, K, 6 (+extra)]: x1 y1 x2 y2 score class, best first (top-k over anchors × classes)
            scores = y[..., 4]
            keep = scores > self.score_threshold
            k = keep.to(y.dtype)
            return {
                "boxes": y[..., :4] * k[..., None],
                "scores": scores * k,
                "classes": y[..., 5].to(torch.int64) * keep.to(torch.int64),
                "num_dets": keep.to(torch.int64).sum(1),
            }

    return UltralyticsDetector, UltralyticsEnd2End


def _prepare_model(model: Any) -> Any:
    """Inference form as Ultralytics exports it: fused conv+BN, eval, the head returning its tensor only."""
    model = model.float().eval()
    if hasattr(model, "fuse"):
        model = model.fuse(verbose=False) if "verbose" in _params(model.fuse) else model.fuse()
    for m in model.modules():
        if hasattr(m, "inplace") and isinstance(m.inplace, bool):
            m.inplace = False
    head = _head(model)
    head.export = True
    head.format = "onnx"
    # recompute anchors/strides on every forward instead of caching them: a cache filled under inference_mode (the
    # reference run) cannot be traced later, and for a fixed input size the exporter folds them into constants
    head.dynamic = True
    return model.eval()


def _params(fn: Any) -> set[str]:
    import inspect

    try:
        return set(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return set()


def wrap(loaded: LoadedModel, options: AdapterOptions) -> LoadedModel:
    """Wrap an Ultralytics model for :func:`edgecv.export.detection.prepare_detection_export`."""
    model = loaded.module
    head = _head(model)
    hname = type(head).__name__
    if hname in REFUSED_HEADS:
        raise ConfigError(
            f"Ultralytics {hname} head: expected a detection (Detect/Segment/v10Detect) head; "
            f"{REFUSED_HEADS[hname]} are not exported by the Ultralytics adapter"
        )
    nc = int(getattr(head, "nc", 0))
    if nc < 1:
        raise ConfigError(f"Ultralytics {hname} head: expected a class count (head.nc), found {nc}")
    end2end = is_end2end(head)
    model = _prepare_model(model)
    strides = model_strides(model)
    UltralyticsDetector, UltralyticsEnd2End = _wrappers()
    module = UltralyticsEnd2End(model, nc) if end2end else UltralyticsDetector(model, nc, strides)
    contract = loaded.contract
    upd: dict[str, Any] = {"task": "detect"}
    if not str(loaded.source_info.get("kind", "")).startswith("ultralytics"):
        # a factory-built model: its contract is a generic default; Ultralytics models are always fed this way
        upd.update(CONTRACT_DEFAULTS)
    if not contract.class_names or len(contract.class_names) != nc:
        upd["class_names"] = class_names(model, nc)
    _check_size(contract.hw, max(strides))
    contract = contract.model_copy(update=upd)
    module.eval()
    return dataclasses.replace(loaded, module=module, contract=contract, guess_task=False)


def _check_size(hw: tuple[int, int], stride: int) -> None:
    if hw[0] % stride or hw[1] % stride:
        raise ConfigError(
            f"input size: expected height and width multiples of the model's largest stride {stride}, "
            f"found {hw[0]}x{hw[1]}"
        )


ADAPTER = register_adapter(
    DetectorAdapter(
        name="ultralytics",
        matches=matches,
        wrap=wrap,
        description="Ultralytics YOLO (v3u/v5u/v8/v9/v10/11/12/26) Detect, Segment (boxes) and end-to-end heads",
    )
)


# --------------------------------------------------------------------------------------------- sources
def packaged_yamls() -> list[str]:
    """Model yamls shipped with the installed Ultralytics (file names, e.g. ``yolov8.yaml``)."""
    ul = _ultralytics()
    root = Path(ul.__file__).parent / "cfg" / "models"
    return sorted({p.name for p in root.rglob("*.yaml")})


def _resolve_yaml(name: str) -> tuple[Path | None, str]:
    """``yolov8n.yaml`` → (None, its name) once the unified name is found among the packaged yamls; a file → (path,
    its path)."""
    p = Path(name).expanduser()
    if p.is_file():
        return p.resolve(), str(p.resolve())
    if "/" in name or "\\" in name:
        raise ModelSourceError(f"Ultralytics model yaml '{name}' does not exist")
    stem = Path(name).stem
    # Ultralytics' v5 yaml is the anchor-free "u" model: yolov5nu.yaml (the name of its weights) means yolov5n.yaml
    stem = re.sub(r"^(yolov5[nslmx])u$", r"\1", stem)
    unified = re.sub(r"(\d+)([nslmx])(.+)?$", r"\1\3", stem)
    shipped = packaged_yamls()
    if f"{stem}.yaml" not in shipped and f"{unified}.yaml" not in shipped:
        import difflib

        close = difflib.get_close_matches(f"{stem}.yaml", shipped, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise UnknownNameError(
            f"unknown Ultralytics model yaml '{name}'{hint}; expected one of the installed "
            f"Ultralytics yamls with a scale letter, e.g. yolov8n.yaml, yolo11s.yaml: "
            f"{', '.join(shipped)}"
        )
    return None, f"{stem}.yaml"


def _imgsz(value: Any) -> tuple[int, int]:
    vals = [value, value] if isinstance(value, int) else list(value) if isinstance(value, (list, tuple)) else []
    if len(vals) == 1:
        vals = vals * 2
    if len(vals) != 2 or not all(isinstance(v, int) and v > 0 for v in vals):
        raise ConfigError(f"imgsz: expected a positive integer or [h, w], found {value!r}")
    return int(vals[0]), int(vals[1])


def _contract_for(model: Any, task: str, imgsz: tuple[int, int], ch: int) -> Any:
    from edgecv.bundle import Contract

    if task == "classify":
        nc = int(_head(model).linear.out_features) if hasattr(_head(model), "linear") else 0
        # Ultralytics classify_transforms: resize the short side to imgsz, center crop imgsz, /255, no normalization
        return Contract(
            task="classify",
            input_shape=[1, ch, *imgsz],
            resize="center_crop",
            crop_ratio=1.0,
            mean=[0.0] * ch,
            std=[1.0] * ch,
            color="RGB",
            decode={"activation": "none"},
            class_names=class_names(model, nc) if nc else [],
        )
    nc = int(getattr(_head(model), "nc", 0))
    return Contract(
        task="detect",
        input_shape=[1, ch, *imgsz],
        class_names=class_names(model, nc),
        **{**CONTRACT_DEFAULTS, "mean": [0.0] * ch, "std": [1.0] * ch},
    )


def _check_task(task: str, what: str) -> None:
    if task not in ("detect", "segment", "classify"):
        raise ModelSourceError(
            f"{what}: an Ultralytics {task} model; expected detect, segment (exported as boxes) or classify"
        )


def load_ultralytics(body: str, kwargs: dict[str, Any], *, trust_checkpoint: bool = False) -> LoadedModel:
    """``ultralytics:<body>``: a yaml (packaged name or local file) built with random weights, or a ``.pt``
    checkpoint (needs ``trust_checkpoint``). Call inside :func:`edgecv.export.sources.load_model`'s seeded scope."""
    if body.lower().endswith((".pt", ".pth")):
        path = Path(body).expanduser()
        if not path.is_file():
            raise ModelSourceError(f"Ultralytics checkpoint '{body}' does not exist")
        if kwargs:
            raise ConfigError(
                f"model kwargs do not apply to a checkpoint ('{path.name}' holds its own model), found {sorted(kwargs)}"
            )
        return load_checkpoint(path.resolve(), trust_checkpoint=trust_checkpoint)
    if not body.lower().endswith((".yaml", ".yml")):
        raise ModelSourceError(
            f"ultralytics:{body}: expected a model yaml (ultralytics:yolov8n.yaml) or a checkpoint "
            "(ultralytics:best.pt)"
        )
    unknown = sorted(set(kwargs) - set(_BUILD_KWARGS))
    if unknown:
        raise ConfigError(
            f"ultralytics:{body}: expected kwargs among {', '.join(_BUILD_KWARGS)}, found {', '.join(unknown)}"
        )
    if "nc" in kwargs and "num_classes" in kwargs and kwargs["nc"] != kwargs["num_classes"]:
        raise ConfigError(f"nc={kwargs['nc']} and num_classes={kwargs['num_classes']} disagree")
    nc = kwargs.get("nc", kwargs.get("num_classes"))
    if nc is not None and (not isinstance(nc, int) or nc < 1):
        raise ConfigError(f"nc: expected a positive integer, found {nc!r}")
    ch = kwargs.get("ch", 3)
    if ch not in (1, 3):
        raise ConfigError(f"ch: expected 1 or 3 input channels, found {ch!r}")
    imgsz = _imgsz(kwargs.get("imgsz", DEFAULT_IMGSZ))
    yaml_path, name = _resolve_yaml(body)
    _ultralytics()
    from ultralytics.nn import tasks

    try:
        cfg = tasks.yaml_model_load(str(yaml_path) if yaml_path else name)
        task = tasks.guess_model_task(cfg)
    except Exception as exc:
        raise ModelSourceError(f"ultralytics:{body}: cannot read the model yaml: {type(exc).__name__}: {exc}") from exc
    _check_task(task, f"ultralytics:{body}")
    cls = {"detect": tasks.DetectionModel, "segment": tasks.SegmentationModel, "classify": tasks.ClassificationModel}[
        task
    ]
    try:
        model = cls(cfg, ch=ch, nc=nc, verbose=False)
    except Exception as exc:
        raise ModelSourceError(f"ultralytics:{body}: building the model failed: {type(exc).__name__}: {exc}") from exc
    model.eval()
    from edgecv.export.loaded import LoadedModel

    contract = _contract_for(model, task, imgsz, ch)
    if task == "classify":
        _prepare_classifier(model)
    info: dict[str, Any] = {
        "kind": "ultralytics" if yaml_path is None else "ultralytics_file",
        "spec": PREFIX + name,
        "kwargs": dict(kwargs),
        "weights": None,
        "ultralytics_task": task,
    }
    if yaml_path is not None:
        from edgecv._io import sha256_file

        info["source_sha256"] = sha256_file(yaml_path)
    return LoadedModel(module=model, contract=contract, source_info=info, name=Path(name).stem)


def _prepare_classifier(model: Any) -> None:
    head = _head(model)
    head.export = True  # Classify returns softmax probabilities only (not the (probs, logits) pair)


# --------------------------------------------------------------------------------------------- checkpoints
def is_ultralytics_checkpoint(path: Path) -> bool:
    """Whether a torch.save file pickles Ultralytics objects, from its pickle bytes only (nothing is unpickled)."""
    import zipfile

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                pkls = [n for n in zf.namelist() if n.endswith("data.pkl")]
                data = zf.read(pkls[0]) if pkls else b""
        else:
            with open(path, "rb") as fh:
                data = fh.read(1 << 20)
    except (OSError, zipfile.BadZipFile):
        return False
    return b"ultralytics.nn.tasks" in data or b"ultralytics.nn.modules" in data


def refusal(path: Path) -> ModelSourceError:
    return ModelSourceError(
        f"refused to load '{path.name}': it is an Ultralytics checkpoint, a full Python pickle, and loading it runs "
        "code from the file; pass --trust-checkpoint if you trust where it came from"
    )


def load_checkpoint(path: Path, *, trust_checkpoint: bool) -> LoadedModel:
    """An Ultralytics ``.pt`` (``ema`` or ``model`` of a trainer checkpoint) → a LoadedModel; refused without
    trust."""
    if not trust_checkpoint:
        raise refusal(path)
    _ultralytics()
    from ultralytics.nn import tasks

    from edgecv._io import sha256_file
    from edgecv.export.loaded import LoadedModel

    try:
        model, _ckpt = tasks.load_checkpoint(str(path))
    except Exception as exc:
        raise ModelSourceError(
            f"cannot load Ultralytics checkpoint '{path.name}': {type(exc).__name__}: "
            f"{' '.join(str(exc).split())[:300]}"
        ) from exc
    task = str(getattr(model, "task", "detect"))
    _check_task(task, f"'{path.name}'")
    args = getattr(model, "args", {}) or {}
    imgsz = _imgsz(args.get("imgsz", DEFAULT_IMGSZ) if isinstance(args, dict) else DEFAULT_IMGSZ)
    ch = int(getattr(model, "yaml", {}).get("channels", 3)) if isinstance(getattr(model, "yaml", None), dict) else 3
    contract = _contract_for(model, task, imgsz, ch)
    if task == "classify":
        _prepare_classifier(model)
    info: dict[str, Any] = {
        "kind": "ultralytics_checkpoint",
        "spec": str(path),
        "kwargs": {},
        "weights": None,
        "source_sha256": sha256_file(path),
        "trusted_pickle": True,
        "ultralytics_task": task,
    }
    return LoadedModel(
        module=model.float().eval(),
        contract=contract,
        source_info=info,
        name=path.stem,
        notes=[f"'{path.name}' was unpickled with --trust-checkpoint (a full pickle runs code)"],
    )
