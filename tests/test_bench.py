"""bench: stats on known timings (injected clock), interleaving, error rows, CLI JSON, torch-less runs."""

from __future__ import annotations

import itertools
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from edgecv.backends.base import Runner
from edgecv.bench.core import LatencyStats, bench_bundle, collect, measure
from edgecv.bench.memory import PeakRSS
from edgecv.errors import BackendError, ConfigError
from edgecv.types import TensorSpec


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


class TimedRunner(Runner):
    """Each infer advances the fake clock by the next duration (cycling); records the call order."""

    def __init__(
        self,
        clock: FakeClock,
        durations: list[float],
        label: str = "fake",
        log: list[str] | None = None,
        batch: int | None = None,
    ) -> None:
        super().__init__()
        self.clock, self.durations, self.label, self.log = clock, durations, label, log
        self.calls = 0
        self.batch = batch
        self.closed = False

    def _load(self) -> None:
        self._input_spec = [TensorSpec("input", (self.batch, 3, 8, 8))]
        self._output_spec = [TensorSpec("output", (self.batch, 2))]
        self.precision = "fp32"
        self.load_time_s = 0.0

    def _close(self) -> None:
        self.closed = True

    def _infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.clock.t += self.durations[self.calls % len(self.durations)]
        self.calls += 1
        if self.log is not None:
            self.log.append(self.label)
        return {"output": np.zeros((feed["input"].shape[0], 2), np.float32)}


FEED = {"input": np.zeros((2, 3, 8, 8), np.float32)}


def test_latency_stats_exact() -> None:
    s = LatencyStats.from_samples([0.001, 0.002, 0.003, 0.004, 0.005], batch=2)
    assert s.iters == 5
    assert s.p50_ms == pytest.approx(3.0)
    assert s.p90_ms == pytest.approx(4.6)  # linear interpolation between 4 and 5
    assert s.p99_ms == pytest.approx(4.96)
    assert s.mean_ms == pytest.approx(3.0) and s.min_ms == pytest.approx(1.0) and s.max_ms == pytest.approx(5.0)
    assert s.std_ms == pytest.approx(math.sqrt(2.5))  # sample std (ddof=1)
    assert s.total_s == pytest.approx(0.015)
    assert s.throughput == pytest.approx(2 * 5 / 0.015)
    with pytest.raises(ConfigError):
        LatencyStats.from_samples([])


def test_measure_with_injected_clock() -> None:
    clock = FakeClock()
    with TimedRunner(clock, [0.001, 0.002, 0.003, 0.004]) as r:
        # the 2 warmup calls take 1 and 2 ms and are not timed
        s = measure(r, FEED, warmup=2, min_time_s=0.0, min_iters=4, max_iters=100, clock=clock)
        assert r.calls == 6
    assert s.iters == 4 and s.batch == 2
    assert s.p50_ms == pytest.approx(2.5) and s.mean_ms == pytest.approx(2.5)
    assert s.min_ms == pytest.approx(1.0) and s.max_ms == pytest.approx(4.0)
    assert s.throughput == pytest.approx(2 / 0.0025)


def test_collect_stops_on_time_and_on_max_iters() -> None:
    clock = FakeClock()
    with TimedRunner(clock, [0.003, 0.004, 0.001, 0.002]) as r:
        # cumulative 3, 7, 8, 10 ms: 9.5 ms is reached at the 4th call
        assert len(collect(r, FEED, warmup=0, min_time_s=0.0095, min_iters=1, clock=clock)) == 4
        assert len(collect(r, FEED, warmup=0, min_time_s=100.0, min_iters=1, max_iters=7, clock=clock)) == 7
        # min_iters wins over a reached time
        assert len(collect(r, FEED, warmup=0, min_time_s=0.0, min_iters=9, clock=clock)) == 9


def test_measure_rejects_bad_counts() -> None:
    clock = FakeClock()
    with TimedRunner(clock, [0.001]) as r:
        for kw in ({"warmup": -1}, {"min_iters": 5, "max_iters": 2}, {"min_time_s": -1.0}, {"max_iters": 0}):
            with pytest.raises(ConfigError):
                measure(r, FEED, clock=clock, **kw)  # type: ignore[arg-type]


