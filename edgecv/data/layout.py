"""Which data set layout a folder holds, per task (runtime tier: no torch, no image decoding).

The one owner of "what does ``--val DIR`` / ``data check DIR`` / ``anchors DIR`` mean": every command that takes a
data set resolves it here first, so each accepts the same forms (the data set root or the split folder) and a
wrong or empty folder fails before any work, in one line naming what was expected and what was found.

======== =========== ================================================================================
task     layout      accepted forms (``SPLIT`` is ``val`` for validation, ``train`` for training)
======== =========== ================================================================================
classify imagefolder ``ROOT/SPLIT/<class>/<image>`` (give ROOT) or ``SPLIT/<class>/<image>`` (give SPLIT)
detect   coco        ``ROOT/SPLIT.json`` (give ROOT) or the JSON file itself
detect   yolo        ``ROOT/images/SPLIT`` + ``ROOT/labels/SPLIT`` (give ROOT or ``ROOT/images/SPLIT``),
                     or ``ROOT/images`` + ``ROOT/labels`` (give ROOT); lines ``class cx cy w h``
segment  masks       ``ROOT/SPLIT/images`` + ``ROOT/SPLIT/masks`` (give ROOT) or ``SPLIT/images`` +
                     ``SPLIT/masks`` (give SPLIT); masks PNG of class ids, 255 = ignore
======== =========== ================================================================================
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edgecv.data.readers import IMG_EXTS
from edgecv.errors import ConfigError, DataError

LAYOUTS: dict[str, tuple[str, ...]] = {
    "classify": ("imagefolder",),
    "detect": ("coco", "yolo"),
    "segment": ("masks",),
}
EXPECTED: dict[str, str] = {
    "imagefolder": "an ImageFolder tree (ROOT/{split}/<class>/<image> or {split}/<class>/<image>)",
    "coco": "a COCO JSON (ROOT/{split}.json or the .json file)",
    "yolo": "YOLO folders (ROOT/images/{split} + ROOT/labels/{split}, or ROOT/images + ROOT/labels)",
    "masks": "image + mask folders (ROOT/{split}/images + ROOT/{split}/masks, or {split}/images + {split}/masks)",
}
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Layout:
    """A data set found on disk.

    Attributes:
        task: classify, detect or segment.
        kind: imagefolder, coco, yolo or masks.
        path: what the readers take: the folder of class folders (imagefolder), the JSON file (coco), the images
            folder (yolo), the folder holding images/ and masks/ (masks).
        images: image files found (annotated or not; a COCO JSON counts its ``images`` entries unparsed).
        labels: the YOLO labels folder (yolo only).
    """

    task: str
    kind: str
    path: Path
    images: int
    labels: Path | None = None

    def describe(self) -> str:
        return f"{self.kind} at {self.path} ({self.images} images)"


def _count_images(folder: Path, recursive: bool = True) -> int:
    if not folder.is_dir():
        return 0
    it = folder.rglob("*") if recursive else folder.iterdir()
    return sum(1 for f in it if f.suffix.lower() in IMG_EXTS and f.is_file())


def _subdirs(p: Path) -> list[Path]:
    return sorted(d for d in p.iterdir() if d.is_dir() and not d.name.startswith(".")) if p.is_dir() else []


def found(path: Path) -> str:
    """What ``path`` holds, in a few words, for the "found …" half of an error."""
    p = Path(path)
    if not p.exists():
        return f"no such path '{p}'"
    if p.is_file():
        return f"a file '{p}'"
    subs = [d.name for d in _subdirs(p)]
    files = [f.name for f in p.iterdir() if f.is_file()]
    jsons = [f for f in files if f.endswith(".json") and f not in ("synth.json", "sample.json")]
    n_img = sum(1 for f in files if Path(f).suffix.lower() in IMG_EXTS)
    bits = []
    if subs:
        bits.append("folders " + ", ".join(f"{s}/" for s in subs[:6]) + (" …" if len(subs) > 6 else ""))
    if jsons:
        bits.append(", ".join(jsons[:3]))
    if n_img:
        bits.append(f"{n_img} loose images")
    deep = _count_images(p)
    return f"'{p}' with " + ("; ".join(bits) if bits else "nothing in it") + f" ({deep} images in all)"


def _imagefolder(p: Path, task: str) -> Layout | None:
    subs = _subdirs(p)
    names = {d.name for d in subs}
    # a data set root (train/ val/) or another task's folders are not classes
    if not subs or names <= set(SPLITS) or names & {"images", "masks", "labels"}:
        return None
    n = sum(_count_images(d) for d in subs)
    return Layout(task, "imagefolder", p, n) if n else None


def _coco(p: Path, task: str, split: str) -> Layout | None:
    f = p if p.is_file() and p.suffix.lower() == ".json" else p / f"{split}.json"
    if not f.is_file():
        return None
    import json

    try:
        n = len(json.loads(f.read_text(encoding="utf-8")).get("images", []))
    except (ValueError, AttributeError, TypeError, OSError):
        raise DataError(f"{f}: expected a COCO JSON object with images, annotations, categories") from None
    return Layout(task, "coco", f, n) if n else None


def _yolo(p: Path, task: str, split: str) -> Layout | None:
    if not p.is_dir():
        return None
    pairs = [(p / "images" / split, p / "labels" / split), (p / "images", p / "labels")]
    parts = list(p.parts)
    if "images" in parts:  # the images folder itself (ROOT/images/SPLIT or ROOT/images)
        i = len(parts) - 1 - parts[::-1].index("images")
        pairs.insert(0, (p, Path(*parts[:i], "labels", *parts[i + 1 :])))
    for images, labels in pairs:
        if images.is_dir() and labels.is_dir():
            n = _count_images(images)
            return Layout(task, "yolo", images, n, labels) if n else None
    return None


def _masks(p: Path, task: str, split: str) -> Layout | None:
    for d in (p, p / split):
        if (d / "images").is_dir() and (d / "masks").is_dir():
            n = _count_images(d / "images", recursive=False)
            return Layout(task, "masks", d, n) if n else None
    return None


def find_layout(
    task: str,
    path: str | Path,
    split: str = "val",
    fmt: str | None = None,
    prefer: Sequence[str] | None = None,
    what: str = "--val",
    classes: Sequence[str] | None = None,
) -> Layout:
    """The data set layout for ``task`` at ``path`` (the data set root or its ``split`` folder).

    Args:
        task: classify, detect or segment.
        path: the folder (or a COCO JSON file).
        split: the split a root is resolved to.
        fmt: one layout only (imagefolder, coco, yolo, masks); None: any of the task's, in ``prefer`` order.
        prefer: order to try the task's layouts (detect: coco before yolo unless told).
        what: the option or argument named in errors.
        classes: a model's class names: an ImageFolder's class folders must be among them (checked here, before
            any image is read).

    Raises:
        DataError: no layout of the task's there, or one with no images: "expected …, found …".
        ConfigError: an unknown task or a ``fmt`` that is not a layout of the task.
    """
    if task not in LAYOUTS:
        raise ConfigError(f"{what}: expected a task of {', '.join(LAYOUTS)}, found '{task}'")
    kinds = tuple(prefer) if prefer else LAYOUTS[task]
    if fmt is not None:
        fmt = {"imagefolder": "imagefolder", "masks": "masks", "coco": "coco", "yolo": "yolo"}.get(fmt.lower(), fmt)
        if fmt not in LAYOUTS[task]:
            raise ConfigError(f"--layout for {task}: expected one of {', '.join(LAYOUTS[task])}, found '{fmt}'")
        kinds = (fmt,)
    p = Path(path)
    for kind in kinds:
        lay = _try(kind, p, task, split)
        if lay is not None:
            if lay.kind == "imagefolder" and classes:
                alien = [d.name for d in _subdirs(lay.path) if d.name not in set(classes)]
                if alien:
                    shown = ", ".join(list(classes)[:10]) + (" …" if len(classes) > 10 else "")
                    raise DataError(
                        f"{what} for {task}: expected class folders named as the model's classes [{shown}], "
                        f"found folder '{alien[0]}' in {lay.path}"
                    )
            return lay
    expected = " or ".join(EXPECTED[k].format(split=split) for k in kinds)
    # another task's layout is named as such: the usual mistake is the wrong folder, not a broken one
    for other, other_kinds in LAYOUTS.items():
        for kind in other_kinds:
            if kind in kinds:
                continue
            try:
                lay = _try(kind, p, other, split)
            except DataError:
                lay = None
            if lay is not None:
                raise DataError(
                    f"{what} for {task}: expected {expected}, found {other} data ({lay.kind} at {lay.path}, "
                    f"{lay.images} images)"
                )
    raise DataError(f"{what} for {task}: expected {expected}, found {found(p)}")


def find_any_layout(path: str | Path, split: str = "val", what: str = "--val") -> Layout:
    """The data set at ``path`` in any task's layout: the check made before the task is known (``benchmark --val``
    takes a model, whose task may show only once it is loaded); :func:`find_layout` follows once it is.

    Raises:
        DataError: no known layout there: "expected …, found …".
    """
    p = Path(path)
    # the loosest layout last: a YOLO or masks root would otherwise read as an ImageFolder of its sub-folders
    for task, kind in (("segment", "masks"), ("detect", "coco"), ("detect", "yolo"), ("classify", "imagefolder")):
        try:
            lay = _try(kind, p, task, split)
        except DataError:
            lay = None
        if lay is not None and lay.images > 0:
            return lay
    raise DataError(
        f"{what}: expected a data set in a known layout (an ImageFolder tree, a COCO JSON, YOLO folders or image + "
        f"mask folders; see the README's layout table), found {found(p)}"
    )


def _try(kind: str, p: Path, task: str, split: str) -> Layout | None:
    if kind == "imagefolder":
        # the split folder of a root first: a root's train/ val/ would otherwise read as two classes
        return (_imagefolder(p / split, task) if (p / split).is_dir() else None) or _imagefolder(p, task)
    if kind == "coco":
        return _coco(p, task, split)
    if kind == "yolo":
        return _yolo(p, task, split)
    return _masks(p, task, split)
