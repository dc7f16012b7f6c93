"""Loaders for the three task layouts, as torch Datasets over images decoded by OpenCV (BGR uint8).

* classification: an ImageFolder tree ``root/<class>/<image>``;
* detection: COCO JSON or YOLO txt; targets are ``{"boxes": (N,4) xyxy pixels, "labels": (N,) class ids}``,
  batched by :func:`detection_collate` (variable box counts);
* segmentation: ``root/images/<stem>.*`` with ``root/masks/<stem>.png`` holding class ids (255 = ignore).

Bad data raises :class:`~edgecv.errors.DataError` naming the file (and the line or annotation): annotations are
checked when the data set is built, images when they are read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import Dataset

from edgecv._lazy import lazy_import
from edgecv.data.readers import IMG_EXTS, list_images, read_class_names, read_coco, read_image, read_yolo
from edgecv.errors import DataError

if TYPE_CHECKING:
    from edgecv.data.layout import Layout

IGNORE_INDEX = 255


def _cv2() -> Any:
    return lazy_import("cv2", "data")


class _Base(Dataset):  # type: ignore[type-arg]
    task = "generic"
    labeled = True
    classes: list[str]
    layout: Layout | None = None  # how open_dataset found it

    def __init__(self, transform: Callable[..., Any] | None = None) -> None:
        self.transform = transform

    def _out(self, img: np.ndarray, target: Any) -> Any:
        return self.transform(img, target) if self.transform is not None else (img, target)


class ImageFolderDataset(_Base):
    """Classification tree ``root/<class>/<image>``; classes are the sorted sub-folder names."""

    task = "classify"

    def __init__(
        self, root: str | Path, transform: Callable[..., Any] | None = None, classes: Sequence[str] | None = None
    ) -> None:
        super().__init__(transform)
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"{self.root}: data folder not found (expected an ImageFolder tree root/<class>/<image>)")
        found = sorted(d.name for d in self.root.iterdir() if d.is_dir() and not d.name.startswith("."))
        self.classes = list(classes) if classes is not None else found
        if not self.classes:
            raise DataError(f"{self.root}: no class sub-folders (expected root/<class>/<image>)")
        extra = sorted(set(found) - set(self.classes))
        if extra:
            raise DataError(
                f"{self.root / extra[0]}: unknown class folder '{extra[0]}'; expected one of: {', '.join(self.classes)}"
            )
        self.samples: list[tuple[Path, int]] = []
        for i, c in enumerate(self.classes):
            d = self.root / c
            if d.is_dir():
                self.samples.extend((p, i) for p in list_images(d, recursive=True))
        if not self.samples:
            raise DataError(f"{self.root}: no images ({', '.join(IMG_EXTS)}) under the class folders")
        self.targets = [t for _, t in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> Any:
        p, t = self.samples[i]
        return self._out(read_image(p), t)


class ImageListDataset(_Base):
    """Unlabelled images in a folder (recursive), e.g. calibration or distillation data; target is -1."""

    labeled = False

    def __init__(self, root: str | Path, transform: Callable[..., Any] | None = None) -> None:
        super().__init__(transform)
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"{self.root}: image folder not found")
        self.files = list_images(self.root, recursive=True)
        if not self.files:
            raise DataError(f"{self.root}: no images ({', '.join(IMG_EXTS)})")
        self.classes = []

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> Any:
        return self._out(read_image(self.files[i]), -1)


class _Detection(_Base):
    task = "detect"
    records: list[tuple[Path, np.ndarray, np.ndarray]]  # image, boxes (normalised or pixels), labels
    normalized = False

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> Any:
        path, boxes, labels = self.records[i]
        img = read_image(path)
        b = boxes.copy()
        if self.normalized:
            h, w = img.shape[:2]
            b *= np.array([w, h, w, h], np.float32)
        return self._out(img, {"boxes": b, "labels": labels.copy(), "image_id": i})


class CocoDetection(_Detection):
    """COCO instances JSON, parsed by :func:`edgecv.data.readers.read_coco` (the one COCO reader).

    Args:
        ann_file: the JSON file.
        image_root: folder that ``file_name`` is relative to (default: the JSON's folder).
        classes: class names to map categories to by name (a mismatch is refused); default: the file's categories
            as contiguous ids in sorted id order.
    """

    def __init__(
        self,
        ann_file: str | Path,
        image_root: str | Path | None = None,
        transform: Callable[..., Any] | None = None,
        skip_crowd: bool = True,
        classes: Sequence[str] | None = None,
    ) -> None:
        super().__init__(transform)
        self.ann_file = Path(ann_file)
        coco = read_coco(self.ann_file, image_root, class_names=classes, skip_crowd=skip_crowd)
        self.cat_ids = coco.cat_ids
        self.classes = coco.classes
        self.records = coco.records


class YoloDetection(_Detection):
    """YOLO txt labels: ``images/.../x.jpg`` with ``labels/.../x.txt`` lines ``class cx cy w h`` (normalised),
    parsed by :func:`edgecv.data.readers.read_yolo` (the one YOLO reader).

    Args:
        images_dir: folder of images.
        labels_dir: folder of labels (default: ``images_dir`` with its last ``images`` part replaced by ``labels``).
        classes: class names (default: ``classes.txt`` or ``data.yaml`` ``names`` near the images).
    """

    normalized = True

    def __init__(
        self,
        images_dir: str | Path,
        labels_dir: str | Path | None = None,
        classes: Sequence[str] | None = None,
        transform: Callable[..., Any] | None = None,
    ) -> None:
        super().__init__(transform)
        yolo = read_yolo(images_dir, labels_dir, classes)
        self.images_dir, self.labels_dir = yolo.images_dir, yolo.labels_dir
        self.classes = yolo.classes
        self.records = yolo.records


class SegmentationFolder(_Base):
    """``root/images/<stem>.*`` with ``root/masks/<stem>.png`` of class ids (0..C-1; 255 = ignore)."""

    task = "segment"

    def __init__(
        self,
        root: str | Path,
        num_classes: int | None = None,
        classes: Sequence[str] | None = None,
        transform: Callable[..., Any] | None = None,
    ) -> None:
        super().__init__(transform)
        self.root = Path(root)
        img_dir, mask_dir = self.root / "images", self.root / "masks"
        for d in (img_dir, mask_dir):
            if not d.is_dir():
                raise DataError(f"{d}: folder not found (expected root/images and root/masks)")
        names = list(classes) if classes is not None else read_class_names(self.root)
        if names is None and num_classes is None:
            raise DataError(f"{self.root}: no classes.txt here or in the parent folder; pass num_classes")
        self.classes = names if names is not None else [str(i) for i in range(int(num_classes or 0))]
        self.num_classes = int(num_classes) if num_classes is not None else len(self.classes)
        self.samples: list[tuple[Path, Path]] = []
        for img in list_images(img_dir):
            m = mask_dir / f"{img.stem}.png"
            if not m.is_file():
                raise DataError(f"{m}: missing mask file for image {img.name}")
            self.samples.append((img, m))
        if not self.samples:
            raise DataError(f"{img_dir}: no images ({', '.join(IMG_EXTS)})")

    def __len__(self) -> int:
        return len(self.samples)

    def read_mask(self, i: int) -> np.ndarray:
        _img_path, m = self.samples[i]
        cv2 = _cv2()
        mask = read_image(m, cv2.IMREAD_UNCHANGED)
        if mask.ndim != 2:
            raise DataError(f"{m}: expected a single-channel mask of class ids, found shape {mask.shape}")
        values = np.unique(mask)
        bad = values[(values >= self.num_classes) & (values != IGNORE_INDEX)]
        if bad.size:
            raise DataError(
                f"{m}: unknown class id {int(bad[0])}; expected 0..{self.num_classes - 1} or {IGNORE_INDEX} (ignore)"
            )
        return mask

    def __getitem__(self, i: int) -> Any:
        img_path, m = self.samples[i]
        img = read_image(img_path)
        mask = self.read_mask(i)
        if mask.shape != img.shape[:2]:
            raise DataError(
                f"{m}: mask is {mask.shape[1]}x{mask.shape[0]} but image {img_path.name} is "
                f"{img.shape[1]}x{img.shape[0]}"
            )
        return self._out(img, mask)


def detection_collate(batch: Sequence[tuple[Any, dict[str, Any]]]) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """Stack images; keep targets as a list (each image has its own number of boxes)."""
    imgs = torch.stack([torch.as_tensor(b[0]) for b in batch])
    targets = []
    for _, t in batch:
        targets.append({k: torch.as_tensor(v) if isinstance(v, np.ndarray) else v for k, v in t.items()})
    return imgs, targets


class ImageTransform:
    """Resize (stretch), augment, convert BGR uint8 → normalised float CHW tensor, for every task's target.

    Called as ``transform(img, target, rng)``; ``rng`` (numpy Generator) drives the augmentation so a run is
    reproducible whatever the number of loader workers.
    """

    def __init__(
        self,
        size: tuple[int, int],
        mean: Sequence[float],
        std: Sequence[float],
        color: str = "RGB",
        task: str = "classify",
        augment: Any = None,
    ) -> None:
        self.h, self.w = int(size[0]), int(size[1])
        self.mean = np.asarray(mean, np.float32).reshape(1, 1, -1) * 255.0
        self.std = np.asarray(std, np.float32).reshape(1, 1, -1) * 255.0
        self.color = color
        self.task = task
        self.augment = augment

    def __call__(self, img: np.ndarray, target: Any, rng: np.random.Generator | None = None) -> Any:
        cv2 = _cv2()
        h0, w0 = img.shape[:2]
        if (h0, w0) != (self.h, self.w):
            img = cv2.resize(img, (self.w, self.h), interpolation=cv2.INTER_AREA if h0 > self.h else cv2.INTER_LINEAR)
            if self.task == "segment":
                target = cv2.resize(target, (self.w, self.h), interpolation=cv2.INTER_NEAREST)
            elif self.task == "detect":
                target = dict(target)
                target["boxes"] = target["boxes"] * np.array([self.w / w0, self.h / h0] * 2, np.float32)
        x = img.astype(np.float32)
        a = self.augment
        if a is not None and rng is not None:
            x, target = self._augment(x, target, rng, a)
        if self.color == "RGB":
            x = x[..., ::-1]
        x = (x - self.mean) / self.std
        tensor = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))
        if self.task == "segment":
            return tensor, torch.from_numpy(np.ascontiguousarray(target).astype(np.int64))
        if self.task == "detect":
            return tensor, target
        return tensor, int(target)

    def _augment(self, x: np.ndarray, target: Any, rng: np.random.Generator, a: Any) -> tuple[np.ndarray, Any]:
        cv2 = _cv2()
        if a.hflip and rng.random() < 0.5:
            x = x[:, ::-1]
            if self.task == "segment":
                target = target[:, ::-1]
            elif self.task == "detect":
                b = target["boxes"].copy()
                b[:, [0, 2]] = self.w - b[:, [2, 0]]
                target = {**target, "boxes": b}
        if a.vflip and rng.random() < 0.5:
            x = x[::-1]
            if self.task == "segment":
                target = target[::-1]
            elif self.task == "detect":
                b = target["boxes"].copy()
                b[:, [1, 3]] = self.h - b[:, [3, 1]]
                target = {**target, "boxes": b}
        rotate, scale = getattr(a, "rotate", 0.0), getattr(a, "scale", 0.0)
        if (a.translate > 0 or rotate > 0 or scale > 0) and self.task != "detect":
            # one random affine: rotation ± rotate degrees and zoom 1 ± scale about the centre, then a shift
            dx, dy = rng.uniform(-a.translate, a.translate, 2) * np.array([self.w, self.h])
            angle = rng.uniform(-rotate, rotate) if rotate > 0 else 0.0
            zoom = 1.0 + rng.uniform(-scale, scale) if scale > 0 else 1.0
            m = cv2.getRotationMatrix2D((self.w / 2.0, self.h / 2.0), angle, zoom).astype(np.float32)
            m[:, 2] += (dx, dy)
            x = cv2.warpAffine(np.ascontiguousarray(x), m, (self.w, self.h), borderMode=cv2.BORDER_REFLECT)
            if self.task == "segment":
                target = cv2.warpAffine(
                    np.ascontiguousarray(target), m, (self.w, self.h), flags=cv2.INTER_NEAREST, borderValue=IGNORE_INDEX
                )
        if a.contrast > 0 or a.brightness > 0:
            c = 1.0 + rng.uniform(-a.contrast, a.contrast)
            b = rng.uniform(-a.brightness, a.brightness) * 255.0
            x = (x - 128.0) * c + 128.0 + b
        return x, target


class TransformedDataset(Dataset):  # type: ignore[type-arg]
    """Applies ``transform(img, target, rng)`` with a generator seeded by (seed, epoch, index).

    Call :meth:`set_epoch` before each epoch (the trainer does): augmentation then differs per epoch but is the same
    on every rerun and on resume, whether loading runs in the main process or in workers.
    """

    def __init__(self, base: Any, transform: Callable[..., Any], seed: int = 0, train: bool = False) -> None:
        self.base, self.transform, self.seed, self.train = base, transform, int(seed), train
        self.epoch = 0
        self.classes = getattr(base, "classes", [])
        self.labeled = getattr(base, "labeled", True)
        self.task = getattr(base, "task", "generic")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> Any:
        img, target = self.base[i]
        rng = np.random.default_rng([self.seed, self.epoch, int(i)]) if self.train else None
        return self.transform(img, target, rng)


def open_dataset(
    task: str,
    path: str | Path,
    fmt: str | None = None,
    split: str = "train",
    classes: Sequence[str] | None = None,
    what: str = "data",
) -> Any:
    """Open the data set at ``path`` for ``task`` (untransformed: items are ``(BGR image, target)``).

    Args:
        task: classify, detect or segment.
        path: the data set root or its split folder, in any layout :func:`edgecv.data.layout.find_layout` accepts
            (ImageFolder; COCO JSON or YOLO folders; images + masks); any folder of images when ``fmt == "images"``.
        fmt: imagefolder, coco, yolo, masks or images; found from the folder when None (detect: YOLO before COCO).
        split: the split a root is resolved to.
        what: the option or argument named in errors.
    """
    from edgecv.data.layout import find_layout

    p = Path(path)
    if not p.exists():
        raise DataError(f"{what}: expected a data set folder, found no such path '{p}'")
    if fmt == "images":
        return ImageListDataset(p)
    prefer = ("yolo", "coco") if task == "detect" else None
    lay = find_layout(task, p, split=split, fmt=fmt, prefer=prefer, what=what)
    ds: _Base
    if lay.kind == "imagefolder":
        ds = ImageFolderDataset(lay.path, classes=classes)
    elif lay.kind == "masks":
        ds = SegmentationFolder(lay.path, classes=classes)
    elif lay.kind == "coco":
        ds = CocoDetection(lay.path, classes=classes)  # a val split maps its categories to the train classes by name
    else:
        ds = YoloDetection(lay.path, lay.labels, classes=classes)
    ds.layout = lay
    return ds