@pytest.fixture()
def empty_bundle(tmp_path: Path):
    from edgecv.bundle import Bundle, Contract, Manifest

    return Bundle.create(tmp_path / "b", Manifest(contract=Contract(input_shape=[1, 3, 8, 8])), {})


def test_bench_bundle_interleaves_and_computes_speedup(empty_bundle) -> None:
    clock = FakeClock()
    log: list[str] = []
    made: dict[str, TimedRunner] = {}
    durations = {"torch": [0.004], "onnxruntime": [0.001], "openvino": [0.002]}

    def opener(bundle, backend, precision, device, threads):
        made[backend] = TimedRunner(clock, durations[backend], backend, log)
        return made[backend]

    backends = [("torch", "fp32"), ("onnxruntime", "fp32"), ("openvino", "fp32")]
    events: list[tuple[str, float]] = []
    rep = bench_bundle(
        empty_bundle,
        backends,
        [1, 2],
        warmup=1,
        min_time_s=0.0,
        min_iters=6,
        max_iters=6,
        rounds=3,
        opener=opener,
        clock=clock,
        progress=lambda d, f: events.append((d, f)),
    )
    assert len(rep.rows) == 6
    for r in rep.rows:
        assert r.error is None and r.stats is not None and r.stats.iters == 6
        assert r.precision_ran == "fp32" and r.peak_rss_mb is not None and r.peak_rss_mb >= 0
    assert rep.row("torch", "fp32", 1).stats.p50_ms == pytest.approx(4.0)  # type: ignore[union-attr]
    assert rep.row("onnxruntime", "fp32", 2).speedup_vs_torch == pytest.approx(4.0)
    assert rep.row("openvino", "fp32", 1).speedup_vs_torch == pytest.approx(2.0)
    assert rep.row("torch", "fp32", 2).speedup_vs_torch == pytest.approx(1.0)
    assert all(r.closed for r in made.values())
    # after load + warmup (1 call per batch each), each round times 2 calls per (backend, batch); rounds after
    # the first re-warm with 1 call. The backend order rotates every round.
    assert log[:6] == ["torch"] * 2 + ["onnxruntime"] * 2 + ["openvino"] * 2
    slots = [k for k, _ in itertools.groupby(log[6:])]
    t, o, v = "torch", "onnxruntime", "openvino"
    assert slots == [t, o, v, t, o, v] + [o, v, t, o, v, t] + [v, t, o, v, t, o]
    assert all(r.calls == 2 + 6 * 2 + 2 * 2 for r in made.values())
    assert events[-1] == ("done", 1.0) and all(0 <= f <= 1 for _, f in events)
    json.dumps(rep.to_dict())


def test_bench_bundle_without_torch_has_no_speedup_and_sequential_mode(empty_bundle) -> None:
    clock = FakeClock()
    log: list[str] = []

    def opener(bundle, backend, precision, device, threads):
        return TimedRunner(clock, [0.001 if backend == "onnxruntime" else 0.003], backend, log)

    rep = bench_bundle(
        empty_bundle,
        [("onnxruntime", "fp32"), ("openvino", "fp32")],
        [1],
        warmup=0,
        min_time_s=0.0,
        min_iters=5,
        max_iters=5,
        interleave=False,
        opener=opener,
        clock=clock,
    )
    assert [r.speedup_vs_torch for r in rep.rows] == [None, None]
    assert "speedup_baseline" not in rep.settings and rep.settings["rounds"] == 1
    # sequential: onnxruntime's warmup-free load call then its 5 timed calls, all before openvino starts
    assert log == ["onnxruntime"] * 6 + ["openvino"] * 6
    assert rep.rows[1].stats.p50_ms == pytest.approx(3.0)  # type: ignore[union-attr]


