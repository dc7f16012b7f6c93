"""Latency and throughput under N concurrent clients (what Triton's perf_analyzer measures with
``--concurrency-range``): each client is its own runner (its own connection for ``remote``) in its own thread,
sending the next request as soon as the previous answer is back.

Throughput is items answered per wall-clock second over the timed window (not batch / mean latency, which only
holds for one client); latency is per call, as each client sees it, network included.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from edgecv.errors import BackendError, ConfigError

if TYPE_CHECKING:
    from edgecv.backends.base import Runner


@dataclass
class ConcurrencyResult:
    """One backend at one batch size with ``clients`` concurrent clients."""

    label: str
    batch: int
    clients: int
    requests: int
    wall_s: float
    throughput: float  # items / s over the timed window
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float

    def to_dict(self) -> dict[str, Any]:
        """One row of ``bench``'s ``concurrency`` list; its statistics nested in ``latency`` with the keys a bench
        row's ``latency`` has (flat in edgecv/bench/1)."""
        d = asdict(self)
        d["latency"] = {k: d.pop(k) for k in ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "throughput")}
        return d


def bench_concurrent(
    open_client: Callable[[], Runner],
    feed: dict[str, np.ndarray],
    clients: int,
    *,
    label: str = "",
    warmup: int = 5,
    min_time_s: float = 2.0,
    clock: Callable[[], float] = time.perf_counter,
) -> ConcurrencyResult:
    """Run ``clients`` runners from ``open_client()`` concurrently on ``feed`` for ``min_time_s`` seconds.

    Raises:
        ConfigError: ``clients`` < 1 or a negative time.
        BackendError: a client failed (the first failure, in one line).
    """
    if clients < 1:
        raise ConfigError(f"--concurrency: expected a positive integer, found {clients}")
    if not min_time_s > 0:
        raise ConfigError(f"--min-time: expected seconds > 0 for --concurrency, found {min_time_s}")
    batch = int(next(iter(feed.values())).shape[0]) if feed else 1
    runners = [open_client() for _ in range(clients)]
    samples: list[list[float]] = [[] for _ in range(clients)]
    errors: list[BaseException] = []
    start_gate = threading.Barrier(clients + 1)
    window: dict[str, float] = {}

    def work(i: int, r: Runner) -> None:
        try:
            for _ in range(warmup):
                r.infer(feed)
        except BaseException as exc:  # noqa: BLE001 - reported after the threads join
            errors.append(exc)
        start_gate.wait()
        if errors:
            return
        try:
            while True:
                t0 = clock()
                if t0 >= window["end"]:
                    break
                r.infer(feed)
                samples[i].append(clock() - t0)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    try:
        for r in runners:
            r.load()
        threads = [threading.Thread(target=work, args=(i, r), daemon=True) for i, r in enumerate(runners)]
        for t in threads:
            t.start()
        window["end"] = float("inf")
        # every client has warmed up when the barrier opens; the window starts then
        window["start"] = clock()
        window["end"] = window["start"] + min_time_s
        start_gate.wait()
        for t in threads:
            t.join()
        wall = max(clock() - window["start"], 1e-9)
    finally:
        for r in runners:
            r.close()
    if errors:
        exc = errors[0]
        raise BackendError(
            f"{label or 'client'} with {clients} concurrent clients: "
            f"{' '.join(str(exc).split())[:300] or type(exc).__name__}"
        ) from exc
    flat = np.asarray([s for per in samples for s in per], dtype=np.float64) * 1e3
    if flat.size == 0:
        raise BackendError(f"{label or 'client'}: no request finished within {min_time_s} s")
    p50, p90, p99 = np.percentile(flat, [50, 90, 99])
    return ConcurrencyResult(
        label=label,
        batch=batch,
        clients=clients,
        requests=int(flat.size),
        wall_s=wall,
        throughput=batch * flat.size / wall,
        p50_ms=float(p50),
        p90_ms=float(p90),
        p99_ms=float(p99),
        mean_ms=float(flat.mean()),
    )


def bench_bundle_concurrent(
    bundle: Any,
    specs: list[tuple[str, str]],
    batches: list[int],
    clients: list[int],
    opener: Callable[..., Runner],
    *,
    device: str | None = None,
    threads: int | None = None,
    warmup: int = 5,
    min_time_s: float = 2.0,
    seed: int = 0,
) -> list[ConcurrencyResult]:
    """:func:`bench_concurrent` for every ``(backend, precision)``, batch size and client count, on the same
    inputs ``edgecv bench`` times (the bundle's reference inputs, else seeded random ones)."""
    from edgecv.bench.core import _feed_for

    out: list[ConcurrencyResult] = []
    for backend, precision in specs:
        for bs in batches:
            feed = _feed_for(bundle, bs, seed)
            for n in clients:

                def open_client(backend: str = backend, precision: str = precision) -> Runner:
                    return opener(bundle, backend, precision, device=device, threads=threads)

                out.append(
                    bench_concurrent(
                        open_client, feed, n, label=f"{backend}:{precision}", warmup=warmup, min_time_s=min_time_s
                    )
                )
    return out
