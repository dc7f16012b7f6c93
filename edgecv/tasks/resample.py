"""Pillow's resampling in numpy, bit-exact: what timm's and torchvision's eval transforms do to a PIL image.

``PIL.Image.resize`` with a bilinear, bicubic or Lanczos filter is a separable convolution whose filter is widened
by the downscale factor (antialiasing), with fixed-point coefficients (22 fractional bits) and a uint8 image
between its horizontal and vertical pass. OpenCV's ``cv2.resize`` does not widen the filter (and its bicubic uses
a = -0.75 where Pillow uses -0.5), so downscaling a photo by 2 with OpenCV differs from Pillow by tens of grey
levels at edges. This module reproduces Pillow's ``libImaging/Resample.c`` step by step (coefficients, rounding,
clipping, pass order), so a contract with ``antialias`` feeds the model exactly what it was evaluated on, with
numpy only (the runtime tier has no Pillow). Nearest is OpenCV's ``INTER_NEAREST_EXACT``, which is Pillow's
nearest.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from edgecv.errors import ConfigError

PRECISION_BITS = 32 - 8 - 2  # Resample.c


def _bilinear(x: np.ndarray) -> np.ndarray:
    x = np.abs(x)
    return np.where(x < 1.0, 1.0 - x, 0.0)


def _bicubic(x: np.ndarray) -> np.ndarray:
    a = -0.5
    x = np.abs(x)
    return np.where(
        x < 1.0, ((a + 2.0) * x - (a + 3.0)) * x * x + 1, np.where(x < 2.0, (((x - 5) * x + 8) * x - 4) * a, 0.0)
    )


def _sinc(x: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        px = x * math.pi
        return np.where(x == 0.0, 1.0, np.sin(px) / np.where(x == 0.0, 1.0, px))


def _lanczos(x: np.ndarray) -> np.ndarray:
    return np.where((x > -3.0) & (x < 3.0), _sinc(x) * _sinc(x / 3.0), 0.0)


#: filter and support, as Pillow's ``struct filter``
FILTERS: dict[str, tuple[Callable[[np.ndarray], np.ndarray], float]] = {
    "bilinear": (_bilinear, 1.0),
    "bicubic": (_bicubic, 2.0),
    "lanczos": (_lanczos, 3.0),
}


def coefficients(in_size: int, out_size: int, method: str) -> tuple[np.ndarray, np.ndarray]:
    """Pillow's ``precompute_coeffs`` + ``normalize_coeffs_8bpc`` for the whole input (box 0..in_size).

    Returns:
        ``first`` [out_size] int: the first input pixel of each output pixel; ``coeffs`` [out_size, ksize] int64
        fixed-point weights (zero past each pixel's window).
    """
    fn, support_1 = FILTERS[method]
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = support_1 * filterscale
    ksize = math.ceil(support) * 2 + 1
    center = (np.arange(out_size, dtype=np.float64) + 0.5) * scale
    # C's (int) cast truncates toward zero
    xmin = np.maximum(np.trunc(center - support + 0.5), 0).astype(np.int64)
    xmax = np.minimum(np.trunc(center + support + 0.5), in_size).astype(np.int64) - xmin
    k = np.arange(ksize, dtype=np.float64)[None, :]
    w = fn((k + xmin[:, None] - center[:, None] + 0.5) * (1.0 / filterscale))
    w = np.where(k < xmax[:, None], w, 0.0)
    ww = w.sum(axis=1, keepdims=True)
    w = np.where(ww != 0.0, w / np.where(ww != 0.0, ww, 1.0), w)
    fixed = np.trunc(w * (1 << PRECISION_BITS) + np.where(w < 0, -0.5, 0.5)).astype(np.int64)
    return xmin, fixed


def _pass(img: np.ndarray, out_size: int, axis: int, method: str) -> np.ndarray:
    """One separable pass along ``axis`` (1: width, 0: height) of an HxWxC uint8 image, clipped to uint8."""
    in_size = img.shape[axis]
    first, coeffs = coefficients(in_size, out_size, method)
    ksize = coeffs.shape[1]
    src = np.moveaxis(img, axis, 0)  # the resampled axis first
    acc = np.full((out_size, *src.shape[1:]), 1 << (PRECISION_BITS - 1), dtype=np.int64)
    extra = (1,) * (src.ndim - 1)
    for j in range(ksize):
        c = coeffs[:, j]
        if not c.any():
            continue
        idx = np.minimum(first + j, in_size - 1)  # past the window the coefficient is 0
        acc += src[idx].astype(np.int64) * c.reshape(-1, *extra)
    out = np.clip(acc >> PRECISION_BITS, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(np.moveaxis(out, 0, axis))


def vertical_first(w0: int, h0: int, w: int, h: int) -> bool:
    """Whether Pillow runs the vertical pass first (the uint8 rounding between the passes makes the order
    visible). Pillow 13 does so when the image shrinks vertically by more than twice as many pixels as it shrinks
    horizontally; this rule reproduces its choice on every size tried (a grid of shrinks and enlargements of four
    image shapes and 150 random sizes; ``tests/test_timm.py`` checks it against the installed Pillow)."""
    return h < h0 and (h0 - h) > 2 * (w0 - w)


def pil_resize(img: np.ndarray, size_wh: tuple[int, int], method: str = "bicubic") -> np.ndarray:
    """Resize an HxW or HxWxC uint8 image to ``size_wh`` exactly as ``PIL.Image.resize(size_wh, method)`` does
    (pass order as Pillow: :func:`vertical_first`).

    Raises:
        ConfigError: an image that is not uint8 or a method Pillow's resampler has no filter for here.
    """
    if img.dtype != np.uint8:
        raise ConfigError(f"resize: expected a uint8 image, found {img.dtype}")
    w, h = int(size_wh[0]), int(size_wh[1])
    if method == "nearest":
        import cv2

        return cv2.resize(img, (w, h), interpolation=cv2.INTER_NEAREST_EXACT)  # type: ignore[no-any-return]
    if method not in FILTERS:
        raise ConfigError(f"interpolation: expected one of nearest, {', '.join(FILTERS)}, found '{method}'")
    squeeze = img.ndim == 2
    out = img[..., None] if squeeze else img
    h0, w0 = out.shape[:2]
    order = (0, 1) if vertical_first(w0, h0, w, h) else (1, 0)
    for axis in order:
        size = h if axis == 0 else w
        if out.shape[axis] != size:
            out = _pass(out, size, axis, method)
    out = np.ascontiguousarray(out)
    return out[..., 0] if squeeze else out


__all__ = ["FILTERS", "coefficients", "pil_resize", "vertical_first"]
