"""A run's timeline with bounded memory: per time bucket, frames out, fps, per-stage latency, drops, reconnects.

``edgecv run`` keeps it in its summary (and so in the bundle's ``results/``) for the report's stream timeline.
Buckets start at one second; when a run outgrows ``max_buckets`` neighbouring buckets merge and the width
doubles, so a day-long run costs the same memory as a short one.
"""

from __future__ import annotations

import threading
from typing import Any

TIMELINE_STAGES = ("read", "preprocess", "infer", "post", "e2e")


class Timeline:
    def __init__(self, bucket_s: float = 1.0, max_buckets: int = 600) -> None:
        self.bucket_s = bucket_s
        self.max_buckets = max_buckets
        self._lock = threading.Lock()
        # per bucket: [frames, {stage: sum ms}, dropped (running total at the last frame), reconnects (same)]
        self._b: list[list[Any]] = []

    def _bucket(self, t: float) -> list[Any]:
        i = max(0, int(t // self.bucket_s))
        while i >= self.max_buckets:
            self._merge()
            i = max(0, int(t // self.bucket_s))
        while len(self._b) <= i:
            prev = self._b[-1] if self._b else None
            self._b.append([0, {}, prev[2] if prev else 0, prev[3] if prev else 0])
        return self._b[i]

    def _merge(self) -> None:
        merged = []
        for k in range(0, len(self._b), 2):
            a = self._b[k]
            b = self._b[k + 1] if k + 1 < len(self._b) else [0, {}, a[2], a[3]]
            sums = dict(a[1])
            for s, v in b[1].items():
                sums[s] = sums.get(s, 0.0) + v
            merged.append([a[0] + b[0], sums, b[2], b[3]])
        self._b = merged
        self.bucket_s *= 2

    def frame(self, t: float, lat_ms: dict[str, float], dropped: int, reconnects: int) -> None:
        """One processed frame at ``t`` seconds since the start, with its stage latencies and the run's counters."""
        with self._lock:
            b = self._bucket(t)
            b[0] += 1
            for s in TIMELINE_STAGES:
                if s in lat_ms:
                    b[1][s] = b[1].get(s, 0.0) + float(lat_ms[s])
            b[2], b[3] = int(dropped), int(reconnects)

    def to_dict(self) -> dict[str, Any]:
        with self._lock:
            rows = []
            for i, (n, sums, dropped, reconnects) in enumerate(self._b):
                rows.append(
                    {
                        "t": round(i * self.bucket_s, 3),
                        "frames": n,
                        "fps": round(n / self.bucket_s, 3),
                        "mean_ms": {s: round(v / n, 3) for s, v in sums.items()} if n else {},
                        "dropped": dropped,
                        "reconnects": reconnects,
                    }
                )
            return {"bucket_s": self.bucket_s, "stages": list(TIMELINE_STAGES), "rows": rows}
