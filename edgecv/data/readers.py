"""The one torch-free image reader (runtime tier): run, validate, calibration, export and the training data sets
all decode image files here, so a photo means the same pixels everywhere.

``cv2.IMREAD_COLOR`` applies the EXIF orientation tag (a phone JPEG shot in portrait comes out upright), always
gives 3-channel BGR uint8 (grey is replicated, alpha dropped, 16-bit reduced to its top 8 bits).
``IMREAD_UNCHANGED`` would ignore the orientation, so it is never used for pixels that reach a model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgecv._lazy import lazy_import
from edgecv.errors import DataError

IMG_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


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
