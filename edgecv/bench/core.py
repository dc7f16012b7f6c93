"""Latency and throughput of any Runner, and side-by-side benchmarks of a bundle's backends.

Latency is synchronous: one ``infer`` at a time, timed around the call (what a camera loop sees). Backends
are measured in the same process and, by default, interleaved: the measuring time is split into rounds and the
order of backends rotates every round, so slow drifts of a shared machine (other jobs, thermal) spread over all
backends instead of hitting whichever ran last. Speedups are ratios of medians measured in that same run.
"""

from __future__ import annotations

import math
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgecv.backends.runs import (
    Opener,
    default_opener,
    error_line,
    fixed_batch,
    missing_framework,
    random_inputs,
    reference_inputs,
)
from edgecv.bench.memory import PeakRSS
from edgecv.errors import ConfigError, MissingDependencyError, UnknownNameError
from edgecv.types import PRECISIONS

if TYPE_CHECKING:
    from edgecv.backends.base import Runner
    from edgecv.bundle import Bundle

Clock = Callable[[], float]
#: progress(description, fraction_done)
Progress = Callable[[str, float], None]


@dataclass
class LatencyStats:
    """Latency percentiles of one runner on one feed, in milliseconds.

    ``std_ms`` is the sample standard deviation (ddof=1; 0 for one sample); percentiles interpolate linearly
    (numpy's default). ``throughput`` is items per second: ``batch`` / mean latency.
    """

    batch: int
    iters: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    max_ms: float
    total_s: float
    throughput: float

    @classmethod
    def from_samples(cls, samples_s: list[float] | np.ndarray, batch: int = 1) -> LatencyStats:
        """Stats of per-call latencies given in seconds."""
        s = np.asarray(samples_s, dtype=np.float64) * 1e3
        if s.size == 0:
            raise ConfigError("latency: expected at least one timed iteration, found none")
        p50, p90, p99 = np.percentile(s, [50, 90, 99])
        mean = float(s.mean())
        total = float(s.sum()) / 1e3
        return cls(
            batch=batch,
            iters=int(s.size),
            p50_ms=float(p50),
            p90_ms=float(p90),
            p99_ms=float(p99),
            mean_ms=mean,
            std_ms=float(s.std(ddof=1)) if s.size > 1 else 0.0,
            min_ms=float(s.min()),
            max_ms=float(s.max()),
            total_s=total,
            throughput=batch * s.size / total if total > 0 else math.inf,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def collect(
    runner: Runner,
    feed: dict[str, np.ndarray],
    *,
    warmup: int = 10,
    min_time_s: float = 1.0,
    min_iters: int = 20,
    max_iters: int = 10000,
    clock: Clock = time.perf_counter,
    on_iter: Callable[[int], None] | None = None,
) -> list[float]:
    """Per-call latencies in seconds: ``warmup`` untimed calls, then timed calls until both ``min_time_s`` and
    ``min_iters`` are reached, or ``max_iters``."""
    for _ in range(warmup):
        runner.infer(feed)
    samples: list[float] = []
    start = clock()
    while len(samples) < max_iters:
        t0 = clock()
        runner.infer(feed)
        t1 = clock()
        samples.append(t1 - t0)
        if on_iter is not None:
            on_iter(len(samples))
        if len(samples) >= min_iters and t1 - start >= min_time_s:
            break
    return samples


def _check_counts(warmup: int, min_time_s: float, min_iters: int, max_iters: int) -> None:
    if warmup < 0:
        raise ConfigError(f"--warmup: expected an integer >= 0, found {warmup}")
    if not min_time_s >= 0:
        raise ConfigError(f"--min-time: expected seconds >= 0, found {min_time_s}")
    if min_iters < 0 or max_iters < 1:
        raise ConfigError(f"iterations: expected min >= 0 and max >= 1, found min {min_iters}, max {max_iters}")
    if min_iters > max_iters:
        raise ConfigError(f"iterations: expected min_iters <= max_iters, found {min_iters} > {max_iters}")


def measure(
    runner: Runner,
    feed: dict[str, np.ndarray],
    *,
    warmup: int = 10,
    min_time_s: float = 1.0,
    min_iters: int = 20,
    max_iters: int = 10000,
    clock: Clock = time.perf_counter,
    batch: int | None = None,
) -> LatencyStats:
    """Time ``runner.infer(feed)`` and summarise it.

    Args:
        runner: a loaded runner.
        feed: input name → array; its leading dimension is the batch unless ``batch`` is given.
        warmup: untimed calls first (lazy allocations, JIT, caches).
        min_time_s / min_iters: keep timing until both are reached.
        max_iters: stop here even if ``min_time_s`` is not reached.
        clock: monotonic seconds; injectable for tests.
        batch: items per call for the throughput.

    Returns:
        :class:`LatencyStats`.
    """
    _check_counts(warmup, min_time_s, min_iters, max_iters)
    n = batch if batch is not None else int(next(iter(feed.values())).shape[0]) if feed else 1
    samples = collect(
        runner, feed, warmup=warmup, min_time_s=min_time_s, min_iters=min_iters, max_iters=max_iters, clock=clock
    )
    return LatencyStats.from_samples(samples, batch=n)


@dataclass
class BenchRow:
    """One backend at one batch size."""

    backend: str
    precision: str
    batch: int
    precision_ran: str | None = None
    device: str | None = None
    stats: LatencyStats | None = None
    load_time_s: float | None = None
    open_time_s: float | None = None  # wall time of opening (torch: rebuilding the eager model) + load
    peak_rss_mb: float | None = None
    speedup_vs_torch: float | None = None
    error: str | None = None
    # filled by edgecv.bench.roofline.annotate: achieved GOP/s and the share of this machine's measured peak
    gops_per_s: float | None = None
    peak_gops_per_s: float | None = None
    pct_peak: float | None = None
    # the latency distribution in 101 quantiles (0, 1, …, 100 %), for plots; the samples themselves are not kept
    quantiles_ms: list[float] | None = None
    # True when the peak of this row's engine:precision was raised to a measured row's rate (faster than the probe)
    peak_raised: bool = False

    @property
    def label(self) -> str:
        return f"{self.backend}:{self.precision}"

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k != "stats"}
        d["latency"] = self.stats.to_dict() if self.stats else None
        return d


