"""Overlays for decoded results (OpenCV, BGR images): boxes + labels + scores, mask blend, top-k text, FPS.

Every function draws in place on ``img`` and returns it; call :func:`draw_result` to dispatch on the result kind.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgecv._lazy import lazy_import


def palette(n: int = 256) -> np.ndarray:
    """A fixed, well-spread BGR colour per class id (golden-ratio hues), ``[n, 3]`` uint8; id 0 is black."""
    cv2 = lazy_import("cv2", "stream")
    hues = (np.arange(n) * 0.618033988749895 % 1.0 * 180).astype(np.uint8)
    hsv = np.stack([hues, np.full(n, 200, np.uint8), np.full(n, 255, np.uint8)], axis=1)[None]
    bgr = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0]
    bgr[0] = 0
    return bgr  # type: ignore[no-any-return]


_PALETTE: np.ndarray | None = None


def color_for(class_id: int) -> tuple[int, int, int]:
    global _PALETTE
    if _PALETTE is None:
        _PALETTE = palette()
    c = _PALETTE[(int(class_id) + 1) % len(_PALETTE)]  # +1: class 0 of a detector should not be black
    return int(c[0]), int(c[1]), int(c[2])


def _text(
    img: np.ndarray,
    text: str,
    org: tuple[int, int],
    color: tuple[int, int, int] = (255, 255, 255),
    bg: tuple[int, int, int] | None = (0, 0, 0),
    scale: float | None = None,
) -> None:
    cv2 = lazy_import("cv2", "stream")
    scale = scale or max(0.4, min(img.shape[:2]) / 720.0)
    thick = max(1, int(round(scale * 1.5)))
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    x, y = org
    y = max(th + 2, y)
    if bg is not None:
        cv2.rectangle(img, (x, y - th - 2), (x + tw + 2, y + base), bg, -1)
    cv2.putText(img, text, (x + 1, y - 1), cv2.FONT_HERSHEY_SIMPLEX, scale, color, thick, cv2.LINE_AA)


def draw_detections(img: np.ndarray, result: Any) -> np.ndarray:
    """Boxes with ``label score`` tags (a :class:`~edgecv.tasks.decode.DetectResult`)."""
    cv2 = lazy_import("cv2", "stream")
    thick = max(1, int(round(min(img.shape[:2]) / 360)))
    for i in range(len(result)):
        x1, y1, x2, y2 = (int(round(float(v))) for v in result.boxes[i])
        color = color_for(int(result.classes[i]))
        cv2.rectangle(img, (x1, y1), (x2, y2), color, thick)
        _text(img, f"{result.label(i)} {float(result.scores[i]):.2f}", (x1, y1), (0, 0, 0), bg=color)
    return img


def draw_mask(img: np.ndarray, result: Any, alpha: float = 0.45) -> np.ndarray:
    """Blend a class-coloured mask over the image (class 0, usually background, is left clear)."""
    mask = result.mask
    if mask.shape[:2] != img.shape[:2]:
        cv2 = lazy_import("cv2", "stream")
        mask = cv2.resize(mask.astype(np.uint8), (img.shape[1], img.shape[0]), interpolation=cv2.INTER_NEAREST)
    global _PALETTE
    if _PALETTE is None:
        _PALETTE = palette()
    cv2 = lazy_import("cv2", "stream")
    ids = mask if mask.dtype == np.uint8 else (mask % len(_PALETTE)).astype(np.uint8)
    # OpenCV LUT/addWeighted/copyTo: numpy fancy indexing and masked copies are ~5x slower at 720p
    lut = _PALETTE.reshape(256, 1, 3)
    colours = cv2.LUT(cv2.cvtColor(ids, cv2.COLOR_GRAY2BGR), lut)
    blended = cv2.addWeighted(img, 1.0 - alpha, colours, alpha, 0.0)
    cv2.copyTo(blended, (ids != 0).view(np.uint8), img)
    return img


def draw_topk(img: np.ndarray, result: Any, k: int = 3) -> np.ndarray:
    """The top-k ``label probability`` lines in the top-left corner."""
    cv2 = lazy_import("cv2", "stream")
    scale = max(0.4, min(img.shape[:2]) / 720.0)
    line = cv2.getTextSize("Ag", cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][1] + 8
    for j, (lab, s) in enumerate(zip(result.labels[:k], result.scores[:k])):
        _text(img, f"{lab}: {float(s):.3f}", (4, 4 + line * (j + 1)), scale=scale)
    return img


def draw_fps(img: np.ndarray, fps: float, extra: str = "") -> np.ndarray:
    """``FPS n.n`` (and ``extra``) in the top-right corner."""
    cv2 = lazy_import("cv2", "stream")
    text = f"FPS {fps:.1f}" + (f"  {extra}" if extra else "")
    scale = max(0.4, min(img.shape[:2]) / 720.0)
    tw = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, max(1, int(round(scale * 1.5))))[0][0]
    _text(img, text, (max(0, img.shape[1] - tw - 8), 4), color=(0, 255, 0), scale=scale)
    return img


def draw_result(img: np.ndarray, result: Any) -> np.ndarray:
    """Draw any result by its ``kind`` (detect, segment, classify); unknown kinds are left undrawn."""
    kind = getattr(result, "kind", "")
    if kind == "detect":
        return draw_detections(img, result)
    if kind == "segment":
        return draw_mask(img, result)
    if kind == "classify":
        return draw_topk(img, result)
    return img
