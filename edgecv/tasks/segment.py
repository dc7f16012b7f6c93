"""Semantic segmentation post-processing: per-pixel class scores → a label mask in original-frame pixels."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from edgecv._lazy import lazy_import
from edgecv.errors import BackendError
from edgecv.tasks.decode import Result, class_name, pick_output

if TYPE_CHECKING:
    from edgecv.bundle import Contract
    from edgecv.tasks.preprocess import Transform


@dataclass
class SegmentResult:
    """A label mask ``mask`` [H,W] (uint8/int32 class ids) in the original image's size."""

    mask: np.ndarray
    names: list[str] = field(default_factory=list)
    kind: str = "segment"

    def class_pixels(self) -> dict[int, int]:
        # bincount is O(pixels); np.unique sorts (tens of ms on a 720p mask)
        counts = np.bincount(self.mask.reshape(-1).astype(np.intp, copy=False))
        return {int(i): int(c) for i, c in enumerate(counts) if c}

    def to_json(self) -> dict[str, Any]:
        # the full mask is too large for an event log: report the class histogram (fraction of the frame)
        total = max(1, int(self.mask.size))
        return {
            "task": "segment",
            "shape": [int(d) for d in self.mask.shape],
            "classes": [
                {"class_id": i, "label": class_name(self.names, i), "fraction": round(c / total, 5)}
                for i, c in sorted(self.class_pixels().items())
            ],
        }


class SegmentDecoder:
    """Argmax over the class axis (NCHW or NHWC scores, or an already-argmaxed [B,H,W] map), then the mask is
    mapped back through the preprocessing transform (padding removed, nearest-neighbour resize)."""

    def __init__(self, contract: Contract) -> None:
        self.contract = contract
        self.names = list(contract.class_names)
        self.num_classes = len(self.names) or None

    def _labels(self, out: np.ndarray, batch: int) -> np.ndarray:
        if out.ndim == 3:  # already class ids
            return out.astype(np.int32)
        if out.ndim != 4 or out.shape[0] != batch:
            raise BackendError(f"segment: expected scores [B={batch},C,H,W] or [B,H,W,C], found {out.shape}")
        # the class axis: NCHW unless the class count says NHWC
        axis = 1
        if self.num_classes is not None and out.shape[1] != self.num_classes and out.shape[3] == self.num_classes:
            axis = 3
        if out.shape[axis] == 1:  # binary model with a single logit channel
            return (out.take(0, axis=axis) > 0).astype(np.int32)
        return out.argmax(axis=axis).astype(np.int32)

    def decode(self, outputs: dict[str, np.ndarray], transforms: list[Transform]) -> list[Result]:
        cv2 = lazy_import("cv2", "stream")
        labels = self._labels(pick_output(outputs, self.contract, "segment"), len(transforms))
        th, tw = self.contract.hw
        results: list[Result] = []
        for lab, tf in zip(labels, transforms):
            mh, mw = lab.shape
            # output stride: the mask may be smaller than the input tensor
            sy, sx = mh / th, mw / tw
            h0, w0 = tf.orig_hw
            # region of the mask that covers the original image: x_in = x_orig * scale + pad
            x0 = max(0.0, tf.pad_x) * sx
            y0 = max(0.0, tf.pad_y) * sy
            x1 = min(mw, (tf.pad_x + w0 * tf.scale_x) * sx)
            y1 = min(mh, (tf.pad_y + h0 * tf.scale_y) * sy)
            crop = lab[
                int(round(y0)) : max(int(round(y0)) + 1, int(round(y1))),
                int(round(x0)) : max(int(round(x0)) + 1, int(round(x1))),
            ]
            dtype = np.uint8 if int(crop.max(initial=0)) < 256 else np.int32
            crop = crop.astype(dtype)
            if tf.pad_x < 0 or tf.pad_y < 0:
                # centre crop: the model never saw the borders; scale what it saw to where it sits
                vis_w = (tw / tf.scale_x) if tf.scale_x else w0
                vis_h = (th / tf.scale_y) if tf.scale_y else h0
                full = np.zeros((h0, w0), dtype=dtype)
                left = int(round(-tf.pad_x / tf.scale_x))
                top = int(round(-tf.pad_y / tf.scale_y))
                vw, vh = max(1, int(round(vis_w))), max(1, int(round(vis_h)))
                resized = cv2.resize(crop, (vw, vh), interpolation=cv2.INTER_NEAREST)
                full[top : top + vh, left : left + vw] = resized[: max(0, h0 - top), : max(0, w0 - left)]
                mask = full
            else:
                mask = cv2.resize(crop, (w0, h0), interpolation=cv2.INTER_NEAREST)
            results.append(SegmentResult(mask=mask, names=self.names))
        return results