@dataclass
class BenchReport:
    """All rows of :func:`bench_bundle`, with how they were measured."""

    bundle: str
    rows: list[BenchRow] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    host: dict[str, Any] = field(default_factory=dict)
    #: per-call seconds of each companion (e.g. a roofline probe) timed in the same rounds as the rows; not in
    #: to_dict (the roofline summary in settings says what they gave)
    companion_samples: dict[str, list[float]] = field(default_factory=dict)
    companion_errors: dict[str, str] = field(default_factory=dict)

    def row(self, backend: str, precision: str, batch: int) -> BenchRow | None:
        for r in self.rows:
            if (r.backend, r.precision, r.batch) == (backend, precision, batch):
                return r
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "bundle": self.bundle,
            "settings": self.settings,
            "host": self.host,
            "rows": [r.to_dict() for r in self.rows],
        }


def _split(total: int, parts: int) -> list[int]:
    """``total`` split into ``parts`` integers that differ by at most one and sum to ``total``."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


#: a companion: opened once, timed in the same interleaved rounds as the rows; returns a runner and its feed
Companion = Callable[[], "tuple[Runner, dict[str, np.ndarray]]"]


def schedule(
    backends: list[tuple[str, str]], batches: list[int], companions: list[str], rounds: int
) -> list[tuple[int, tuple[str, str, int] | str]]:
    """The interleaved measuring order: ``(round, slot)`` where a slot is ``(backend, precision, batch)`` or a
    companion's key.

    In every round, for each batch size, backends and companions take turns; the order rotates by one each round,
    so a slow drift of a shared machine spreads over all of them, and a companion (a roofline probe) is timed
    between the rows it is compared with. Companions have no batch: they are timed once per batch pass, their
    budget split like the rows'.
    """
    units: list[tuple[str, str] | str] = [*backends, *companions]
    out: list[tuple[int, tuple[str, str, int] | str]] = []
    for rnd in range(rounds):
        k = rnd % len(units) if units else 0
        order = units[k:] + units[:k]
        for bs in batches:
            for u in order:
                out.append((rnd, u if isinstance(u, str) else (u[0], u[1], bs)))
    return out


def _feed_for(bundle: Bundle, batch: int, seed: int) -> dict[str, np.ndarray]:
    # the saved reference inputs are real images for detection models (data-dependent NMS time); random otherwise
    ref = reference_inputs(bundle, batch)
    return ref if ref is not None else random_inputs(bundle.contract, batch, seed=seed)


def _host_info(threads: int | None) -> dict[str, Any]:
    from edgecv._lazy import version_of

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "threads": threads,
    }
    try:
        info["affinity_cpus"] = len(os.sched_getaffinity(0))
    except AttributeError:  # not on macOS/Windows
        pass
    for mod in ("numpy", "onnxruntime", "openvino", "torch", "tensorrt"):
        v = version_of(mod) if mod in ("numpy",) or _imported(mod) else None
        if v is not None:
            info[f"{mod}_version"] = v
    from edgecv.jetson import jetson_state

    jetson = jetson_state()  # power mode and clock lock decide what a Jetson's numbers mean
    if jetson is not None:
        info["jetson"] = jetson
    return info


def _preimport(backend: str) -> None:
    """Import a backend's framework and runner module; failures surface later, from the opener, per backend."""
    import importlib

    from edgecv.backends import RUNNERS

    mods = [RUNNERS.meta(backend).get("module", backend)] if backend in RUNNERS else []
    if backend == "torch":
        mods.append("edgecv.export.sources")  # the torch opener's model loader and whatever it pulls in
    mods.append(f"edgecv.backends.{backend}")
    for mod in mods:
        try:
            importlib.import_module(mod)
        except Exception:  # noqa: BLE001, S112 - reported by the opener with a proper message
            continue


