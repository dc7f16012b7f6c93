"""Peak resident memory of a code window, as an increase over the RSS at its start.

Two sources, the larger wins: a background thread that samples the process RSS (psutil) every few
milliseconds, and the kernel's exact high-water mark (``getrusage(RUSAGE_SELF).ru_maxrss``) when the window
raised it. The sampler can miss a spike shorter than its period; the high-water mark cannot, but only counts
when the window set a new process-wide peak.
"""

from __future__ import annotations

import sys
import threading
import time
from types import TracebackType

from typing_extensions import Self

_MB = 1024.0 * 1024.0


def _rss_bytes() -> int | None:
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except Exception:  # noqa: BLE001 - psutil missing or unsupported platform: fall back to ru_maxrss only
        return None


def _maxrss_bytes() -> int | None:
    try:
        import resource
    except ImportError:  # Windows
        return None
    v = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(v if sys.platform == "darwin" else v * 1024)  # Linux reports KiB, macOS bytes


class PeakRSS:
    """Context manager: ``with PeakRSS() as m: ...; m.increase_mb``.

    Attributes (after exit):
        start_mb: RSS when the window opened.
        peak_mb: highest RSS seen in the window.
        increase_mb: ``peak_mb - start_mb`` (never negative), or None when RSS cannot be read here.
    """

    method = "peak RSS during load+warmup minus RSS before load (psutil sampling every 2 ms + ru_maxrss)"

    def __init__(self, interval_s: float = 0.002) -> None:
        self.interval_s = interval_s
        self.start_mb: float | None = None
        self.peak_mb: float | None = None
        self.increase_mb: float | None = None
        self._peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _poll(self) -> None:
        while not self._stop.is_set():
            v = _rss_bytes()
            if v is not None and v > self._peak:
                self._peak = v
            time.sleep(self.interval_s)

    def __enter__(self) -> Self:
        self._start = _rss_bytes()
        self._maxrss0 = _maxrss_bytes()
        self._peak = self._start or 0
        if self._start is not None:
            self._thread = threading.Thread(target=self._poll, name="edgecv-rss", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        end = _rss_bytes()
        if end is not None:
            self._peak = max(self._peak, end)
        maxrss1 = _maxrss_bytes()
        if self._maxrss0 is not None and maxrss1 is not None and maxrss1 > self._maxrss0:
            self._peak = max(self._peak, maxrss1)  # the window set a new process high-water mark: exact
        start = self._start
        if start is None and self._maxrss0 is not None and maxrss1 is not None:
            # no psutil: only the growth of the high-water mark is known
            self.increase_mb = max(0, maxrss1 - self._maxrss0) / _MB
            return
        if start is not None:
            self.start_mb = start / _MB
            self.peak_mb = self._peak / _MB
            self.increase_mb = max(0.0, (self._peak - start) / _MB)
