"""Latency / throughput / memory of any Runner, and side-by-side backend benchmarks of a bundle.

Runtime tier: numpy only at import; backends are opened lazily through an opener.
"""

from __future__ import annotations

from edgecv.bench.core import BenchReport, BenchRow, LatencyStats, bench_bundle, collect, measure
from edgecv.bench.memory import PeakRSS

__all__ = ["BenchReport", "BenchRow", "LatencyStats", "PeakRSS", "bench_bundle", "collect", "measure"]
