"""Pick a small, diverse calibration set from a video or an image folder (numpy + OpenCV, no torch).

Each candidate frame is embedded as a tiny grey thumbnail (layout) plus an HSV colour histogram (content); a
k-center greedy pass then picks, one at a time, the frame farthest from everything picked so far. Near-duplicates
(the farthest frame is closer than ``min_distance``) end the selection early, so a static video gives a few
frames instead of 300 copies of one.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edgecv import _io
from edgecv._lazy import lazy_import
from edgecv.data.readers import IMG_EXTS, read_image
from edgecv.errors import ConfigError, DataError, SourceError


def embed(img: np.ndarray) -> np.ndarray:
    """A 128-d unit-scale descriptor of a BGR image: 8x8 grey layout + 4x4x4 HSV histogram (Hellinger)."""
    cv2 = lazy_import("cv2", "data")
    small = cv2.resize(img, (32, 32), interpolation=cv2.INTER_AREA)
    grey = cv2.resize(cv2.cvtColor(small, cv2.COLOR_BGR2GRAY), (8, 8), interpolation=cv2.INTER_AREA)
    g = grey.astype(np.float32).ravel() / 255.0
    g = g - g.mean()
    g /= max(float(np.linalg.norm(g)), 1e-6)
    hsv = cv2.cvtColor(small, cv2.COLOR_BGR2HSV)
    hist = cv2.calcHist([hsv], [0, 1, 2], None, [4, 4, 4], [0, 180, 0, 256, 0, 256]).ravel()
    hist = np.sqrt(hist / max(float(hist.sum()), 1.0))
    # brightness matters for calibration ranges: keep the mean level as one more feature
    level = np.array([small.mean() / 255.0], np.float32)
    return np.concatenate([g * 0.7, hist.astype(np.float32), level]).astype(np.float32)


def k_center_greedy(feats: np.ndarray, n: int, min_distance: float = 0.0) -> tuple[list[int], float]:
    """Indices of up to ``n`` rows of ``feats`` chosen farthest-first; stops when the farthest is a near-duplicate.

    Returns:
        (picked indices in pick order, the last pick's distance to the rest of the set).
    """
    if len(feats) == 0:
        return [], 0.0
    centre = feats.mean(axis=0)
    first = int(np.argmin(((feats - centre) ** 2).sum(1)))  # the most typical frame first
    picked = [first]
    dist = np.sqrt(((feats - feats[first]) ** 2).sum(1))
    last = float(dist.max())
    while len(picked) < min(n, len(feats)):
        i = int(np.argmax(dist))
        if dist[i] <= min_distance:
            break
        last = float(dist[i])
        picked.append(i)
        dist = np.minimum(dist, np.sqrt(((feats - feats[i]) ** 2).sum(1)))
    return picked, last


def _is_video(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() not in IMG_EXTS


def _video_frames(path: Path, stride: int, wanted: set[int] | None = None) -> Iterator[tuple[int, np.ndarray]]:
    cv2 = lazy_import("cv2", "data")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise SourceError(f"{path}: OpenCV could not open the video")
    try:
        i = 0
        while True:
            if i % stride == 0 and (wanted is None or i in wanted):
                ok, frame = cap.read()
                if not ok:
                    break
                yield i, frame
            elif not cap.grab():
                break
            i += 1
            if wanted is not None and i > max(wanted):
                break
    finally:
        cap.release()


SAMPLE_MARKER = "sample.json"


def is_sample_dir(path: Path) -> bool:
    """A folder 'edgecv calib sample' wrote (its ``sample.json`` says so): what --force may replace."""
    try:
        return json.loads((path / SAMPLE_MARKER).read_text()).get("generator") == "edgecv.data.calib"
    except (OSError, ValueError, AttributeError):
        return False


def sample_diverse(
    source: str | Path,
    n: int = 300,
    out: str | Path | None = None,
    *,
    min_distance: float = 0.02,
    max_candidates: int = 5000,
    ext: str = ".png",
    force: bool = False,
) -> dict[str, Any]:
    """Select up to ``n`` diverse frames from a video file or an image folder and write them to ``out``.

    Args:
        source: a video file OpenCV can read, or a folder of images (searched recursively).
        n: how many frames at most.
        out: folder to write (atomically replaced); None only computes the selection.
        min_distance: frames closer than this to the picked set count as near-duplicates.
        max_candidates: a long video is subsampled uniformly to about this many candidate frames.
        ext: image format for frames taken from a video (".png" or ".jpg"); folder images are copied as they are.

    Returns:
        Summary: source, candidates, selected file names (in pick order), last pick distance, out.
    """
    cv2 = lazy_import("cv2", "data")
    src = Path(source)
    if n < 1:
        raise ConfigError(f"-n: expected at least 1 frame, found {n}")
    if ext not in (".png", ".jpg", ".jpeg"):
        raise ConfigError(f"--image-format: expected .png or .jpg, found {ext!r}")
    if not src.exists():
        raise SourceError(f"{src}: no such video or image folder")
    if out is not None:
        _io.check_output_dir(
            Path(out), force, is_sample_dir, "calibration sample", "a sample 'edgecv calib sample' wrote"
        )
        if Path(out).resolve() == src.resolve() or src.resolve() in Path(out).resolve().parents:
            raise ConfigError(f"--output: expected a folder outside the source '{src}', found '{out}'")
    feats: list[np.ndarray] = []
    keys: list[Any] = []
    stride = 1
    if src.is_dir():
        files = sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in IMG_EXTS)
        if not files:
            raise DataError(f"{src}: no images ({', '.join(IMG_EXTS)})")
        step = max(1, len(files) // max_candidates)
        for f in files[::step]:
            img = read_image(f)
            feats.append(embed(img))
            keys.append(f)
    elif _is_video(src):
        cap = cv2.VideoCapture(str(src))
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) if cap.isOpened() else 0
        cap.release()
        stride = max(1, total // max_candidates) if total > 0 else 1
        for i, frame in _video_frames(src, stride):
            feats.append(embed(frame))
            keys.append(i)
        if not feats:
            raise SourceError(f"{src}: no frames could be read")
    else:
        raise SourceError(f"{src}: expected a video file or a folder of images")
    picked, last = k_center_greedy(np.stack(feats), n, min_distance)
    names: list[str] = []
    if out is not None:
        with _io.atomic_path(out) as tmp:
            tmp.mkdir(parents=True)
            if src.is_dir():
                for rank, k in enumerate(picked):
                    f = keys[k]
                    name = f"{rank:05d}_{f.stem}{f.suffix.lower()}"
                    shutil.copyfile(f, tmp / name)
                    names.append(name)
            else:
                want = {keys[k]: rank for rank, k in enumerate(picked)}
                got: dict[int, str] = {}
                for i, frame in _video_frames(src, stride, set(want)):
                    name = f"{want[i]:05d}_frame{i:06d}{ext}"
                    if not cv2.imwrite(str(tmp / name), frame):
                        raise SourceError(f"could not write {tmp / name}")
                    got[want[i]] = name
                names = [got[r] for r in sorted(got)]
            (tmp / SAMPLE_MARKER).write_text(
                json.dumps({"generator": "edgecv.data.calib", "source": str(src), "selected": names}, indent=1) + "\n"
            )
    else:
        names = [str(keys[k]) for k in picked]
    return {
        "source": str(src),
        "kind": "folder" if src.is_dir() else "video",
        "candidates": len(feats),
        "selected": len(picked),
        "files": names,
        "last_distance": last,
        "out": str(out) if out is not None else None,
    }
