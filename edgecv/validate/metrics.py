"""Validation sets and task metrics for the accuracy budget (runtime tier: OpenCV + numpy, no torch).

A metric is ``metric_fn(runner, val_set) -> float`` in **points** (0–100), chosen by ``contract.task`` from
:data:`TASK_METRICS`; a validation reader is ``reader(path, contract, limit) -> ValSet`` chosen the same way
from :data:`VAL_READERS`. validate owns the task metrics; quant's accuracy budget scores its candidates with them.

Layouts read here:

* classify: an ImageFolder tree, ``VAL/<class_name>/*.jpg``; class folders must be named like
  ``contract.class_names`` (a folder that is not a class is an error, a class without a folder is fine).
* segment: ``VAL/images/<stem>.<ext>`` and ``VAL/masks/<stem>.png`` (single-channel, pixel = class index,
  255 = ignore); masks follow the same resize as the image (nearest neighbour).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from edgecv._lazy import lazy_import
from edgecv.data.readers import read_image
from edgecv.errors import ConfigError, DataError
from edgecv.registry import Registry
from edgecv.tasks.preprocess import Transform, preprocess

if TYPE_CHECKING:
    from edgecv.backends.base import Runner
    from edgecv.bundle import Contract

IGNORE_INDEX = 255
#: the image files a validation (and calibration: edgecv.quant.calib) folder is read from
IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})


@dataclass
class ValSet:
    """Validation samples: preprocessed feed + target, produced lazily from files on each pass."""

    contract: Contract
    items: list[tuple[Path, Any]]  # (image path, target: class index | mask path)
    load: Callable[[Path, Any], tuple[dict[str, np.ndarray], Any]]
    path: Path = field(default_factory=Path)

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[tuple[dict[str, np.ndarray], Any]]:
        for img, tgt in self.items:
            yield self.load(img, tgt)

    def materialize(self) -> ValSet:
        """Decode everything once (a budget search scores many models on the same set)."""
        cached = [self.load(i, t) for i, t in self.items]
        return ValSet(self.contract, [(Path(str(k)), c) for k, c in enumerate(cached)], lambda _p, c: c, self.path)


MetricFn = Callable[["Runner", ValSet], float]
ValReader = Callable[[Path, "Contract", "int | None"], ValSet]

TASK_METRICS: Registry[MetricFn] = Registry("task metric")
VAL_READERS: Registry[ValReader] = Registry("validation reader")


def _feed(img: np.ndarray, contract: Contract) -> tuple[dict[str, np.ndarray], Transform]:
    x, tf = preprocess(img, contract)
    return {contract.input_name: x}, tf


def _limit(items: list, limit: int | None) -> list:  # type: ignore[type-arg]
    if limit is None or limit >= len(items):
        return items
    idx = np.linspace(0, len(items) - 1, limit).round().astype(int)
    return [items[i] for i in sorted(set(idx.tolist()))]


# ---------------------------------------------------------------------------------------------------- classify
def read_imagefolder(path: Path, contract: Contract, limit: int | None = None) -> ValSet:
    """An ImageFolder tree whose class folders are named like ``contract.class_names``."""
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"--val: expected an ImageFolder tree (one folder per class), found '{path}'")
    names = list(contract.class_names)
    if not names:
        raise DataError("--val for classify: the bundle contract has no class_names to match folders against")
    index = {n: i for i, n in enumerate(names)}
    items: list[tuple[Path, Any]] = []
    for d in sorted(p for p in path.iterdir() if p.is_dir()):
        if d.name not in index:
            raise DataError(
                f"--val '{path}': folder '{d.name}' is not a class of this model; expected folders "
                f"named from {names[:10]}{'…' if len(names) > 10 else ''}"
            )
        items += [(f, index[d.name]) for f in sorted(d.iterdir()) if f.suffix.lower() in IMAGE_EXTS]
    if not items:
        raise DataError(f"--val '{path}': expected images in class folders, found none")

    def load(img: Path, tgt: Any) -> tuple[dict[str, np.ndarray], Any]:
        return _feed(read_image(img), contract)[0], int(tgt)

    return ValSet(contract, _limit(items, limit), load, path)


class Infers(Protocol):
    """Anything with a Runner's ``infer`` (a backend runner, or a wrapper that replays its outputs)."""

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