def test_bench_bundle_error_rows(empty_bundle) -> None:
    clock = FakeClock()

    def opener(bundle, backend, precision, device, threads):
        if backend == "openvino":
            raise BackendError("cannot compile")
        return TimedRunner(clock, [0.001], backend, batch=1)  # a static batch-1 model

    rep = bench_bundle(
        empty_bundle,
        [("onnxruntime", "fp32"), ("openvino", "bf16")],
        [1, 2],
        warmup=1,
        min_time_s=0.0,
        min_iters=3,
        max_iters=3,
        opener=opener,
        clock=clock,
    )
    ort1, ort2 = rep.row("onnxruntime", "fp32", 1), rep.row("onnxruntime", "fp32", 2)
    assert ort1 is not None and ort1.stats is not None and ort1.stats.iters == 3
    assert ort2 is not None and ort2.stats is None and "fixed batch of 1" in (ort2.error or "")
    for bs in (1, 2):
        ov = rep.row("openvino", "bf16", bs)
        assert ov is not None and ov.stats is None and ov.error == "BackendError: cannot compile"
    with pytest.raises(ConfigError):
        bench_bundle(empty_bundle, [("onnxruntime", "fp64")], [1], opener=opener)
    with pytest.raises(ConfigError):
        bench_bundle(empty_bundle, [("onnxruntime", "fp32")], [0], opener=opener)


def test_peak_rss_sees_an_allocation() -> None:
    with PeakRSS() as m:
        block = np.ones(64 * 1024 * 1024 // 8)  # 64 MiB, touched
        block[::512] = 2.0
        del block
    assert m.increase_mb is not None and m.increase_mb >= 50


# ---------------------------------------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    pytest.importorskip("torch")
    from helpers import make_tiny_bundle

    return make_tiny_bundle(tmp_path_factory.mktemp("bench") / "tiny")


@pytest.mark.torch
@pytest.mark.onnxruntime
@pytest.mark.openvino
def test_cli_bench_json_structure(tiny, cli) -> None:
    proc = cli(
        "bench",
        str(tiny.root),
        "-b",
        "onnxruntime",
        "-b",
        "openvino",
        "--batch",
        "1",
        "--batch",
        "2",
        "--iters",
        "6",
        "--warmup",
        "1",
        "--threads",
        "1",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    d = json.loads(proc.stdout)
    assert d["settings"]["batches"] == [1, 2] and d["settings"]["backends"] == ["onnxruntime:fp32", "openvino:fp32"]
    assert [(r["backend"], r["batch"]) for r in d["rows"]] == [
        ("onnxruntime", 1),
        ("onnxruntime", 2),
        ("openvino", 1),
        ("openvino", 2),
    ]
    for r in d["rows"]:
        lat = r["latency"]
        assert r["error"] is None and r["precision_ran"] == "fp32" and r["speedup_vs_torch"] is None
        assert lat["iters"] == 6 and lat["batch"] == r["batch"]
        assert 0 < lat["min_ms"] <= lat["p50_ms"] <= lat["p90_ms"] <= lat["p99_ms"] <= lat["max_ms"]
        assert lat["throughput"] == pytest.approx(r["batch"] * 1000.0 / lat["mean_ms"], rel=1e-9)
        assert r["load_time_s"] > 0 and r["peak_rss_mb"] is not None


@pytest.mark.torch
@pytest.mark.onnxruntime
def test_cli_bench_and_validate_without_torch(tiny, cli, tmp_path: Path) -> None:
    block = tmp_path / "block"
    block.mkdir()
    (block / "torch.py").write_text("raise ImportError('torch is blocked for this test')\n")
    env = {"PYTHONPATH": os.pathsep.join([str(block), os.environ.get("PYTHONPATH", "")])}
    proc = cli("bench", str(tiny.root), "--backend", "onnxruntime", "--iters", "3", "--warmup", "1", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    (row,) = json.loads(proc.stdout)["rows"]
    assert row["error"] is None and row["latency"]["iters"] == 3 and "torch_version" not in proc.stdout

    helpers = Path(__file__).with_name("helpers.py")  # named by the user, so edgecv may import it (and torch)
    val = cli(
        "validate",
        str(tiny.root),
        "--backend",
        "onnxruntime",
        "--json",
        "--model-source",
        f"{helpers}:tiny_cnn",
        env=env,
    )
    assert val.returncode == 0, val.stderr
    d = json.loads(val.stdout)
    assert d["reference"] == "npz" and "live torch unavailable" in d["reference_note"]
    assert "torch is blocked" in d["reference_note"] and d["passed"]

    # torch named explicitly while it is missing: bad input, one line naming the extra, exit 2
    bad = cli("bench", str(tiny.root), "--backend", "torch", "--iters", "1", env=env)
    assert bad.returncode == 2 and "torch" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
