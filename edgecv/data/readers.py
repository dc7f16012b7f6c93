"""The one torch-free image, COCO and YOLO reader (runtime tier): run, validate, calibration, export and the
training data sets (``edgecv.data.datasets`` wraps these) decode image files and parse COCO JSON and YOLO txt
labels here, so a photo and an annotation mean the same everywhere.

``cv2.IMREAD_COLOR`` applies the EXIF orientation tag (a phone JPEG shot in portrait comes out upright), always
gives 3-channel BGR uint8 (grey is replicated, alpha dropped, 16-bit reduced to its top 8 bits).
``IMREAD_UNCHANGED`` would ignore the orientation, so it is never used for pixels that reach a model.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgecv._lazy import lazy_import
from edgecv.errors import ConfigError, DataError

IMG_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
BOX_TOL = 1.0  # pixels a COCO box may overhang the image (rounding in exporters)
#: class names of label slots that no category fills: torchvision detectors' background slot 0 and the unused COCO
#: ids in torchvision's 91-name category list; a data set is never expected to have a category for them
PLACEHOLDER_CLASSES = frozenset({"__background__", "N/A"})
YOLO_NORM_TOL = 1e-3  # how far a YOLO box's normalised coordinates may overhang [0, 1]


def _cv2() -> Any:
    return lazy_import("cv2", "data")


def read_image(path: str | Path, flags: int | None = None) -> np.ndarray:
    """Decode an image file: BGR uint8 HxWx3, EXIF orientation applied (``flags`` e.g. ``cv2.IMREAD_GRAYSCALE``
    for masks). A missing or undecodable file raises :class:`DataError` naming it."""
    cv2 = _cv2()
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: missing image file")
    img = cv2.imread(str(p), cv2.IMREAD_COLOR if flags is None else flags)
    if img is None or img.size == 0:
        raise DataError(f"{p}: unreadable image (OpenCV could not decode it)")
    return img  # type: ignore[no-any-return]


@dataclass
class CocoData:
    """A parsed COCO instances file: ``records`` are (image path, boxes xyxy pixels [N,4], labels [N]) per image,
    labels index ``classes``; ``cat_ids`` are the COCO category ids in the order of the classes they map to (class k
    itself unless placeholder slots such as a torchvision background come first)."""

    file: Path
    classes: list[str]
    cat_ids: list[int]
    records: list[tuple[Path, np.ndarray, np.ndarray]]


def _class_index(f: Path, cats: list[dict[str, Any]], class_names: Sequence[str] | None) -> dict[int, int]:
    """COCO category id → class index: by name into ``class_names`` (a model's), else in sorted id order."""
    try:
        by_id = {int(c["id"]): str(c.get("name", c["id"])) for c in cats}
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{f}: malformed categories entry ({exc!r}); expected id and name") from None
    if class_names is None:
        return {c: k for k, c in enumerate(sorted(by_id))}
    names = [str(n) for n in class_names]
    seen: dict[str, int] = {}
    for cid, n in sorted(by_id.items()):
        if n in seen:
            raise DataError(f"{f}: category name '{n}' names categories {seen[n]} and {cid}; expected each name once")
        seen[n] = cid
    unknown = [n for n in seen if n not in names]
    missing = [n for n in names if n not in seen and n not in PLACEHOLDER_CLASSES]
    real = [k for k, n in enumerate(names) if n not in PLACEHOLDER_CLASSES]
    if unknown and all(names[k] == str(k) for k in real):
        # a model exported without class names (export writes 0..C-1, a torchvision detector __background__
        # first): there is no name to match, so the categories are taken in sorted id order onto the slots that are
        # not placeholders, as the trainer read them; more categories than such classes is refused
        if len(by_id) > len(real):
            raise DataError(
                f"{f}: expected at most {len(real)} categories (the model's classes, unnamed), found {len(by_id)}"
            )
        return {c: real[k] for k, c in enumerate(sorted(by_id))}
    if unknown or missing:
        found = ", ".join(f"{n} (id {i})" for n, i in seen.items())
        why = "; ".join(
            x
            for x in (
                f"not classes of the model: {', '.join(unknown)}" if unknown else "",
                f"no category for: {', '.join(missing)}" if missing else "",
            )
            if x
        )
        raise DataError(
            f"{f}: expected categories named as the model's classes [{', '.join(names)}] (ids may "
            f"differ), found [{found}] ({why})"
        )
    return {cid: names.index(n) for n, cid in seen.items()}


def read_coco(
    ann_file: str | Path,
    image_root: str | Path | None = None,
    class_names: Sequence[str] | None = None,
    skip_crowd: bool = True,
) -> CocoData:
    """Parse a COCO instances JSON (checked: every problem raises :class:`DataError` naming the file and entry).

    Args:
        ann_file: the JSON file.
        image_root: folder that ``file_name`` is relative to (default: the JSON's folder).
        class_names: a model's classes: categories are mapped to them by name, whatever their ids, and a name
            that is not a class (or a class with no category) is refused; a model without names (``0..C-1``)
            takes the categories in sorted id order. None (a data set that defines its own
            classes, as in training): contiguous ids in sorted category id order.
        skip_crowd: leave out ``iscrowd`` annotations.
    """
    f = Path(ann_file)
    if not f.is_file():
        raise DataError(f"{f}: missing COCO annotation file")
    root = Path(image_root) if image_root is not None else f.parent
    try:
        coco = json.loads(f.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{f}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    except UnicodeDecodeError:
        raise DataError(f"{f}: expected UTF-8 JSON, found undecodable bytes") from None
    if not isinstance(coco, dict):
        raise DataError(f"{f}: expected a JSON object with images, annotations, categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(coco.get(key), list):
            raise DataError(f"{f}: expected a list under '{key}'")
    cat_index = _class_index(f, coco["categories"], class_names)
    cat_ids = sorted(cat_index, key=cat_index.__getitem__)
    names = {int(c["id"]): str(c.get("name", c["id"])) for c in coco["categories"]}
    classes = list(class_names) if class_names is not None else [names[c] for c in cat_ids]
    images: dict[int, dict[str, Any]] = {}
    for k, im in enumerate(coco["images"]):
        try:
            images[int(im["id"])] = {
                "path": root / im["file_name"],
                "w": float(im["width"]),
                "h": float(im["height"]),
                "boxes": [],
                "labels": [],
            }
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(
                f"{f}: images[{k}]: malformed entry ({exc!r}); expected id, file_name, width, height"
            ) from None
    for k, a in enumerate(coco["annotations"]):
        where = f"{f}: annotations[{k}] (id {a.get('id', '?') if isinstance(a, dict) else '?'})"
        try:
            img_id, cid = int(a["image_id"]), int(a["category_id"])
            x, y, w, h = (float(v) for v in a["bbox"])
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(
                f"{where}: malformed annotation ({exc!r}); expected image_id, category_id, bbox [x, y, w, h]"
            ) from None
        if img_id not in images:
            raise DataError(f"{where}: unknown image_id {img_id}")
        if cid not in cat_index:
            raise DataError(f"{where}: unknown category_id {cid}; expected one of {sorted(cat_index)}")
        if skip_crowd and a.get("iscrowd", 0):
            continue
        im = images[img_id]
        if w <= 0 or h <= 0 or x < -BOX_TOL or y < -BOX_TOL or x + w > im["w"] + BOX_TOL or y + h > im["h"] + BOX_TOL:
            raise DataError(
                f"{where}: box [x={x}, y={y}, w={w}, h={h}] is empty or outside the "
                f"{im['w']:g}x{im['h']:g} image {im['path'].name}"
            )
        im["boxes"].append([max(x, 0.0), max(y, 0.0), min(x + w, im["w"]), min(y + h, im["h"])])
        im["labels"].append(cat_index[cid])
    records = []
    for im in images.values():
        if not im["path"].is_file():
            raise DataError(f"{f}: missing image file {im['path']}")
        records.append(
            (im["path"], np.asarray(im["boxes"], np.float32).reshape(-1, 4), np.asarray(im["labels"], np.int64))
        )
    return CocoData(f, classes, cat_ids, records)


def list_images(folder: Path, recursive: bool = False) -> list[Path]:
    """The image files (:data:`IMG_EXTS`) in ``folder`` (and below it with ``recursive``), sorted."""
    it = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in it if p.is_file() and p.suffix.lower() in IMG_EXTS)


def read_class_names(root: Path) -> list[str] | None:
    """Class names from ``classes.txt`` (one per line) in ``root`` or its parent, if present."""
    for d in (root, root.parent):
        f = d / "classes.txt"
        if f.is_file():
            return [ln.strip() for ln in f.read_text(encoding="utf-8").splitlines() if ln.strip()]
    return None


@dataclass
class YoloData:
    """A parsed YOLO txt data set: ``records`` are (image path, boxes xyxy **normalised** to [0, 1] [N,4], labels
    [N]) per image, labels index ``classes``."""

    images_dir: Path
    labels_dir: Path
    classes: list[str]
    records: list[tuple[Path, np.ndarray, np.ndarray]]


def yolo_class_names(images_dir: Path) -> list[str]:
    """``classes.txt`` or ``data.yaml`` ``names`` beside the images or up to three folders above them."""
    for d in [images_dir, *images_dir.parents][:4]:
        names = read_class_names(d) if (d / "classes.txt").is_file() else None
        if names:
            return names
        y = d / "data.yaml"
        if y.is_file():
            import yaml

            data = yaml.safe_load(y.read_text(encoding="utf-8")) or {}
            n = data.get("names")
            if isinstance(n, dict):
                return [str(n[k]) for k in sorted(n)]
            if isinstance(n, list):
                return [str(v) for v in n]
    raise DataError(
        f"{images_dir}: no class names (expected classes.txt or data.yaml 'names' beside the images, or pass classes)"
    )


def _yolo_line(lab: Path, ln: int, line: str, classes: list[str]) -> tuple[list[float], int]:
    tok = line.split()
    nc = len(classes)
    try:
        if len(tok) != 5:
            raise ValueError(f"{len(tok)} values")
        c = int(tok[0])
        cx, cy, w, h = (float(v) for v in tok[1:])
    except ValueError as exc:
        raise DataError(
            f"{lab}:{ln}: malformed line {line.strip()!r} ({exc}); expected "
            f"'class cx cy w h' with an integer class and 4 numbers"
        ) from None
    if not 0 <= c < nc:
        raise DataError(f"{lab}:{ln}: unknown class id {c}; expected 0..{nc - 1} ({', '.join(classes)})")
    x1, y1, x2, y2 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
    tol = YOLO_NORM_TOL
    if w <= 0 or h <= 0 or x1 < -tol or y1 < -tol or x2 > 1 + tol or y2 > 1 + tol:
        raise DataError(
            f"{lab}:{ln}: box out of bounds (cx={cx}, cy={cy}, w={w}, h={h}); "
            f"expected normalised coordinates inside [0, 1]"
        )
    return [max(x1, 0.0), max(y1, 0.0), min(x2, 1.0), min(y2, 1.0)], c


def read_yolo(
    images_dir: str | Path, labels_dir: str | Path | None = None, classes: Sequence[str] | None = None
) -> YoloData:
    """Parse a YOLO txt data set: ``images/.../x.jpg`` with ``labels/.../x.txt`` lines ``class cx cy w h``
    (normalised); an image without a label file has no boxes.

    Args:
        images_dir: folder of images (searched recursively).
        labels_dir: folder of labels (default: ``images_dir`` with its last ``images`` part replaced by ``labels``).
        classes: class names (default: :func:`yolo_class_names`).

    Raises:
        DataError: no such folder, no images, no class names, or a bad line (file and line named).
    """
    images = Path(images_dir)
    if not images.is_dir():
        raise DataError(f"{images}: image folder not found")
    if labels_dir is None:
        parts = list(images.parts)
        if "images" not in parts:
            raise DataError(
                f"{images}: cannot find the labels folder (no 'images' part to replace with 'labels'); pass labels_dir"
            )
        i = len(parts) - 1 - parts[::-1].index("images")
        parts[i] = "labels"
        labels_dir = Path(*parts)
    labels = Path(labels_dir)
    names = list(classes) if classes is not None else yolo_class_names(images)
    records: list[tuple[Path, np.ndarray, np.ndarray]] = []
    for img in list_images(images, recursive=True):
        lab = labels / img.relative_to(images).with_suffix(".txt")
        boxes, cls = [], []
        if lab.is_file():
            for ln, line in enumerate(lab.read_text(encoding="utf-8").splitlines(), 1):
                if line.strip():
                    box, c = _yolo_line(lab, ln, line, names)
                    boxes.append(box)
                    cls.append(c)
        records.append((img, np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(cls, np.int64)))
    if not records:
        raise DataError(f"{images}: no images ({', '.join(IMG_EXTS)})")
    return YoloData(images, labels, names, records)


def reference_images(path: str | Path, n: int, split: str = "val") -> list[Path]:
    """``n`` image files of an image folder or a data set, spread over its classes (in-domain reference inputs
    for ``edgecv export --reference-data``).

    ``path`` is a COCO JSON file, a folder with ``{split}.json`` (COCO detection), a folder with a ``{split}/``
    split (ImageFolder classification, images+masks segmentation) or any folder of images. Images are taken
    round-robin over their folders (one per class before a second of any class), evenly spaced within each, so
    the reference sees several classes; segmentation masks (``masks/`` folders) are skipped.

    Raises:
        ConfigError: ``path`` does not exist or holds no image.
    """
    p = Path(path)
    if n < 1:
        raise ConfigError(f"reference data: expected at least 1 image, found n={n}")
    files: list[Path]
    if p.is_file() and p.suffix.lower() == ".json" or p.is_dir() and (p / f"{split}.json").is_file():
        coco = read_coco(p if p.is_file() else p / f"{split}.json")
        files = [img for img, boxes, _ in coco.records if len(boxes)] or [img for img, _, _ in coco.records]
    elif p.is_dir():
        root = p / split if (p / split).is_dir() else p
        files = sorted(
            f
            for f in root.rglob("*")
            if f.suffix.lower() in IMG_EXTS and f.is_file() and "masks" not in f.relative_to(root).parts
        )
    else:
        raise ConfigError(
            f"--reference-data: expected an image folder, a data set folder or a COCO JSON, found '{path}'"
        )
    if not files:
        raise ConfigError(
            f"--reference-data: expected image files ({', '.join(sorted(IMG_EXTS))}) under '{path}', found none"
        )
    groups: dict[Path, list[Path]] = {}
    for f in files:
        groups.setdefault(f.parent, []).append(f)
    per = [g[:: max(1, len(g) // max(1, -(-n // len(groups))))] for g in groups.values()]
    out: list[Path] = []
    for k in range(max(len(g) for g in per)):
        out += [g[k] for g in per if k < len(g)]
    return out[:n]