def _first_output(runner: Infers, feed: dict[str, np.ndarray], contract: Contract) -> np.ndarray:
    out = runner.infer(feed)
    for name in contract.output_names:
        if name in out:
            return out[name]
    return next(iter(out.values()))


def top1(runner: Runner, val: ValSet) -> float:
    """Top-1 accuracy in percent."""
    hits = 0
    for feed, label in val:
        logits = _first_output(runner, feed, val.contract)
        hits += int(int(np.argmax(logits.reshape(logits.shape[0], -1)[0])) == label)
    return 100.0 * hits / max(1, len(val))


# ---------------------------------------------------------------------------------------------------- segment
def _mask_like_input(mask: np.ndarray, tf: Transform, contract: Contract) -> np.ndarray:
    """Apply the image's geometric preprocessing to a label mask (nearest neighbour, ignore-padding)."""
    cv2 = lazy_import("cv2", "stream")
    th, tw = contract.hw
    h0, w0 = mask.shape[:2]
    if contract.resize == "stretch":
        return cv2.resize(mask, (tw, th), interpolation=cv2.INTER_NEAREST)
    nw, nh = max(1, round(w0 * tf.scale_x)), max(1, round(h0 * tf.scale_y))
    resized = cv2.resize(mask, (nw, nh), interpolation=cv2.INTER_NEAREST)
    if contract.resize == "letterbox":
        out = np.full((th, tw), IGNORE_INDEX, dtype=mask.dtype)
        top, left = int(tf.pad_y), int(tf.pad_x)
        out[top : top + nh, left : left + nw] = resized
        return out
    top, left = int(-tf.pad_y), int(-tf.pad_x)
    return np.ascontiguousarray(resized[top : top + th, left : left + tw])


def read_segmentation(path: Path, contract: Contract, limit: int | None = None) -> ValSet:
    """``images/`` + ``masks/`` (same stems, masks PNG with class indices)."""
    path = Path(path)
    img_dir, mask_dir = path / "images", path / "masks"
    if not img_dir.is_dir() or not mask_dir.is_dir():
        raise DataError(f"--val for segment: expected '{path}/images' and '{path}/masks' folders")
    masks = {p.stem: p for p in mask_dir.iterdir() if p.suffix.lower() in IMAGE_EXTS}
    items: list[tuple[Path, Any]] = []
    for img in sorted(p for p in img_dir.iterdir() if p.suffix.lower() in IMAGE_EXTS):
        if img.stem not in masks:
            raise DataError(f"--val: image '{img.name}' has no mask '{mask_dir}/{img.stem}.png'")
        items.append((img, masks[img.stem]))
    if not items:
        raise DataError(f"--val '{img_dir}': expected images, found none")
    cv2 = lazy_import("cv2", "stream")

    def load(img: Path, mask_path: Any) -> tuple[dict[str, np.ndarray], Any]:
        feed, tf = _feed(read_image(img), contract)
        mask = read_image(mask_path, cv2.IMREAD_GRAYSCALE)
        return feed, _mask_like_input(mask, tf, contract)

    return ValSet(contract, _limit(items, limit), load, path)


def segment_confusion(runner: Infers, val: ValSet, n: int) -> np.ndarray:
    """The ``n``×``n`` pixel confusion matrix (rows: label, columns: prediction) of ``runner`` over the set; the one
    owner for mIoU and the report's per-class IoU."""
    cv2 = lazy_import("cv2", "stream")
    conf = np.zeros((n, n), dtype=np.int64)
    for feed, mask in val:
        out = _first_output(runner, feed, val.contract)
        pred = out[0].argmax(0) if out.ndim == 4 else out[0]
        pred = pred.astype(np.int32)
        if pred.shape != mask.shape:
            pred = cv2.resize(
                pred.astype(np.uint8), (mask.shape[1], mask.shape[0]), interpolation=cv2.INTER_NEAREST
            ).astype(np.int32)
        valid = (mask != IGNORE_INDEX) & (mask < n)
        conf += np.bincount(mask[valid].astype(np.int64) * n + pred[valid].clip(0, n - 1), minlength=n * n).reshape(
            n, n
        )
    return conf


