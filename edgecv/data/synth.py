"""Synthetic vision data: geometric objects on real photo backgrounds, deterministic from a seed.

Scenes are shapes (circle, ring, square, rectangle, triangle, star, cross, hexagon) in random colours, scales and
rotations, partly occluding each other, pasted on crops of the photos that ship with scikit-image (so it works
offline), then blurred, noised and brightness/contrast-jittered. Colour says nothing about the class, and the
class set has near neighbours (square/rectangle, circle/hexagon/ring), so a tiny model does not reach 100%.

Written in the formats :mod:`edgecv.data.datasets` reads:

* classify: ``DIR/{train,val}/<class>/<n>.png`` (ImageFolder); label = shape of the single large object.
* detect: ``DIR/images/{split}/<n>.png`` + YOLO ``DIR/labels/{split}/<n>.txt`` + COCO ``DIR/{split}.json``.
* segment: ``DIR/{split}/images/<n>.png`` + ``DIR/{split}/masks/<n>.png`` (class ids, 0 = background).

Every image draws from its own generator seeded by ``(seed, split, index)``, so files are byte-identical for a
seed and splits never share a scene. Needs numpy, OpenCV and scikit-image only (no torch).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgecv import _io
from edgecv._lazy import lazy_import
from edgecv.errors import ConfigError

SHAPES = ("circle", "ring", "square", "rectangle", "triangle", "star", "cross", "hexagon")
TASKS = ("classify", "detect", "segment")
# split name → stream id of the per-image generator (so val never repeats a train scene, calib never repeats either)
SPLIT_IDS = {"train": 1, "val": 2, "test": 3, "calib": 4}
GENERATOR_VERSION = 2

# photos bundled with scikit-image (no download)
_BACKGROUNDS = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "camera",
    "coins",
    "grass",
    "gravel",
    "brick",
    "moon",
    "clock",
    "page",
)

_PALETTE = np.array(
    [  # BGR
        (40, 40, 220),
        (40, 200, 40),
        (220, 60, 30),
        (30, 220, 230),
        (220, 220, 40),
        (200, 40, 200),
        (20, 140, 255),
        (240, 240, 240),
        (25, 25, 25),
        (130, 130, 130),
    ],
    dtype=np.float32,
)


@functools.lru_cache(maxsize=1)
def _backgrounds() -> tuple[np.ndarray, ...]:
    data = lazy_import("skimage.data", "data")
    cv2 = lazy_import("cv2", "data")
    out = []
    for name in _BACKGROUNDS:
        img = np.asarray(getattr(data, name)())
        if img.dtype != np.uint8:
            img = (img.astype(np.float32) * (255.0 / max(float(img.max()), 1.0))).astype(np.uint8)
        if img.ndim == 2:
            img = np.stack([img] * 3, axis=-1)
        img = cv2.cvtColor(np.ascontiguousarray(img[..., :3]), cv2.COLOR_RGB2BGR)
        out.append(img)
    return tuple(out)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    cv2 = lazy_import("cv2", "data")
    bgs = _backgrounds()
    img = bgs[int(rng.integers(len(bgs)))]
    h, w = img.shape[:2]
    side = int(rng.integers(min(h, w) // 4, min(h, w) + 1))
    y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    crop = img[y : y + side, x : x + side]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return cv2.resize(np.ascontiguousarray(crop), (size, size), interpolation=cv2.INTER_AREA).astype(np.float32)


def _unit_polygons(shape: str, rng: np.random.Generator) -> list[tuple[np.ndarray, bool]]:
    """Polygons in unit coordinates (radius about 1) as (points, filled?) — False cuts a hole."""

    def ngon(n: int, r: float = 1.0, phase: float = 0.0) -> np.ndarray:
        a = phase + np.arange(n) * 2 * np.pi / n
        return np.stack([np.cos(a) * r, np.sin(a) * r], axis=1)

    if shape == "circle":
        return [(ngon(48), True)]
    if shape == "ring":
        return [(ngon(48), True), (ngon(48, float(rng.uniform(0.45, 0.65))), False)]
    if shape == "square":
        return [(np.array([[-0.8, -0.8], [0.8, -0.8], [0.8, 0.8], [-0.8, 0.8]]), True)]
    if shape == "rectangle":
        h = float(rng.uniform(0.4, 0.6))
        return [(np.array([[-1.0, -h], [1.0, -h], [1.0, h], [-1.0, h]]), True)]
    if shape == "triangle":
        return [(ngon(3, 1.0, -np.pi / 2), True)]
    if shape == "star":
        outer, inner = ngon(5, 1.0, -np.pi / 2), ngon(5, float(rng.uniform(0.38, 0.5)), -np.pi / 2 + np.pi / 5)
        return [(np.stack([outer, inner], axis=1).reshape(-1, 2), True)]
    if shape == "cross":
        t = float(rng.uniform(0.28, 0.4))
        pts = [
            (-t, -1),
            (t, -1),
            (t, -t),
            (1, -t),
            (1, t),
            (t, t),
            (t, 1),
            (-t, 1),
            (-t, t),
            (-1, t),
            (-1, -t),
            (-t, -t),
        ]
        return [(np.array(pts, dtype=np.float64), True)]
    if shape == "hexagon":
        return [(ngon(6), True)]
    raise ConfigError(f"unknown shape '{shape}'; expected one of: {', '.join(SHAPES)}")


def _alpha_mask(shape: str, rng: np.random.Generator, size: int, cx: float, cy: float, r: float) -> np.ndarray:
    """Anti-aliased coverage (float32 0..1) of one shape, randomly rotated and slightly stretched."""
    cv2 = lazy_import("cv2", "data")
    theta = float(rng.uniform(0, 2 * np.pi))
    stretch = float(rng.uniform(0.92, 1.08))
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    mask = np.zeros((size, size), np.uint8)
    for pts, filled in _unit_polygons(shape, rng):
        p = pts * np.array([r * stretch, r / stretch])
        p = p @ rot.T + np.array([cx, cy])
        # 4 fractional bits: sub-pixel vertex positions, so small shapes keep their geometry
        fixed = np.round(p * 16).astype(np.int32).reshape(-1, 1, 2)
        cv2.fillPoly(mask, [fixed], 255 if filled else 0, lineType=cv2.LINE_AA, shift=4)
    return mask.astype(np.float32) / 255.0


def _paint(img: np.ndarray, alpha: np.ndarray, rng: np.random.Generator) -> None:
    """Composite one object: palette colour + jitter, sometimes a gradient, so colour carries no class."""
    size = img.shape[0]
    color = _PALETTE[int(rng.integers(len(_PALETTE)))] + rng.uniform(-30, 30, 3).astype(np.float32)
    fill = np.broadcast_to(color, img.shape).astype(np.float32)
    if rng.random() < 0.35:
        g = np.linspace(float(rng.uniform(0.55, 0.9)), float(rng.uniform(1.0, 1.3)), size, dtype=np.float32)
        grad = g[None, :, None] if rng.random() < 0.5 else g[:, None, None]
        fill = fill * grad
    a = alpha[..., None]
    img *= 1.0 - a
    img += np.clip(fill, 0, 255) * a


def _photometric(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    cv2 = lazy_import("cv2", "data")
    contrast = float(rng.uniform(0.7, 1.3))
    brightness = float(rng.uniform(-30, 30))
    img = (img - 128.0) * contrast + 128.0 + brightness
    if rng.random() < 0.5:
        img = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(0.3, 1.0)))
    sigma = float(rng.uniform(0, 6))
    if sigma > 0.5:
        img = img + rng.normal(0, sigma, img.shape).astype(np.float32)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def render_classify(rng: np.random.Generator, size: int) -> tuple[np.ndarray, int]:
    """One classification scene: a large main object plus 0–2 small distractors (some occluding it)."""
    img = _background(rng, size)
    label = int(rng.integers(len(SHAPES)))
    r_main = float(rng.uniform(0.26, 0.38)) * size
    cx, cy = rng.uniform(r_main * 0.8, size - r_main * 0.8, 2)
    n_dis = int(rng.integers(0, 3))
    n_after = int(rng.integers(0, n_dis + 1))  # drawn on top of the main object
    for k in range(n_dis):
        on_top = k >= n_dis - n_after
        r = float(rng.uniform(0.06, 0.12)) * size
        if on_top and rng.random() < 0.5:
            # occluder placed on the main object's rim: hides part of it, never all of it
            ang = float(rng.uniform(0, 2 * np.pi))
            dx, dy = np.cos(ang) * r_main * 0.9, np.sin(ang) * r_main * 0.9
            ox, oy = cx + dx, cy + dy
        else:
            ox, oy = rng.uniform(0, size, 2)
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        if not on_top:
            _paint(img, _alpha_mask(shape, rng, size, ox, oy, r), rng)
        else:
            pending = (shape, ox, oy, r)
            if k == n_dis - n_after:  # first on-top distractor: draw the main object before it
                _paint(img, _alpha_mask(SHAPES[label], rng, size, cx, cy, r_main), rng)
            _paint(img, _alpha_mask(pending[0], rng, size, pending[1], pending[2], pending[3]), rng)
    if n_after == 0:
        _paint(img, _alpha_mask(SHAPES[label], rng, size, cx, cy, r_main), rng)
    return _photometric(img, rng), label


def render_objects(
    rng: np.random.Generator, size: int, max_objects: int = 5
) -> tuple[np.ndarray, np.ndarray, list[tuple[int, list[float]]]]:
    """A detection/segmentation scene: 1..max_objects shapes that may overlap.

    Returns:
        (image BGR uint8, mask of class ids with 0 = background, [(class_id, [x1, y1, x2, y2])] of the visible
        part of each object that keeps at least a third of its area).
    """
    img = _background(rng, size)
    inst = np.zeros((size, size), np.int32)
    cls_of: list[int] = []
    area: list[float] = []
    n = int(rng.integers(1, max_objects + 1))
    for k in range(n):
        c = int(rng.integers(len(SHAPES)))
        r = float(rng.uniform(0.07, 0.22)) * size
        cx, cy = rng.uniform(r * 0.5, size - r * 0.5, 2)
        a = _alpha_mask(SHAPES[c], rng, size, cx, cy, r)
        _paint(img, a, rng)
        inside = a >= 0.5
        inst[inside] = k + 1
        cls_of.append(c)
        area.append(float(inside.sum()))
    mask = np.zeros((size, size), np.uint8)
    boxes: list[tuple[int, list[float]]] = []
    for k, c in enumerate(cls_of):
        vis = inst == k + 1
        nvis = int(vis.sum())
        if nvis == 0:
            continue
        mask[vis] = c + 1
        if nvis < area[k] / 3:
            continue
        ys, xs = np.nonzero(vis)
        x1, y1, x2, y2 = float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)
        if x2 - x1 >= 3 and y2 - y1 >= 3:
            boxes.append((c, [x1, y1, x2, y2]))
    return _photometric(img, rng), mask, boxes


def image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of one image: independent of every other image, split and seed."""
    return np.random.default_rng([int(seed), SPLIT_IDS.get(split, 99), int(index)])


