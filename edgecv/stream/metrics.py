"""Run metrics with bounded memory: per-stage latency percentiles, frame counters, rates."""

from __future__ import annotations

import collections
import random
import threading
import time
from typing import Any, ClassVar

import numpy as np

STAGES = ("read", "queue", "preprocess", "infer", "post", "sink", "e2e")
STAGE_HELP = {
    "read": "source read + decode",
    "queue": "waiting in the capture buffer",
    "preprocess": "preprocess (contract)",
    "infer": "runner.infer",
    "post": "decode + draw",
    "sink": "write sinks",
    "e2e": "capture → result",
}


class Reservoir:
    """Latency samples: all of them up to ``size``, then a uniform random sample (Vitter's algorithm R),
    plus a short recent window for the live status line. Memory stays bounded on a run of any length."""

    def __init__(self, size: int = 50_000, recent: int = 300, seed: int = 0) -> None:
        self.size = size
        # preallocated float32: memory is fixed up front (a list of Python floats grows ~32 B per sample)
        self._buf = np.zeros(size, dtype=np.float32)
        self._n = 0
        self.recent: collections.deque[float] = collections.deque(maxlen=recent)
        self.count = 0
        self.total = 0.0
        self.max = 0.0
        self._rng = random.Random(seed)

    def add(self, v: float) -> None:
        self.count += 1
        self.total += v
        self.max = max(self.max, v)
        self.recent.append(v)
        if self._n < self.size:
            self._buf[self._n] = v
            self._n += 1
        else:
            j = self._rng.randrange(self.count)
            if j < self.size:
                self._buf[j] = v

    @property
    def samples(self) -> np.ndarray:
        return self._buf[: self._n]

    def summary(self, recent: bool = False) -> dict[str, float]:
        data = list(self.recent) if recent else self.samples
        if len(data) == 0:
            return {"n": 0}
        a = np.asarray(data, dtype=np.float64)
        p50, p90, p99 = np.percentile(a, [50, 90, 99])
        return {
            "n": self.count,
            "mean": round(self.total / self.count, 3),
            "p50": round(float(p50), 3),
            "p90": round(float(p90), 3),
            "p99": round(float(p99), 3),
            "max": round(self.max, 3),
        }


class RateMeter:
    """Events per second over a sliding window of timestamps."""

    def __init__(self, window_s: float = 2.0) -> None:
        self.window_s = window_s
        self._t: collections.deque[float] = collections.deque()

    def tick(self, t: float | None = None) -> None:
        t = time.perf_counter() if t is None else t
        self._t.append(t)
        while self._t and t - self._t[0] > self.window_s:
            self._t.popleft()

    def rate(self) -> float:
        if len(self._t) < 2:
            return 0.0
        now = time.perf_counter()
        while self._t and now - self._t[0] > self.window_s:
            self._t.popleft()
        if len(self._t) < 2:
            return 0.0
        span = self._t[-1] - self._t[0]
        return (len(self._t) - 1) / span if span > 0 else 0.0


class Metrics:
    """Counters and latencies of one run; thread-safe where stages update concurrently."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.t_start = time.perf_counter()
        self.t_end: float | None = None
        self.lat = {s: Reservoir() for s in STAGES}
        self.frames_read = 0  # frames the source delivered (after decode)
        self.frames_in = 0  # frames handed to the pipeline (after stride / max-fps)
        self.frames_out = 0  # frames fully processed
        self.skipped_corrupt = 0
        self.skipped_stride = 0
        self.skipped_rate = 0
        self.reconnects = 0
        self.reconnect_attempts = 0
        self.in_rate = RateMeter()
        self.out_rate = RateMeter()
        from edgecv.stream.timeline import Timeline

        self.timeline = Timeline()

    def add_latency(self, stage: str, ms: float) -> None:
        """A sample of ``stage`` (one of :data:`STAGES`, or a pipeline's own stage, kept from its first sample)."""
        with self._lock:
            r = self.lat.get(stage)
            if r is None:
                r = self.lat[stage] = Reservoir()
            r.add(ms)

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + n)

    @property
    def elapsed(self) -> float:
        return (self.t_end or time.perf_counter()) - self.t_start

    def status_line(self, dropped: int) -> str:
        def pp(stage: str) -> str:
            s = self.lat[stage].summary(recent=True)
            return f"{s['p50']:.1f}/{s['p99']:.1f}" if s.get("n") else "-/-"

        return (
            f"in {self.in_rate.rate():5.1f} fps | out {self.out_rate.rate():5.1f} fps | "
            f"processed {self.frames_out} | dropped {dropped} | skipped {self.skipped_corrupt} | "
            f"reconnects {self.reconnects} | p50/p99 ms pre {pp('preprocess')} infer {pp('infer')} "
            f"post {pp('post')} e2e {pp('e2e')}"
        )

    def summary(self) -> dict[str, Any]:
        el = max(self.elapsed, 1e-9)
        return {
            "duration_s": round(el, 3),
            "frames_read": self.frames_read,
            "frames_in": self.frames_in,
            "frames_processed": self.frames_out,
            "skipped_corrupt": self.skipped_corrupt,
            "skipped_stride": self.skipped_stride,
            "skipped_max_fps": self.skipped_rate,
            "reconnects": self.reconnects,
            "reconnect_attempts": self.reconnect_attempts,
            "fps_in": round(self.frames_read / el, 3),
            "fps_out": round(self.frames_out / el, 3),
            "latency_ms": {s: self.lat[s].summary() for s in STAGES},
            "slowest_stage": self.slowest_stage(),
            "timeline": self.timeline.to_dict(),
        }

    # what each stage of the pipeline spends per frame: reading/decoding (capture thread), preprocessing,
    # inference, post-processing (decode + draw) and the sinks (writing, or waiting for a video encoder)
    STAGE_PARTS: ClassVar[dict[str, tuple[str, ...]]] = {
        "capture": ("read",),
        "preprocess": ("preprocess",),
        "infer": ("infer",),
        "post": ("post",),
        "sinks": ("sink",),
    }

    def slowest_stage(self) -> dict[str, Any] | None:
        """The stage with the largest median time per frame, and the frame rate it allows on its own.

        With spare cores the stages overlap and the slowest one sets the end-to-end rate (post and sinks share
        a thread, so together they count); where stages share cores the sum matters too, which
        ``duration_s`` shows.
        """
        busy: dict[str, float] = {}
        for stage, parts in self.STAGE_PARTS.items():
            sums = [self.lat[s].summary() for s in parts]
            if all(x.get("n") for x in sums):
                busy[stage] = sum(float(x["p50"]) for x in sums)
        if not busy:
            return None
        worst = max(busy, key=lambda k: busy[k])
        ms = busy[worst]
        return {
            "stage": worst,
            "p50_ms": round(ms, 3),
            "max_fps": round(1000.0 / ms, 1) if ms > 0 else None,
            "busy_p50_ms": {k: round(v, 3) for k, v in busy.items()},
        }
