"""Where a frame's time goes: pre-processing, inference and post-processing, timed separately.

Runtime tier (numpy + OpenCV + one engine). The stages are exactly the ones ``edgecv run`` executes per frame —
:func:`edgecv.tasks.preprocess.preprocess` (the bundle contract), the Runner, and the task decoder (for detectors:
decode + NMS + mapping boxes back to the frame) — so the split explains what a camera pipeline will see.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from edgecv.errors import ConfigError

if TYPE_CHECKING:
    from edgecv.backends.base import Runner
    from edgecv.bundle import Contract

STAGES = ("pre", "infer", "post", "total")


@dataclass
class StageTimes:
    """Median, p99 and mean milliseconds per stage over ``n`` frames, and the serial frame rate.

    ``fps`` is frames over the time they took (``1000 / total_mean_ms``): the rate of a loop that runs the
    stages one after another, stalls included, which is what a pipeline's end-to-end FPS compares to.
    """

    n: int
    pre_ms: float
    infer_ms: float
    post_ms: float
    total_ms: float
    pre_p99_ms: float
    infer_p99_ms: float
    post_p99_ms: float
    total_p99_ms: float
    pre_mean_ms: float = 0.0
    infer_mean_ms: float = 0.0
    post_mean_ms: float = 0.0
    total_mean_ms: float = 0.0
    fps: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def sample_frames(contract: Contract, n: int = 8, hw: tuple[int, int] = (480, 640)) -> list[np.ndarray]:
    """Camera-sized BGR frames: scikit-image's bundled photos resized to ``hw`` (seeded noise without it).

    Real photos matter for detectors: NMS time depends on how many boxes survive the score threshold.
    """
    from edgecv._lazy import lazy_import

    cv2 = lazy_import("cv2", "stream")
    frames: list[np.ndarray] = []
    try:
        from skimage import data as skd

        for name in ("astronaut", "coffee", "chelsea", "rocket", "motorcycle_left", "hubble_deep_field"):
            img = np.asarray(getattr(skd, name)())
            if img.ndim == 2:
                img = np.stack([img] * 3, -1)
            frames.append(cv2.resize(cv2.cvtColor(img[..., :3], cv2.COLOR_RGB2BGR), (hw[1], hw[0])))
    except Exception:  # noqa: BLE001 - scikit-image is optional on a device
        frames = []
    rng = np.random.default_rng(0)
    while len(frames) < n:
        frames.append(rng.integers(0, 256, (hw[0], hw[1], 3), dtype=np.uint8))
    return frames[:n]


def stage_times(
    runner: Runner,
    contract: Contract,
    frames: Sequence[np.ndarray],
    n: int = 50,
    warmup: int = 5,
    min_time_s: float = 0.0,
    max_n: int = 100_000,
) -> StageTimes:
    """Time at least ``n`` frames (cycling through ``frames``), one at a time, after ``warmup`` untimed ones,
    and keep going until ``min_time_s`` seconds were timed (at most ``max_n`` frames)."""
    from edgecv.tasks.decode import get_decoder, make_feed
    from edgecv.tasks.preprocess import preprocess

    if not frames:
        raise ConfigError("stage timing: expected at least one frame")
    if n < 1:
        raise ConfigError(f"stage timing: expected n >= 1, found {n}")
    dec = get_decoder(contract)
    rows: list[tuple[float, float, float]] = []
    timed = 0.0
    i = 0
    while i < warmup + n or (timed < min_time_s and len(rows) < max_n):
        img = frames[i % len(frames)]
        t0 = time.perf_counter()
        x, tf = preprocess(img, contract)
        feed = make_feed(contract, x)  # host proposals (R-CNN / Fast R-CNN) count as preprocessing
        t1 = time.perf_counter()
        out = runner.infer(feed)
        t2 = time.perf_counter()
        dec.decode(out, [tf])
        t3 = time.perf_counter()
        if i >= warmup:
            rows.append((t1 - t0, t2 - t1, t3 - t2))
            timed += t3 - t0
        i += 1
    ms = 1000.0 * np.asarray(rows)
    total = ms.sum(axis=1)
    med = np.median(ms, axis=0)
    p99 = np.percentile(ms, 99, axis=0)
    mean = ms.mean(axis=0)
    return StageTimes(
        n=len(rows),
        pre_ms=float(med[0]),
        infer_ms=float(med[1]),
        post_ms=float(med[2]),
        total_ms=float(np.median(total)),
        pre_p99_ms=float(p99[0]),
        infer_p99_ms=float(p99[1]),
        post_p99_ms=float(p99[2]),
        total_p99_ms=float(np.percentile(total, 99)),
        pre_mean_ms=float(mean[0]),
        infer_mean_ms=float(mean[1]),
        post_mean_ms=float(mean[2]),
        total_mean_ms=float(total.mean()),
        fps=float(1000.0 / total.mean()),
    )