def val_images(task: str, n: int, size: int = 96, seed: int = 0, split: str = "val") -> list[np.ndarray]:
    """``n`` BGR images of a split, in memory, pixel for pixel those :func:`generate` writes (PNG is lossless):
    a shipped model's reference inputs come from its own validation split. Classification takes the first image of
    each class in turn, so the reference sees several classes."""
    if task == "classify":
        by_class: dict[int, list[np.ndarray]] = {}
        for i in range(40 * n):
            img, label = render_classify(image_rng(seed, split, i), size)
            by_class.setdefault(label, []).append(img)
            if sum(min(len(v), -(-n // len(SHAPES))) for v in by_class.values()) >= n:
                break
        out: list[np.ndarray] = []
        for k in range(n):
            out += [v[k] for _, v in sorted(by_class.items()) if k < len(v)]
        return out[:n]
    return [render_objects(image_rng(seed, split, i), size)[0] for i in range(n)]


def _imwrite(path: Path, img: np.ndarray) -> None:
    cv2 = lazy_import("cv2", "data")
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(path.suffix, img)
    if not ok:
        raise OSError(f"could not encode {path}")
    path.write_bytes(buf.tobytes())


def _write_classify(root: Path, split: str, n: int, size: int, seed: int) -> None:
    for c in SHAPES:
        (root / split / c).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img, label = render_classify(image_rng(seed, split, i), size)
        _imwrite(root / split / SHAPES[label] / f"{i:06d}.png", img)


def _write_detect(root: Path, split: str, n: int, size: int, seed: int) -> None:
    images: list[dict[str, Any]] = []
    anns: list[dict[str, Any]] = []
    (root / "labels" / split).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img, _, boxes = render_objects(image_rng(seed, split, i), size)
        name = f"{i:06d}.png"
        _imwrite(root / "images" / split / name, img)
        lines = []
        for c, (x1, y1, x2, y2) in boxes:
            lines.append(
                f"{c} {(x1 + x2) / 2 / size:.6f} {(y1 + y2) / 2 / size:.6f} "
                f"{(x2 - x1) / size:.6f} {(y2 - y1) / size:.6f}"
            )
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i + 1,
                    "category_id": c + 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                }
            )
        (root / "labels" / split / f"{i:06d}.txt").write_text("".join(ln + "\n" for ln in lines))
        images.append({"id": i + 1, "file_name": f"images/{split}/{name}", "width": size, "height": size})
    coco = {
        "images": images,
        "annotations": anns,
        "categories": [{"id": k + 1, "name": s} for k, s in enumerate(SHAPES)],
    }
    (root / f"{split}.json").write_text(json.dumps(coco, indent=1) + "\n")


def _write_segment(root: Path, split: str, n: int, size: int, seed: int) -> None:
    for i in range(n):
        img, mask, _ = render_objects(image_rng(seed, split, i), size)
        _imwrite(root / split / "images" / f"{i:06d}.png", img)
        _imwrite(root / split / "masks" / f"{i:06d}.png", mask)


_WRITERS: dict[str, Callable[[Path, str, int, int, int], None]] = {
    "classify": _write_classify,
    "detect": _write_detect,
    "segment": _write_segment,
}


def class_names(task: str) -> list[str]:
    """Class names of a synthetic task, in label order.

    Detection and segmentation use :data:`SHAPES` order (segmentation adds ``background`` as id 0); classification
    uses the sorted folder names, which is the order an ImageFolder loader assigns.
    """
    if task == "segment":
        return ["background", *SHAPES]
    return sorted(SHAPES) if task == "classify" else list(SHAPES)


def generate(
    task: str,
    out: str | Path,
    n_train: int = 2000,
    n_val: int = 400,
    size: int = 96,
    seed: int = 0,
    force: bool = False,
) -> dict[str, Any]:
    """Write a synthetic data set for ``task`` into ``out`` (atomically: a half-written folder never appears).

    Args:
        task: ``classify``, ``detect`` or ``segment``.
        out: destination folder (replaced when ``force``).
        n_train: images in the train split.
        n_val: images in the val split (0 to skip it).
        size: square image side in pixels.
        seed: makes the files byte-identical from run to run.
        force: replace an existing ``out``; otherwise an existing folder raises ConfigError.

    Returns:
        The metadata also written to ``out/synth.json``.
    """
    if task not in _WRITERS:
        raise ConfigError(f"--task: expected one of {', '.join(TASKS)}, found '{task}'")
    if size < 16:
        raise ConfigError(f"--size: expected at least 16 pixels, found {size}")
    if n_train < 0 or n_val < 0:
        raise ConfigError(f"--n-train/--n-val: expected counts >= 0, found {n_train}/{n_val}")
    out = Path(out)
    _io.check_output_dir(out, force, is_synth_dir, "synthetic data set", "a data set 'edgecv data synth' wrote")
    meta = {
        "generator": "edgecv.data.synth",
        "version": GENERATOR_VERSION,
        "task": task,
        "seed": seed,
        "size": size,
        "splits": {"train": n_train, "val": n_val},
        "classes": class_names(task),
    }
    with _io.atomic_path(out) as tmp:
        tmp.mkdir(parents=True)
        for split, n in (("train", n_train), ("val", n_val)):
            if n > 0:
                _WRITERS[task](tmp, split, n, size, seed)
        (tmp / "classes.txt").write_text("".join(c + "\n" for c in class_names(task)))
        if task == "detect":
            names = "\n".join(f"  {k}: {s}" for k, s in enumerate(SHAPES))
            (tmp / "data.yaml").write_text(f"path: .\ntrain: images/train\nval: images/val\nnames:\n{names}\n")
        (tmp / "synth.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def is_synth_dir(path: Path) -> bool:
    """A folder 'edgecv data synth' wrote (its ``synth.json`` names the generator): what --force may replace."""
    try:
        return json.loads((path / "synth.json").read_text()).get("generator") == "edgecv.data.synth"
    except (OSError, ValueError, AttributeError):
        return False


def generate_images(
    task: str, out: str | Path, n: int, size: int = 96, seed: int = 0, split: str = "calib"
) -> list[Path]:
    """Write ``n`` unlabelled scenes (e.g. a calibration set) as PNG files into ``out``, atomically."""
    if task not in _WRITERS:
        raise ConfigError(f"--task: expected one of {', '.join(TASKS)}, found '{task}'")
    out = Path(out)
    with _io.atomic_path(out) as tmp:
        tmp.mkdir(parents=True)
        for i in range(n):
            rng = image_rng(seed, split, i)
            img = render_classify(rng, size)[0] if task == "classify" else render_objects(rng, size)[0]
            _imwrite(tmp / f"{i:06d}.png", img)
    return sorted(out.glob("*.png"))
