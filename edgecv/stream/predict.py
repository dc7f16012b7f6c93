"""Predict-mode outputs of ``edgecv run`` on images: annotated images in a folder and one label file per image.

``--save DIR/`` writes every annotated frame into ``DIR`` under the file name it was read from (an image folder or
a glob; a video's frames are ``frame_000042.jpg``). ``--labels`` adds, under the same folder:

- ``yolo``: ``DIR/labels/<stem>.txt`` per image. Detectors: one line per box, ``class cx cy w h score`` with the
  centre and size normalized by the image's width and height (Ultralytics' ``save_txt`` + ``save_conf``).
  Classifiers: the top-k, one ``class score`` line each, best first.
- ``coco``: ``DIR/predictions.json``, the detections as COCO results (``image_id``, ``file_name``,
  ``category_id`` = the class index, ``bbox`` = [x, y, w, h] in pixels, ``score``), written when the run ends.
- ``mask``: ``DIR/masks/<stem>.png`` per image, segmenters' class ids as a one-channel PNG in the image's size.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from edgecv._io import describe_write_error, write_bytes, write_json
from edgecv._lazy import lazy_import
from edgecv.errors import ConfigError, SinkError
from edgecv.stream.sinkbase import Sink

LABEL_FORMATS = {"yolo": ("detect", "classify"), "coco": ("detect",), "mask": ("segment",)}
VIDEO_EXTS = (".mp4", ".mkv", ".avi", ".mov")
WRITABLE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


def is_folder_target(path: str | Path) -> bool:
    """``--save`` names a folder rather than a video file: it ends in ``/``, or it has no video suffix and is a
    folder or has no suffix at all (``out/pred``); ``x.txt`` stays a (refused) video name."""
    s = str(path)
    if s.endswith(("/", "\\")):
        return True
    p = Path(s)
    return p.suffix.lower() not in VIDEO_EXTS and (p.is_dir() or not p.suffix)


def check_output_folder(flag: str, folder: Path, inputs: list[Path], force: bool) -> None:
    """A predict folder never holds or replaces the inputs: refuse an input folder (or one inside it), a file in
    the way, and a folder that already holds files unless ``force``. Call it before anything is written."""
    real = folder.expanduser().resolve()
    for src in inputs:
        s = src.expanduser().resolve()
        if real == s or (s.is_dir() and real.is_relative_to(s)):
            raise ConfigError(f"{flag}: expected a folder outside the input '{src}', found '{folder}'")
    if real.exists() and not real.is_dir():
        raise ConfigError(f"{flag}: expected a folder (or a .mp4/.mkv/.mov/.avi file), found a file at '{folder}'")
    if real.is_dir() and any(real.iterdir()) and not force:
        raise ConfigError(
            f"{flag}: '{folder}' already holds files; pass --force to write into it "
            "(edgecv does not overwrite results unasked)"
        )


class _PerImage(Sink):
    """Names one output file per frame: the source file's name, else ``frame_<index>`` (unique within a run)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.files = 0
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def stem(self, event: dict[str, Any]) -> str:
        name = event.get("file")
        stem = Path(str(name)).stem if name else f"frame_{int(event.get('frame', 0)):06d}"
        if event.get("stream") is not None and not name:
            stem = f"{event['stream']}_{stem}"
        with self._lock:
            if stem in self._seen:  # two inputs with one name (a recursive glob): keep both
                stem = f"{stem}_{int(event.get('frame', 0))}"
            self._seen.add(stem)
        return stem

    def _write(self, path: Path, data: bytes, flag: str) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_bytes(path, data)
        except OSError as exc:
            raise SinkError(f"{flag}: could not write '{path}': {describe_write_error(exc, path.parent)}") from exc
        self.files += 1


class ImageFolderSink(_PerImage):
    """``--save DIR/``: each annotated frame as an image in ``DIR``, under the name of the file it was read from."""

    def __init__(self, folder: str | Path, quality: int = 95) -> None:
        super().__init__(folder)
        self.quality = int(quality)

    def write(self, frame: np.ndarray | None, event: dict[str, Any]) -> None:
        if frame is None:
            return
        cv2 = lazy_import("cv2", "stream")
        name = event.get("file")
        ext = Path(str(name)).suffix.lower() if name else ".jpg"
        ext = ext if ext in WRITABLE_EXTS else ".png"
        params = [cv2.IMWRITE_JPEG_QUALITY, self.quality] if ext in (".jpg", ".jpeg") else []
        ok, buf = cv2.imencode(ext, frame, params)
        if not ok:
            raise SinkError(f"--save: could not encode a {ext} image for frame {event.get('frame')}")
        self._write(self.folder / f"{self.stem(event)}{ext}", buf.tobytes(), "--save")

    def describe(self) -> dict[str, Any]:
        return {"folder": str(self.folder), "images": self.files}


