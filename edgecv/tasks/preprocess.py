"""Image → input tensor, exactly as the bundle :class:`~edgecv.bundle.Contract` says.

The same function is used by validate, bench, calibration and stream, so a device preprocesses the way the
model was trained. Images come in as HxWx3 uint8 arrays in **BGR** order (what OpenCV decodes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from edgecv._lazy import lazy_import
from edgecv.errors import InputError

if TYPE_CHECKING:
    from edgecv.bundle import Contract


@dataclass(frozen=True)
class Transform:
    """How original-image coordinates map to input-tensor coordinates: ``x_in = x_orig * scale + pad_x``.

    For ``stretch`` the two axes scale differently (``scale_x`` / ``scale_y``).
    """

    scale_x: float
    scale_y: float
    pad_x: float
    pad_y: float
    orig_hw: tuple[int, int]

    def to_original(self, boxes_xyxy: np.ndarray) -> np.ndarray:
        """Map boxes from input coordinates back to the original image, clipped to it."""
        b = np.asarray(boxes_xyxy, dtype=np.float32).copy()
        if b.size == 0:
            return b.reshape(0, 4)
        b[..., [0, 2]] = (b[..., [0, 2]] - self.pad_x) / self.scale_x
        b[..., [1, 3]] = (b[..., [1, 3]] - self.pad_y) / self.scale_y
        h, w = self.orig_hw
        b[..., [0, 2]] = b[..., [0, 2]].clip(0, w)
        b[..., [1, 3]] = b[..., [1, 3]].clip(0, h)
        return b


def _resize(img: np.ndarray, wh: tuple[int, int], contract: Contract) -> np.ndarray:
    """``img`` resized to ``wh`` with the contract's interpolation: Pillow's antialiased resampling (bit-exact,
    :mod:`edgecv.tasks.resample`) when ``antialias``, else OpenCV's."""
    if contract.antialias:
        from edgecv.tasks.resample import pil_resize

        out = pil_resize(img[..., 0] if img.shape[2] == 1 else img, wh, contract.interpolation)
        return out[..., None] if out.ndim == 2 else out
    cv2 = lazy_import("cv2", "stream")
    flag = {
        "bilinear": cv2.INTER_LINEAR,
        "bicubic": cv2.INTER_CUBIC,
        "nearest": cv2.INTER_NEAREST,
        "lanczos": cv2.INTER_LANCZOS4,
    }[contract.interpolation]
    out = cv2.resize(img, wh, interpolation=flag)
    return out[..., None] if out.ndim == 2 else out  # type: ignore[no-any-return]


def center_crop_geometry(h0: int, w0: int, th: int, tw: int, crop_ratio: float) -> tuple[int, int, int, int]:
    """Resized size and crop offset of ``center_crop``, exactly as torchvision's ``Resize(short)`` +
    ``CenterCrop((th, tw))`` (what timm's and torchvision's eval transforms are): the short side becomes
    ``round(min(th, tw) / crop_ratio)``, the long side ``int(short * long / short0)`` (truncated), the crop starts
    at ``int(round((size - crop) / 2))``.

    Returns:
        ``(nh, nw, top, left)``.
    """
    short = max(1, round(min(th, tw) / crop_ratio))
    if w0 <= h0:
        nw, nh = short, int(short * h0 / w0)
    else:
        nh, nw = short, int(short * w0 / h0)
    nh, nw = max(nh, th), max(nw, tw)  # a crop larger than the resized image: never pad, resize up to it
    return nh, nw, round((nh - th) / 2.0), round((nw - tw) / 2.0)  # Python's round, as torchvision


def resize_image(img: np.ndarray, contract: Contract) -> tuple[np.ndarray, Transform]:
    """Resize a HxWxC uint8 image to the contract's input size by its resize mode and interpolation."""
    if img.ndim != 3 or img.shape[0] == 0 or img.shape[1] == 0:
        raise InputError(f"expected an HxWxC image, found shape {img.shape}")
    h0, w0 = img.shape[:2]
    th, tw = contract.hw
    if contract.resize == "stretch":
        out = _resize(img, (tw, th), contract)
        return out, Transform(tw / w0, th / h0, 0.0, 0.0, (h0, w0))
    if contract.resize == "letterbox":
        r = min(th / h0, tw / w0)
        nh, nw = max(1, round(h0 * r)), max(1, round(w0 * r))
        resized = _resize(img, (nw, nh), contract)
        top, left = (th - nh) // 2, (tw - nw) // 2
        out = np.full((th, tw, img.shape[2]), contract.pad_value, dtype=img.dtype)
        out[top : top + nh, left : left + nw] = resized
        return out, Transform(nw / w0, nh / h0, float(left), float(top), (h0, w0))
    # center_crop: resize the short side to size / crop_ratio, then crop the centre
    nh, nw, top, left = center_crop_geometry(h0, w0, th, tw, contract.crop_ratio)
    resized = _resize(img, (nw, nh), contract)
    out = resized[top : top + th, left : left + tw]
    return np.ascontiguousarray(out), Transform(nw / w0, nh / h0, float(-left), float(-top), (h0, w0))


def preprocess(img_bgr: np.ndarray, contract: Contract) -> tuple[np.ndarray, Transform]:
    """One BGR uint8 image → a batch-1 input tensor and the coordinate transform."""
    cv2 = lazy_import("cv2", "stream")
    if img_bgr.ndim == 2:
        img_bgr = cv2.cvtColor(img_bgr, cv2.COLOR_GRAY2BGR)
    if contract.color == "GRAY":
        img, tf = resize_image(cv2.cvtColor(img_bgr, cv2.COLOR_BGR2GRAY)[..., None], contract)
    else:
        # resize first, swap channels on the small image: resizing works per channel and the pad value is
        # one scalar, so this is bit-identical to swapping first, and a 720p frame is not copied whole
        img, tf = resize_image(img_bgr, contract)
        if contract.color == "RGB":
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    # the layout change on the small uint8 image, then element-wise float arithmetic on contiguous arrays (the
    # values do not depend on the layout); a zero mean and unit std are skipped (x - 0 and x / 1 are exact)
    chw = contract.layout == "NCHW"
    if chw:
        img = np.ascontiguousarray(img.transpose(2, 0, 1))
    if contract.dtype == "uint8":
        return np.ascontiguousarray(img[None]), tf
    x = np.multiply(img, np.float32(contract.scale), dtype=np.float32)
    shape = (-1, 1, 1) if chw else (-1,)
    mean = np.asarray(contract.mean, dtype=np.float32).reshape(shape)
    std = np.asarray(contract.std, dtype=np.float32).reshape(shape)
    if mean.any():
        x = x - mean
    if (std != 1).any():
        x = x / std
    return x[None].astype(contract.dtype, copy=False), tf


def preprocess_batch(images: list[np.ndarray], contract: Contract) -> tuple[np.ndarray, list[Transform]]:
    xs, tfs = zip(*(preprocess(im, contract) for im in images))
    return np.concatenate(xs, axis=0), list(tfs)