def miou(runner: Runner, val: ValSet) -> float:
    """Mean IoU in percent over the classes present in labels or predictions (confusion matrix over the set)."""
    conf = segment_confusion(runner, val, max(2, len(val.contract.class_names)))
    inter = np.diag(conf).astype(np.float64)
    union = conf.sum(0) + conf.sum(1) - inter
    present = union > 0
    return float(100.0 * (inter[present] / union[present]).mean()) if present.any() else 0.0


TASK_METRICS.register("classify", top1, unit="top-1 %")
TASK_METRICS.register("segment", miou, unit="mIoU %")
VAL_READERS.register("classify", read_imagefolder)
VAL_READERS.register("segment", read_segmentation)


def metric_for(task: str) -> MetricFn:
    """The task metric for ``task``; raises listing the tasks that have one."""
    if task not in TASK_METRICS:
        raise ConfigError(
            f"--max-drop: no task metric for task '{task}' yet; expected one of {', '.join(TASK_METRICS.names())}"
        )
    return TASK_METRICS.get(task)


def open_val(path: str | Path, contract: Contract, limit: int | None = None) -> ValSet:
    """Read validation data for ``contract.task`` from ``path``."""
    if contract.task not in VAL_READERS:
        raise ConfigError(
            f"--val: no validation reader for task '{contract.task}' yet; expected one of "
            f"{', '.join(VAL_READERS.names())}"
        )
    return VAL_READERS.get(contract.task)(Path(path), contract, limit)


# ---------------------------------------------------------------------------------------------------- detect
def read_detection(path: Path, contract: Contract, limit: int | None = None) -> ValSet:
    """A COCO JSON file, or a folder holding ``val.json`` (what ``edgecv data synth --task detect`` writes);
    categories are matched to ``contract.class_names`` by name."""
    from edgecv.validate.detection import load_coco_samples

    samples = load_coco_samples(str(path), "val", limit=None, class_names=contract.class_names or None)
    if not samples:
        raise DataError(f"--val '{path}': expected annotated images, found none")
    items: list[tuple[Path, Any]] = [(Path(str(k)), s) for k, s in enumerate(_limit(samples, limit))]

    def load(_p: Path, s: Any) -> tuple[dict[str, np.ndarray], Any]:
        img, boxes, labels = s
        feed, tf = _feed(img, contract)
        return feed, (tf, boxes, labels, img.shape[:2])

    return ValSet(contract, items, load, Path(path))


def map50(runner: Runner, val: ValSet) -> float:
    """COCO mAP@0.5 in percent (faster-coco-eval), detections decoded exactly as ``edgecv run`` does."""
    from edgecv.tasks.decode import DetectResult, get_decoder
    from edgecv.validate.detection import coco_map

    dec = get_decoder(val.contract)
    dets, gts, sizes = [], [], []
    for feed, (tf, boxes, labels, hw) in val:
        r = dec.decode(runner.infer(feed), [tf])[0]
        if not isinstance(r, DetectResult):
            raise ConfigError(f"mAP: expected a detector (task detect), found {type(r).__name__} results")
        dets.append((r.boxes, r.scores, r.classes))
        gts.append((boxes, labels))
        sizes.append(hw)
    nc = len(val.contract.class_names) or int(val.contract.decode.get("num_classes", 0))
    return 100.0 * float(coco_map(dets, gts, nc, sizes)["map50"])


TASK_METRICS.register("detect", map50, unit="mAP@0.5 %")
VAL_READERS.register("detect", read_detection)