class LabelSink(_PerImage):
    """``--labels yolo|coco|mask`` beside ``--save DIR/`` (see the module's docstring for the forms)."""

    needs_results = True

    def __init__(self, folder: str | Path, fmt: str, task: str) -> None:
        if fmt not in LABEL_FORMATS:
            raise ConfigError(f"--labels: expected one of {', '.join(LABEL_FORMATS)}, found '{fmt}'")
        if task not in LABEL_FORMATS[fmt]:
            fits = [f for f, tasks in LABEL_FORMATS.items() if task in tasks]
            raise ConfigError(
                f"--labels {fmt}: expected a {' or '.join(LABEL_FORMATS[fmt])} model, found a {task} model"
                + (f" (use --labels {' or '.join(fits)})" if fits else "")
            )
        super().__init__(folder)
        self.fmt = fmt
        self.task = task
        self.coco: list[dict[str, Any]] = []
        self.path = self.folder / ("predictions.json" if fmt == "coco" else "masks" if fmt == "mask" else "labels")

    def write(self, frame: np.ndarray | None, event: dict[str, Any]) -> None:
        raise NotImplementedError("LabelSink takes the decoded results: the pipeline calls write_results")

    def write_results(self, frame: np.ndarray | None, event: dict[str, Any], results: list[Any]) -> None:
        if not results:
            return
        r = results[0]
        if self.fmt == "mask":
            cv2 = lazy_import("cv2", "stream")
            mask = np.asarray(r.mask)
            mask = mask.astype(np.uint8 if mask.max(initial=0) < 256 else np.uint16)
            ok, buf = cv2.imencode(".png", mask)
            if not ok:
                raise SinkError(f"--labels mask: could not encode the mask of frame {event.get('frame')}")
            self._write(self.path / f"{self.stem(event)}.png", buf.tobytes(), "--labels")
            return
        if self.task == "classify":
            lines = [f"{int(i)} {float(s):.6f}" for i, s in zip(r.ids, r.scores)]
            self._write(self.path / f"{self.stem(event)}.txt", "".join(x + "\n" for x in lines).encode(), "--labels")
            return
        if frame is None:
            raise SinkError("--labels: expected the frame to size the boxes, found none")
        h, w = frame.shape[:2]
        boxes = np.asarray(r.boxes, dtype=np.float64).reshape(-1, 4)
        if self.fmt == "yolo":
            lines = []
            for (x1, y1, x2, y2), s, c in zip(boxes, r.scores, r.classes):
                cx, cy, bw, bh = (x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h
                lines.append(f"{int(c)} {cx:.6f} {cy:.6f} {bw:.6f} {bh:.6f} {float(s):.6f}")
            self._write(self.path / f"{self.stem(event)}.txt", "".join(x + "\n" for x in lines).encode(), "--labels")
            return
        name = event.get("file") or f"{self.stem(event)}.jpg"
        for (x1, y1, x2, y2), s, c in zip(boxes, r.scores, r.classes):
            self.coco.append(
                {
                    "image_id": int(event.get("frame", 0)),
                    "file_name": str(name),
                    "category_id": int(c),
                    "bbox": [
                        round(float(x1), 3),
                        round(float(y1), 3),
                        round(float(x2 - x1), 3),
                        round(float(y2 - y1), 3),
                    ],
                    "score": round(float(s), 6),
                }
            )
        self.files += 1

    def close(self) -> None:
        if self.fmt == "coco" and self.files:
            try:
                write_json(self.path, self.coco)
            except OSError as exc:
                raise SinkError(
                    f"--labels coco: could not write '{self.path}': {describe_write_error(exc, self.folder)}"
                ) from exc

    def describe(self) -> dict[str, Any]:
        return {"format": self.fmt, "path": str(self.path), "images": self.files}