def _imported(mod: str) -> bool:
    import sys

    return mod in sys.modules  # report versions of engines this run used, without importing new ones


def bench_bundle(
    bundle: Bundle | str | Path,
    backends: list[tuple[str, str]],
    batches: list[int],
    threads: int | None = None,
    device: str | None = None,
    warmup: int = 10,
    min_time_s: float = 1.0,
    min_iters: int = 20,
    max_iters: int = 10000,
    *,
    rounds: int = 3,
    interleave: bool = True,
    opener: Opener | None = None,
    progress: Progress | None = None,
    clock: Clock = time.perf_counter,
    seed: int = 0,
    companions: dict[str, Companion] | None = None,
) -> BenchReport:
    """Benchmark each ``(backend, precision)`` at each batch size, side by side in this process.

    Every runner is opened and loaded once (load time from ``runner.load_time_s``; peak RSS increase over
    load + warmup at every batch, see :class:`~edgecv.bench.memory.PeakRSS`), then measured. With
    ``interleave`` (default) all runners stay loaded and the time budget is split into ``rounds`` rounds in
    which the backend order rotates; without it each backend is measured and closed before the next loads.

    Args:
        bundle: a bundle or its folder.
        backends: ``(backend, precision)`` pairs; ``torch`` is the eager model rebuilt from the bundle's source.
        batches: batch sizes; a model with a static batch gets an error row for other sizes.
        threads: CPU threads per backend (None: the backend's default).
        device: backend device.
        warmup: untimed calls per runner and batch before timing (and a few more at each later round).
        min_time_s / min_iters / max_iters: totals per (backend, batch), split over the rounds.
        rounds: interleaving rounds.
        interleave: see above.
        opener: ``opener(bundle, backend, precision=, device=, threads=) -> Runner``; defaults to
            :func:`edgecv.pipeline.open_runner`.
        progress: called with a description and the fraction done.
        clock: monotonic seconds; injectable for tests.
        seed: seed of random inputs when the bundle has no reference.npz.
        companions: key → opener of another runner and its feed (the roofline probes) timed in the same rounds,
            between the rows (see :func:`schedule`), each with the rows' time budget; their per-call seconds go to
            ``report.companion_samples`` (a companion that fails goes to ``report.companion_errors``). Without
            ``interleave`` they are timed after the last backend.

    Returns:
        :class:`BenchReport`; speedup vs torch is filled when ``torch`` is one of the backends.

    Raises:
        ConfigError: bad counts, batches or precisions.
        UnknownNameError, MissingDependencyError: a backend that is not registered or not installed.
    """
    from edgecv.bundle import Bundle

    _check_counts(warmup, min_time_s, min_iters, max_iters)
    if not backends:
        raise ConfigError("--backend: expected at least one backend to benchmark, found none")
    if not batches or any(int(b) < 1 for b in batches):
        raise ConfigError(f"--batch: expected positive integers, found {batches}")
    if rounds < 1:
        raise ConfigError(f"rounds: expected >= 1, found {rounds}")
    for name, prec in backends:
        if prec not in PRECISIONS:
            raise ConfigError(f"--backend {name}:{prec}: expected precision one of {', '.join(PRECISIONS)}")
    batches = list(dict.fromkeys(int(b) for b in batches))
    b = bundle if isinstance(bundle, Bundle) else Bundle.open(bundle)
    opener = opener or default_opener()
    feeds = {bs: _feed_for(b, bs, seed) for bs in batches}
    rounds_eff = rounds if interleave else 1
    report = BenchReport(
        bundle=str(b.root),
        settings={
            "backends": [f"{n}:{p}" for n, p in backends],
            "batches": batches,
            "threads": threads,
            "device": device,
            "warmup": warmup,
            "min_time_s": min_time_s,
            "min_iters": min_iters,
            "max_iters": max_iters,
            "rounds": rounds_eff,
            "interleave": interleave,
            "mode": "synchronous latency, one call at a time",
            "input": "reference.npz inputs" if b.reference_path.exists() else f"random normal (seed {seed})",
            "peak_rss": PeakRSS.method + "; engine libraries are imported first and counted apart "
            "(engine_import_rss_mb)",
        },
    )
    for name, prec in backends:
        for bs in batches:
            report.rows.append(BenchRow(backend=name, precision=prec, batch=bs))

    companions = dict(companions or {})
    total_slots = (len(backends) + len(companions)) * (1 + rounds_eff * len(batches))
    done = 0

    def tick(desc: str) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(desc, min(1.0, done / total_slots))

    runners: dict[tuple[str, str], Runner] = {}
    # import each engine once, outside the per-backend memory windows: otherwise the first runner of an engine
    # pays for its shared libraries and later ones (e.g. openvino:bf16 after openvino:fp32) look free
    engine_rss: dict[str, float | None] = {}
    for name, _ in backends:
        if name not in engine_rss:
            with PeakRSS() as imp:
                _preimport(name)
            engine_rss[name] = imp.increase_mb
    report.settings["engine_import_rss_mb"] = engine_rss

    def open_and_warm(name: str, prec: str) -> None:
        rows = [r for r in report.rows if (r.backend, r.precision) == (name, prec)]
        if progress is not None:
            progress(f"loading {name}:{prec}", done / total_slots)
        try:
            with PeakRSS() as mem:
                t0 = time.perf_counter()
                runner = opener(b, name, precision=prec, device=device, threads=threads)
                runner.load()
                open_s = time.perf_counter() - t0
                fixed = fixed_batch(runner)
                for r in rows:
                    if fixed is not None and fixed != r.batch:
                        r.error = f"model has a fixed batch of {fixed}; re-export with a dynamic batch"
                        continue
                    try:
                        for _ in range(max(1, warmup)):
                            runner.infer(feeds[r.batch])
                    except (UnknownNameError, MissingDependencyError):
                        raise
                    except Exception as exc:  # noqa: BLE001 - this batch fails, the others may still run
                        r.error = error_line(exc)
        except (UnknownNameError, MissingDependencyError, ConfigError):
            raise
        except ImportError as exc:
            raise missing_framework(name, exc) from exc
        except Exception as exc:  # noqa: BLE001 - a backend that cannot load gets error rows, the rest run
            for r in rows:
                r.error = r.error or error_line(exc)
            tick(f"{name}:{prec} failed")
            return
        for r in rows:
            r.precision_ran, r.device = str(runner.precision), str(runner.device)
            r.load_time_s, r.peak_rss_mb = float(runner.load_time_s), mem.increase_mb
            r.open_time_s = open_s
        runners[(name, prec)] = runner
        tick(f"loaded {name}:{prec}")

    samples: dict[tuple[str, str, int], list[float]] = {}
    quotas_min = _split(min_iters, rounds_eff)
    quotas_max = _split(max_iters, rounds_eff)
    comp_runners: dict[str, tuple[Runner, dict[str, np.ndarray]]] = {}
    passes = rounds_eff * len(batches)  # a companion's budget is split over every batch pass of every round
    comp_min, comp_max = _split(min_iters, passes), _split(max_iters, passes)
    comp_pass: dict[str, int] = {}

    def open_companion(key: str) -> None:
        try:
            runner, feed = companions[key]()
            comp_runners[key] = (runner, feed)
            runner.load()
            for _ in range(max(1, warmup)):
                runner.infer(feed)
        except Exception as exc:  # noqa: BLE001 - a probe that cannot run leaves the rows without its peak
            report.companion_errors[key] = error_line(exc)
        tick(f"loaded {key}")

    def measure_companion(key: str, warm: bool) -> None:
        i = comp_pass.get(key, 0)
        comp_pass[key] = i + 1
        if key in report.companion_errors or key not in comp_runners or i >= passes or comp_max[i] == 0:
            tick(key)
            return
        runner, feed = comp_runners[key]
        try:
            report.companion_samples.setdefault(key, []).extend(
                collect(
                    runner,
                    feed,
                    warmup=min(warmup, 3) if warm else 0,
                    min_time_s=min_time_s / passes,
                    min_iters=comp_min[i],
                    max_iters=comp_max[i],
                    clock=clock,
                )
            )
        except Exception as exc:  # noqa: BLE001
            report.companion_errors[key] = error_line(exc)
        tick(key)

    def measure_slot(name: str, prec: str, bs: int, rnd: int) -> None:
        row = report.row(name, prec, bs)
        runner = runners.get((name, prec))
        if row is None or runner is None or row.error is not None or quotas_max[rnd] == 0:
            tick(f"{name}:{prec} b{bs}")
            return
        if progress is not None:
            progress(f"round {rnd + 1}/{rounds_eff} · {name}:{prec} · batch {bs}", done / total_slots)
        try:
            # the first round was warmed in open_and_warm; later rounds re-warm briefly because another
            # backend has just run (caches, thread pools going to sleep)
            samples.setdefault((name, prec, bs), []).extend(
                collect(
                    runner,
                    feeds[bs],
                    warmup=0 if rnd == 0 or not interleave else min(warmup, 3),
                    min_time_s=min_time_s / rounds_eff,
                    min_iters=quotas_min[rnd],
                    max_iters=quotas_max[rnd],
                    clock=clock,
                )
            )
        except Exception as exc:  # noqa: BLE001 - keep measuring the others
            row.error = error_line(exc)
        tick(f"{name}:{prec} b{bs}")

    try:
        if interleave:
            for name, prec in backends:
                open_and_warm(name, prec)
            for key in companions:  # after the rows, outside their memory windows
                open_companion(key)
            for rnd, slot in schedule(backends, batches, list(companions), rounds_eff):
                if isinstance(slot, str):
                    measure_companion(slot, warm=rnd > 0)
                else:
                    measure_slot(slot[0], slot[1], slot[2], rnd)
        else:
            for name, prec in backends:
                open_and_warm(name, prec)
                for bs in batches:
                    measure_slot(name, prec, bs, 0)
                r = runners.pop((name, prec), None)
                if r is not None:
                    r.close()
            for key in companions:
                open_companion(key)
                for _ in batches:
                    measure_companion(key, warm=False)
    finally:
        for r in [*runners.values(), *(c[0] for c in comp_runners.values())]:
            try:
                r.close()
            except Exception:  # noqa: BLE001, S110 - closing is best effort after a failure
                pass

    for row in report.rows:
        s = samples.get((row.backend, row.precision, row.batch))
        if row.error is None and s:
            row.stats = LatencyStats.from_samples(s, batch=row.batch)
            row.quantiles_ms = [round(float(q), 4) for q in np.percentile(np.asarray(s) * 1e3, np.arange(101))]
        elif row.error is None:
            row.error = "no timed iterations"
    torch_key = next(
        ((n, p) for n, p in backends if n == "torch" and p == "fp32"),
        next(((n, p) for n, p in backends if n == "torch"), None),
    )
    if torch_key is not None:
        for bs in batches:
            base = report.row(torch_key[0], torch_key[1], bs)
            if base is None or base.stats is None:
                continue
            for row in report.rows:
                if row.batch == bs and row.stats is not None:
                    row.speedup_vs_torch = base.stats.p50_ms / row.stats.p50_ms
        report.settings["speedup_baseline"] = f"{torch_key[0]}:{torch_key[1]} (ratio of medians, same batch)"
    report.host = _host_info(threads)
    if progress is not None:
        progress("done", 1.0)
    return report


__all__ = ["BenchReport", "BenchRow", "Companion", "LatencyStats", "bench_bundle", "collect", "measure", "schedule"]
