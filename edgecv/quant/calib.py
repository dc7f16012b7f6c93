"""Calibration sources: iterables of feed dicts, preprocessed exactly as the bundle contract says.

A :class:`CalibrationSource` is what every INT8 path reads (ORT ``quantize_static``, NNCF ``nncf.quantize``,
the TensorRT builder): ``for feed in source`` yields ``{input_name: array of the contract's shape with batch 1}``
and ``len(source)`` is the number of samples it will yield. Sources re-read their files on every pass, so a
300-image calibration set is not held in memory while methods are compared.

Three kinds, chosen from the path by :func:`open_calibration`:

* a folder of images (searched recursively; sorted, so runs are repeatable),
* a video file, sampled evenly over its length with OpenCV,
* an ``.npz`` of already-preprocessed inputs (one array per input name, or a single array; batch axis first).

There is never a silent default: no path → :class:`~edgecv.errors.ConfigError`.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgecv._lazy import lazy_import
from edgecv.data.readers import read_image
from edgecv.errors import ConfigError, DataError, SourceError
from edgecv.tasks.preprocess import preprocess
from edgecv.validate.metrics import IMAGE_EXTS

#: the one error for INT8 without calibration data (QuantConfig and open_calibration)
NO_CALIB = (
    "INT8 needs calibration data: expected --calib PATH (a folder of images, a video or an .npz of inputs), found none"
)

if TYPE_CHECKING:
    from edgecv.bundle import Contract

VIDEO_EXTS = frozenset({".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv"})

# Samples below which calibration is unreliable, per (backend, method); ``None`` method = any method.
# NNCF's own default subset_size is 300 (its statistics and bias correction are tuned for it).
# ORT entropy/percentile build histograms: with < 100 samples the tails (where they put the range) are noise.
# Min/max only needs the extremes to be seen; 32 images covers a typical distribution.
RECOMMENDED_SAMPLES: dict[tuple[str, str | None], int] = {
    ("openvino", None): 300,
    ("onnxruntime", "entropy"): 100,
    ("onnxruntime", "percentile"): 100,
    ("onnxruntime", "minmax"): 32,
    ("tensorrt", None): 32,  # TensorRT reads the ORT QDQ model: same needs as the method that built it
}


class CalibrationWarning(UserWarning):
    """Fewer calibration samples than the backend/method needs for reliable ranges."""


def recommended_samples(backend: str, method: str) -> int:
    """How many calibration samples ``backend`` with ``method`` should get (see :data:`RECOMMENDED_SAMPLES`)."""
    return RECOMMENDED_SAMPLES.get((backend, method), RECOMMENDED_SAMPLES.get((backend, None), 32))


def check_sample_count(source: CalibrationSource, backend: str, method: str, chosen: bool = False) -> int:
    """Warn (:class:`CalibrationWarning`) when ``source`` has fewer samples than recommended; returns the count.

    ``method`` is the method the INT8 model is built with; ``chosen`` says ``--method auto`` picked it (the warning
    then comes after the choice, so it never names a method that was not used)."""
    n = len(source)
    need = recommended_samples(backend, method)
    if n < need:
        how = f"{method}, chosen by --method auto" if chosen else method
        warnings.warn(
            f"calibrating {backend} ({how}) with {n} samples from {source.describe()}; "
            f"at least {need} are recommended for stable ranges",
            CalibrationWarning,
            stacklevel=2,
        )
    return n


class CalibrationSource:
    """An iterable of feed dicts (``{input_name: batch-1 array}``) with a known length.

    Subclasses implement :meth:`_arrays` (yielding preprocessed batch-1 arrays) and :meth:`__len__`.
    """

    kind = "base"

    def __init__(self, path: Path, contract: Contract) -> None:
        self.path = Path(path)
        self.contract = contract

    @property
    def input_name(self) -> str:
        return self.contract.input_name

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        for arr in self._arrays():
            yield {self.input_name: arr}

    def _arrays(self) -> Iterator[np.ndarray]:
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError

    def describe(self) -> str:
        return f"{self.kind} '{self.path}'"

    def to_dict(self) -> dict[str, object]:
        """What the manifest records about the calibration data."""
        return {"kind": self.kind, "path": str(self.path), "samples": len(self)}


class ImageFolderSource(CalibrationSource):
    """Every image under a folder (recursively, sorted), at most ``limit`` evenly spaced ones."""

    kind = "images"

    def __init__(self, path: Path, contract: Contract, limit: int | None = None) -> None:
        super().__init__(path, contract)
        files = sorted(p for p in self.path.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file())
        if not files:
            raise SourceError(f"expected images ({', '.join(sorted(IMAGE_EXTS))}) in '{path}', found none")
        self.files = _evenly(files, limit)

    def __len__(self) -> int:
        return len(self.files)

    def _arrays(self) -> Iterator[np.ndarray]:
        for f in self.files:
            try:
                img = read_image(f)
            except DataError as exc:
                raise SourceError(str(exc)) from None
            yield preprocess(img, self.contract)[0]


class VideoSource(CalibrationSource):
    """Frames sampled evenly over a video (``limit`` frames, default 300), decoded with OpenCV."""

    kind = "video"
    DEFAULT_FRAMES = 300

    def __init__(self, path: Path, contract: Contract, limit: int | None = None) -> None:
        super().__init__(path, contract)
        cv2 = lazy_import("cv2", "stream")
        cap = cv2.VideoCapture(str(self.path))
        try:
            if not cap.isOpened():
                raise SourceError(f"cannot open video '{path}' with OpenCV")
            total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        finally:
            cap.release()
        if total <= 0:
            raise SourceError(f"expected frames in video '{path}', OpenCV reports {total}")
        want = min(total, limit or self.DEFAULT_FRAMES)
        self.indices = sorted({int(i) for i in np.linspace(0, total - 1, want).round()})
        self.total_frames = total

    def __len__(self) -> int:
        return len(self.indices)

    def _arrays(self) -> Iterator[np.ndarray]:
        cv2 = lazy_import("cv2", "stream")
        cap = cv2.VideoCapture(str(self.path))
        try:
            wanted = set(self.indices)
            # sequential decode + skip is exact for every codec, unlike CAP_PROP_POS_FRAMES seeks
            for idx in range(self.indices[-1] + 1):
                ok = cap.grab()
                if not ok:
                    raise SourceError(f"video '{self.path}' ended at frame {idx}, expected {self.total_frames}")
                if idx in wanted:
                    ok, frame = cap.retrieve()
                    if not ok:
                        raise SourceError(f"cannot decode frame {idx} of '{self.path}'")
                    yield preprocess(frame, self.contract)[0]
        finally:
            cap.release()


class NpzSource(CalibrationSource):
    """Preprocessed inputs from an ``.npz``: key = input name (or the only array), batch axis first."""

    kind = "npz"

    def __init__(self, path: Path, contract: Contract, limit: int | None = None) -> None:
        super().__init__(path, contract)
        with np.load(self.path) as data:
            keys = list(data.files)
            if contract.input_name in keys:
                key = contract.input_name
            elif f"input/{contract.input_name}" in keys:  # a bundle's reference.npz
                key = f"input/{contract.input_name}"
            elif len(keys) == 1:
                key = keys[0]
            else:
                raise DataError(
                    f"'{path}': expected an array named '{contract.input_name}' (or a single array), found {keys}"
                )
            arr = np.asarray(data[key])
        shape = list(contract.input_shape)
        if arr.ndim == len(shape) - 1:
            arr = arr[None]
        if arr.ndim != len(shape) or list(arr.shape[1:]) != shape[1:]:
            raise DataError(
                f"'{path}' array '{key}': expected shape (N, {', '.join(map(str, shape[1:]))}), "
                f"found {tuple(arr.shape)}"
            )
        self.array = arr.astype(contract.dtype, copy=False)
        self.indices = _evenly(list(range(len(arr))), limit)

    def __len__(self) -> int:
        return len(self.indices)

    def _arrays(self) -> Iterator[np.ndarray]:
        for i in self.indices:
            yield np.ascontiguousarray(self.array[i : i + 1])


def _evenly(items: list, limit: int | None) -> list:  # type: ignore[type-arg]
    if limit is None or limit >= len(items):
        return items
    if limit <= 0:
        raise ConfigError(f"calibration limit: expected a positive number, found {limit}")
    idx = np.linspace(0, len(items) - 1, limit).round().astype(int)
    return [items[i] for i in sorted(set(idx.tolist()))]


def open_calibration(path: str | Path | None, contract: Contract, limit: int | None = None) -> CalibrationSource:
    """Open a calibration source for a model with ``contract``.

    Args:
        path: a folder of images, a video file or an ``.npz`` of preprocessed inputs. ``None`` is an error:
            INT8 ranges come from real data, never from a silent default.
        contract: the bundle contract; images and frames are preprocessed with it.
        limit: use at most this many samples (evenly spaced over the source).

    Raises:
        ConfigError: no path, or a path of an unknown kind.
        SourceError / DataError: the source cannot be read.
    """
    if path is None or str(path) == "":
        raise ConfigError(NO_CALIB)
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"--calib: expected a folder of images, a video or an .npz, found nothing at '{p}'")
    if p.is_dir():
        return ImageFolderSource(p, contract, limit)
    suffix = p.suffix.lower()
    if suffix == ".npz":
        return NpzSource(p, contract, limit)
    if suffix in VIDEO_EXTS:
        return VideoSource(p, contract, limit)
    if suffix in IMAGE_EXTS:
        raise ConfigError(f"--calib: expected a folder of images, found a single image '{p}'")
    raise ConfigError(
        f"--calib: expected a folder of images, a video ({', '.join(sorted(VIDEO_EXTS))}) or an .npz, found '{p.name}'"
    )


def as_source(
    calib: CalibrationSource | str | Path | None, contract: Contract, limit: int | None = None
) -> CalibrationSource:
    """Pass a :class:`CalibrationSource` through, or open a path with :func:`open_calibration`."""
    if isinstance(calib, CalibrationSource):
        return calib
    return open_calibration(calib, contract, limit)
