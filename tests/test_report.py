"""Results kept in the bundle, the roofline numbers of bench, and ``edgecv report`` (opened in headless Chromium)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgecv.bundle import Bundle


# ------------------------------------------------------------------------------------------ results
def test_record_result_is_hash_listed_and_read_back(bundle_dir: Path) -> None:
    from edgecv._io import sha256_path
    from edgecv.results import load_results, record_result, this_host

    b = Bundle.open(bundle_dir)
    path = record_result(b, "bench", {"rows": [], "x": 1.5}, argv=["/x/edgecv/__main__.py", "bench", "B"])
    assert path is not None and path.parent.name == "results"
    rel = f"results/{path.name}"
    again = Bundle.open(bundle_dir)  # verifies every hash, the result's included
    assert again.manifest.files[rel] == sha256_path(path)
    assert any(h.get("event") == "result" and h["path"] == rel for h in again.manifest.history)
    doc = json.loads(path.read_text())
    assert doc["kind"] == "bench" and doc["result"] == {"rows": [], "x": 1.5}
    assert doc["command"] == ["edgecv", "bench", "B"]
    assert doc["host"]["id"] == this_host()["id"] and doc["versions"]["edgecv"]
    assert not [p for p in bundle_dir.iterdir() if p.name.startswith(".")], "temporary files left behind"
    res = load_results(again)
    assert [r["path"] for r in res.mine] == [rel] and res.others == [] and res.skipped == []
    assert res.latest("bench")["result"]["x"] == 1.5 and res.latest("validate") is None
    assert record_result(again, "bench", {}, enabled=False) is None
    assert len(list((bundle_dir / "results").iterdir())) == 1


def test_results_from_another_host_are_kept_apart_and_corrupt_ones_skipped(bundle_dir: Path) -> None:
    from edgecv.report.build import open_for_report
    from edgecv.results import load_results, record_result

    b = Bundle.open(bundle_dir)
    mine = record_result(b, "run", {"frames_processed": 3})
    other = record_result(b, "bench", {"rows": []})
    bad = record_result(b, "validate", {"results": []})
    assert mine and other and bad
    # a result measured elsewhere: same bundle copied from another machine (its hash re-listed as it would be)
    doc = json.loads(other.read_text())
    doc["host"] = {**doc["host"], "id": "elsewhere0000", "node": "jetson"}
    other.write_text(json.dumps(doc))
    b2 = Bundle.open(bundle_dir, verify=False)
    from edgecv._io import sha256_path

    b2.manifest.files[f"results/{other.name}"] = sha256_path(other)
    b2.save()
    bad.write_text("{not json")  # damaged after it was recorded: the manifest hash no longer matches
    b3 = open_for_report(bundle_dir)  # the model files are still checked; results one by one
    res = load_results(b3)
    assert [r["kind"] for r in res.mine] == ["run"]
    assert [r["host"]["node"] for r in res.others] == ["jetson"]
    assert len(res.skipped) == 1 and res.skipped[0].startswith(f"results/{bad.name}: ")
    assert "\n" not in res.skipped[0]


def test_report_reads_results_recorded_under_every_schema(bundle_dir: Path, tmp_path: Path) -> None:
    """Results recorded by edgecv/validate/1 and bench/1 (rows in ``results``, flat concurrency latency) and before
    schema 1 (task-metric ``value``/``ran``) read with today's keys, and the report's summary uses them."""
    pytest.importorskip("matplotlib")
    from edgecv.report import build_report
    from edgecv.report.build import current_keys
    from edgecv.results import record_result

    lat = {"p50_ms": 2.0, "p90_ms": 2.5, "p99_ms": 3.0, "mean_ms": 2.2, "throughput": 450.0}
    bench_v1 = {
        "bundle": str(bundle_dir),
        "settings": {},
        "host": {},
        "rows": [{"backend": "onnxruntime", "precision": "fp32", "precision_ran": "fp32", "batch": 1, "latency": lat}],
        "concurrency": [{"label": "onnxruntime:fp32", "batch": 1, "clients": 2, "requests": 9, "wall_s": 1.0, **lat}],
    }
    validate_v1 = {
        "bundle": str(bundle_dir),
        "results": [{"backend": "onnxruntime", "precision": "fp32", "passed": True}],
        "task_metric": {
            "name": "top-1 %",
            "n": 4,
            "reference": "onnxruntime:fp32",
            # before schema 1: "value" and "ran"
            "rows": [{"backend": "onnxruntime", "precision": "fp32", "ran": "fp32", "value": 87.5, "delta": 0.0}],
        },
    }
    v = current_keys({"kind": "validate", "result": validate_v1})["result"]
    assert "results" not in v and v["rows"] == validate_v1["results"]
    assert v["task_metric"]["rows"][0]["metric"] == 87.5 and v["task_metric"]["rows"][0]["precision_ran"] == "fp32"
    (c,) = current_keys({"kind": "bench", "result": bench_v1})["result"]["concurrency"]
    assert c["latency"] == lat and not set(lat) & set(c) and c["clients"] == 2
    # a /2 document goes through unchanged
    now = {"kind": "validate", "result": {"rows": [{"backend": "openvino"}], "task_metric": None}}
    assert current_keys(now) == now

    b = Bundle.open(bundle_dir)
    record_result(b, "bench", bench_v1)
    record_result(b, "validate", validate_v1)
    info = build_report([bundle_dir], tmp_path / "r.html")
    (part,) = info.bundles
    assert "summary" in part.sections and "summary" not in part.missing
    summary = part.sections["summary"]
    assert "87.50" in summary and "450.0" in summary, summary  # the old task metric beside bench's latency


def test_validate_bench_no_record(cli, bundle_dir: Path) -> None:
    proc = cli("validate", str(bundle_dir), "-b", "onnxruntime", "--no-record")
    assert proc.returncode == 0, proc.stderr
    proc = cli(
        "bench",
        str(bundle_dir),
        "-b",
        "onnxruntime",
        "--iters",
        "3",
        "--warmup",
        "1",
        "--rounds",
        "1",
        "--no-peak",
        "--no-record",
    )
    assert proc.returncode == 0, proc.stderr
    assert not (bundle_dir / "results").exists()
    assert sorted(Bundle.open(bundle_dir).manifest.files) == ["model.onnx", "reference.npz"]


# ------------------------------------------------------------------------------------------ operation count
def test_count_ops_matches_hand_count() -> None:
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    from edgecv.bench.roofline import count_ops
    from edgecv.bundle import Contract

    w1 = numpy_helper.from_array(np.zeros((8, 3, 3, 3), np.float32), "w1")  # 3→8, 3x3, stride 2
    w2 = numpy_helper.from_array(np.zeros((8, 2, 3, 3), np.float32), "w2")  # grouped: 8→8, 4 groups
    w3 = numpy_helper.from_array(np.zeros((8 * 16 * 16, 10), np.float32), "w3")
    w4 = numpy_helper.from_array(np.zeros((10, 5), np.float32), "w4")
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Conv", ["a", "w2"], ["b"], pads=[1, 1, 1, 1], group=4),
        helper.make_node("Flatten", ["b"], ["f"]),
        helper.make_node("MatMul", ["f", "w3"], ["m"]),
        helper.make_node("Gemm", ["m", "w4"], ["y"]),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [w1, w2, w3, w4],
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    c = count_ops(model, Contract(input_name="x", input_shape=[1, 3, 32, 32]))
    conv1 = 8 * 16 * 16 * 3 * 3 * 3
    conv2 = 8 * 16 * 16 * 2 * 3 * 3
    mm, gemm = 2048 * 10, 10 * 5
    assert c.by_type == {"Conv": 2 * (conv1 + conv2), "MatMul": 2 * mm, "Gemm": 2 * gemm}
    assert c.ops == 2 * (conv1 + conv2 + mm + gemm) and c.nodes == 4 and c.unknown == []


def test_count_ops_of_a_bundle_is_what_torch_counts(pristine: Path) -> None:
    torch = pytest.importorskip("torch")
    from helpers import tiny_cnn
    from torch.utils.flop_counter import FlopCounterMode

    from edgecv.bench.roofline import bundle_ops

    b = Bundle.open(pristine)
    model = tiny_cnn(10, "classify").eval()
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model(torch.zeros(b.contract.input_shape))
    assert bundle_ops(b).ops == fc.get_total_flops()


# ------------------------------------------------------------------------------------------ peak
def _ov_caps() -> list[str]:
    import openvino as ov

    return [str(c) for c in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")]


@pytest.mark.openvino
def test_supported_precisions_are_what_openvino_reports() -> None:
    from edgecv.bench.roofline import supported_precisions

    caps = _ov_caps()
    want = [p for c, p in (("FP32", "fp32"), ("BF16", "bf16"), ("FP16", "fp16"), ("INT8", "int8")) if c in caps]
    assert sorted(supported_precisions("openvino", "CPU")) == sorted(want)
    assert supported_precisions("torch") == []


#: two small probe forms so the real probes in tests take a moment (the real FORMS are sized for a peak)
def _small_forms():
    from edgecv.bench.roofline import ProbeForm

    return (ProbeForm("conv3x3-c64-8", "conv", 64, 8, 3, 2), ProbeForm("matmul-128", "matmul", 128))


def test_probe_forms_are_dense_peak_forms_counted_like_models() -> None:
    pytest.importorskip("onnx")
    from edgecv.bench.roofline import FORMS, count_ops, probe_model

    assert len({f.name for f in FORMS}) == len(FORMS)
    for f in FORMS:
        assert f.channels % 64 == 0  # what the engines' blocked kernels want
        for prec in ("fp32", "int8"):
            m = probe_model(f, prec)
            convs = [n for n in m.graph.node if n.op_type in ("Conv", "MatMul")]
            assert all(a.name != "group" for n in convs for a in n.attribute)  # never grouped / depthwise
            want = 2 * f.channels**3 if f.op == "matmul" else 2 * f.layers * f.channels**2 * f.kernel**2 * f.size**2
            assert count_ops(m).ops == want
            quant = [n for n in m.graph.node if n.op_type == "QuantizeLinear"]
            assert len(quant) == (len(convs) + 1 if prec == "int8" else 0)  # int8 between every layer


def test_cache_key_names_everything_a_peak_depends_on(monkeypatch) -> None:
    from edgecv.bench import roofline

    monkeypatch.setattr(roofline, "_engine_version", lambda backend: "1.0")
    base = roofline.cache_key("openvino", "cpu", "int8", 2)
    assert base == roofline.cache_key("openvino", "CPU", "int8", 2)  # device names are case-insensitive
    others = {
        roofline.cache_key("onnxruntime", "CPU", "int8", 2),
        roofline.cache_key("openvino", "GPU", "int8", 2),
        roofline.cache_key("openvino", "CPU", "fp32", 2),
        roofline.cache_key("openvino", "CPU", "int8", 1),
        roofline.cache_key("openvino", "CPU", "int8", 2, _small_forms()),
    }
    monkeypatch.setattr(roofline, "_engine_version", lambda backend: "2.0")
    others.add(roofline.cache_key("openvino", "CPU", "int8", 2))
    assert base not in others and len(others) == 6


@pytest.mark.openvino
def test_peak_probe_runs_each_precision_the_device_lists_and_caches(tmp_path: Path, monkeypatch) -> None:
    from edgecv.bench import roofline
    from edgecv.errors import ConfigError

    monkeypatch.setenv("EDGECV_CACHE_DIR", str(tmp_path / "cache"))
    forms = _small_forms()
    supported = roofline.supported_precisions("openvino", "CPU")
    probed = [p for p in supported if p in ("fp32", "int8")]  # bf16/fp16 probes work the same way
    for prec in probed:
        p = roofline.measure_peak("openvino", prec, "CPU", threads=1, forms=forms, min_time_s=0.0, rounds=2)
        assert p.gops_per_s > 0 and p.precision == prec and p.source == "screened"
        assert set(p.forms) == {f.name for f in forms} and all(v > 0 for v in p.forms.values())
        assert p.gops_per_s == max(p.forms.values()) and p.form == max(p.forms, key=lambda n: p.forms[n])
        assert p.precision_ran == prec  # the engine reports it ran the probe at that precision
    files = list((tmp_path / "cache").glob("peak-*.json"))
    assert len(files) == 1
    cached = json.loads(files[0].read_text())
    assert sorted(cached) == sorted(roofline.cache_key("openvino", "CPU", p, 1, forms) for p in probed)

    def no_probe(*a: object, **k: object) -> None:
        raise AssertionError("the cached peak should have been used")

    monkeypatch.setattr(roofline, "_open_probe", no_probe)
    again = roofline.measure_peak("openvino", "fp32", "CPU", threads=1, forms=forms)
    assert again.source == "cache"
    assert again.gops_per_s == cached[roofline.cache_key("openvino", "CPU", "fp32", 1, forms)]["gops_per_s"]
    with pytest.raises(AssertionError, match="cached peak"):  # other threads: another key, measured again
        roofline.measure_peak("openvino", "fp32", "CPU", threads=2, forms=forms)
    missing = [p for p in ("bf16", "fp16") if p not in supported]
    for prec in missing:  # never assumed: a precision the device does not list is refused, not probed
        with pytest.raises(ConfigError, match="expected"):
            roofline.measure_peak("openvino", prec, "CPU")
    with pytest.raises(ConfigError, match="GEMM probe"):
        roofline.measure_peak("torch", "fp32")


def test_schedule_interleaves_probes_between_rows_and_rotates() -> None:
    from edgecv.bench.core import schedule

    backends = [("openvino", "int8"), ("openvino", "fp32")]
    out = schedule(backends, [1, 4], ["probe:a", "probe:b"], rounds=3)
    assert len(out) == 3 * 2 * 4
    r0 = [slot for rnd, slot in out if rnd == 0]
    assert r0 == [
        ("openvino", "int8", 1),
        ("openvino", "fp32", 1),
        "probe:a",
        "probe:b",
        ("openvino", "int8", 4),
        ("openvino", "fp32", 4),
        "probe:a",
        "probe:b",
    ]
    firsts = [next(slot for rnd, slot in out if rnd == r) for r in range(3)]
    assert firsts == [("openvino", "int8", 1), ("openvino", "fp32", 1), "probe:a"]  # order rotates each round
    for r in range(3):  # every round times every row and every probe (once per batch pass)
        slots = [slot for rnd, slot in out if rnd == r]
        assert slots.count("probe:a") == 2 and len(set(map(str, slots))) == 6
    assert schedule(backends, [1], [], 1) == [(0, ("openvino", "int8", 1)), (0, ("openvino", "fp32", 1))]


class _LogRunner:
    """A runner that appends its name to a shared log on every call."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log
        self.precision, self.device, self.load_time_s = "fp32", "CPU", 0.0
        self.closed = False

    def load(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def infer(self, feed: dict) -> dict:  # type: ignore[type-arg]
        self.log.append(self.name)
        return {"y": np.zeros((1, 2), np.float32)}

    @property
    def input_spec(self) -> list:  # type: ignore[type-arg]
        return []


def test_bench_times_probes_in_the_same_rounds_as_rows(pristine: Path) -> None:
    from edgecv.bench.core import bench_bundle

    log: list[str] = []
    rows = {}

    def opener(bundle, name, precision, device=None, threads=None):
        rows[name] = _LogRunner(name, log)
        return rows[name]

    probe = _LogRunner("probe", log)
    t = iter(range(10**6))
    rep = bench_bundle(
        pristine,
        [("a", "fp32"), ("b", "fp32")],
        [1],
        warmup=1,
        min_time_s=0.0,
        min_iters=6,
        max_iters=6,
        rounds=3,
        opener=opener,
        clock=lambda: float(next(t)),
        companions={"probe:x": lambda: (probe, {"x": np.zeros(1, np.float32)})},
    )
    timed = log[3:]  # after one warm-up call each
    assert log[:3] == ["a", "b", "probe"]
    runs = [k for i, k in enumerate(timed) if i == 0 or timed[i - 1] != k]  # consecutive blocks
    assert runs == ["a", "b", "probe", "b", "probe", "a", "probe", "a", "b"]  # rotated, probe between rows
    assert len(rep.companion_samples["probe:x"]) == 6 and all(r.stats and r.stats.iters == 6 for r in rep.rows)
    assert probe.closed and rows["a"].closed and not rep.companion_errors

    def broken() -> tuple:  # type: ignore[type-arg]
        raise RuntimeError("no such kernel")

    rep = bench_bundle(
        pristine,
        [("a", "fp32")],
        [1],
        warmup=1,
        min_time_s=0.0,
        min_iters=2,
        max_iters=2,
        rounds=2,
        opener=opener,
        companions={"probe:y": broken},
    )
    assert "no such kernel" in rep.companion_errors["probe:y"] and rep.rows[0].stats is not None


def test_annotate_fills_gops_and_percent_of_peak(pristine: Path) -> None:
    from edgecv.bench.core import BenchReport, BenchRow, LatencyStats
    from edgecv.bench.roofline import Peak, annotate, bundle_ops

    b = Bundle.open(pristine)
    rows = [
        BenchRow(
            "onnxruntime", "fp32", 1, precision_ran="fp32", stats=LatencyStats.from_samples([0.002, 0.002, 0.002])
        ),
        BenchRow(
            "onnxruntime", "fp32", 4, precision_ran="fp32", stats=LatencyStats.from_samples([0.004, 0.004], batch=4)
        ),
        BenchRow("torch", "fp32", 1, precision_ran="fp32", stats=LatencyStats.from_samples([0.01])),
        BenchRow("openvino", "fp32", 1, error="could not load"),
    ]
    rep = BenchReport(bundle=str(b.root), rows=rows)
    calls = []
    ops = bundle_ops(b).ops
    peak = 8 * ops / 0.004 / 1e9  # above both rows

    def fake(backend: str, precision: str, device: object = None, threads: object = None) -> Peak:
        calls.append((backend, precision))
        return Peak(backend, "CPU", precision, peak, "conv3x3-c64-56", None, precision, "now")

    info = annotate(rep, b, measure=fake)
    assert calls == [("onnxruntime", "fp32")]  # once per engine and precision, never for torch
    assert rows[0].gops_per_s == pytest.approx(ops / 0.002 / 1e9)
    assert rows[1].gops_per_s == pytest.approx(4 * ops / 0.004 / 1e9)
    assert rows[0].pct_peak == pytest.approx(100 * rows[0].gops_per_s / peak) and rows[1].pct_peak == 50.0
    assert not rows[0].peak_raised and info["raised"] == {}
    assert rows[2].gops_per_s is not None and rows[2].pct_peak is None
    assert "torch:fp32" in info["no_peak"] and rows[3].gops_per_s is None
    assert rep.settings["roofline"]["ops"]["ops"] == ops


def test_a_row_faster_than_the_probe_raises_the_peak_and_says_so(pristine: Path, tmp_path: Path) -> None:
    from edgecv.bench.core import BenchReport, BenchRow, LatencyStats
    from edgecv.bench.roofline import FORMS, annotate, bundle_ops, count_ops, probe_key, probe_model
    from edgecv.cli.bench import _roofline_caption

    b = Bundle.open(pristine)
    ops = bundle_ops(b).ops
    rows = [
        BenchRow("openvino", "int8", 1, precision_ran="int8", stats=LatencyStats.from_samples([0.001] * 3)),
        BenchRow("openvino", "int8", 2, precision_ran="int8", stats=LatencyStats.from_samples([0.004] * 3, batch=2)),
        BenchRow("openvino", "fp32", 1, precision_ran="fp32", stats=LatencyStats.from_samples([0.004] * 3)),
    ]
    rep = BenchReport(bundle=str(b.root), rows=rows, settings={"threads": 2})
    fast, slow = FORMS[0], FORMS[1]
    # side by side: the int8 probe's best form reaches half the batch-1 row's rate, the fp32 one twice the row's
    for prec, want in (("int8", ops / 0.001 / 1e9 / 2), ("fp32", 2 * ops / 0.004 / 1e9)):
        f_ops = count_ops(probe_model(fast, prec)).ops
        rep.companion_samples[probe_key("openvino", prec, fast.name)] = [f_ops / want / 1e9] * 5
        rep.companion_samples[probe_key("openvino", prec, slow.name)] = [2 * f_ops / want / 1e9] * 5

    def no_measure(*a: object, **k: object) -> None:
        raise AssertionError("the side-by-side probes should have been used")

    info = annotate(rep, b, measure=no_measure)
    int8, fp32 = info["peaks"]["openvino:int8"], info["peaks"]["openvino:fp32"]
    assert fp32["source"] == "side by side" and fp32["form"] == fast.name
    assert fp32["gops_per_s"] == pytest.approx(2 * ops / 0.004 / 1e9) and rows[2].pct_peak == pytest.approx(50)
    raised = info["raised"]["openvino:int8"]
    assert raised["by"] == "openvino:int8 batch 1" and raised["probe_form"] == fast.name
    assert raised["probe_gops_per_s"] == pytest.approx(ops / 0.001 / 1e9 / 2)
    assert int8["gops_per_s"] == pytest.approx(ops / 0.001 / 1e9) == rows[0].peak_gops_per_s
    assert rows[0].pct_peak == pytest.approx(100) and rows[0].peak_raised  # never above 100 %
    assert rows[1].pct_peak == pytest.approx(50) and rows[1].peak_raised and not rows[2].peak_raised
    assert all(r.pct_peak is not None and r.pct_peak <= 100 + 1e-9 for r in rows)
    caption = _roofline_caption(info)
    assert "† peak openvino:int8 raised to" in caption and "openvino:int8 batch 1" in caption
    assert "peak openvino:fp32" in caption and "side by side" in caption
    from edgecv.bench.csvreport import write_bench_csv

    write_bench_csv(rep, tmp_path / "b.csv", ["edgecv", "bench"])
    text = (tmp_path / "b.csv").read_text()
    assert "raised to the rate openvino:int8 batch 1 reached" in text and f"probe {fast.name} (side by side)" in text


@pytest.mark.onnxruntime
def test_bench_prints_gops_and_peak_and_writes_csv(cli, bundle_dir: Path, tmp_path: Path) -> None:
    from edgecv.bench.roofline import FORMS, Peak, cache_key
    from edgecv.results import this_host

    csv_path = tmp_path / "bench.csv"
    env = {"EDGECV_CACHE_DIR": str(tmp_path / "cache")}
    # a screening on record for this host (the real one takes seconds): its two best forms are the small ones,
    # which bench then times side by side with the rows
    small = {"conv1x1-c512-14": 30.0, "conv3x3-c64-56": 20.0}
    screened = Peak(
        "onnxruntime",
        "CPU",
        "fp32",
        1e6,
        "conv1x1-c512-14",
        None,
        "fp32",
        "then",
        forms={**small, **{f.name: 1.0 for f in FORMS if f.name not in small}},
    )
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / f"peak-{this_host()['id']}.json").write_text(
        json.dumps({cache_key("onnxruntime", None, "fp32", None): screened.to_dict()})
    )
    proc = cli(
        "bench",
        str(bundle_dir),
        "-b",
        "onnxruntime",
        "--iters",
        "5",
        "--warmup",
        "1",
        "--rounds",
        "1",
        "--batch",
        "1",
        "--batch",
        "2",
        "--csv",
        str(csv_path),
        "--json",
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    d = json.loads(proc.stdout)
    roof = d["settings"]["roofline"]
    assert set(roof["peaks"]) == {"onnxruntime:fp32"}
    p = roof["peaks"]["onnxruntime:fp32"]
    assert p["source"] == "side by side" and set(p["forms"]) == set(small) and p["gops_per_s"] > 0
    for r in d["rows"]:
        lat = r["latency"]
        assert r["gops_per_s"] == pytest.approx(roof["ops"]["ops"] * r["batch"] / (lat["p50_ms"] / 1e3) / 1e9)
        assert r["pct_peak"] == pytest.approx(100 * r["gops_per_s"] / p["gops_per_s"]) and r["pct_peak"] <= 100
        assert len(r["quantiles_ms"]) == 101 and r["quantiles_ms"][50] == pytest.approx(
            lat["p50_ms"], rel=1e-3, abs=1e-4
        )
    text = csv_path.read_text()
    sections = [s.splitlines()[0] for s in text.strip().split("\n\n")]
    assert sections == ["Command line parameters", "Configuration setup", "Execution results"]
    results = text.strip().split("\n\n")[2].splitlines()
    assert results[1].startswith("backend;precision;") and len(results) == 2 + 2
    assert "peak onnxruntime:fp32 (GOP/s)" in text
    # --cached-peak: the screening on record is the peak, nothing is probed; the table shows the same columns
    proc = cli(
        "bench",
        str(bundle_dir),
        "-b",
        "onnxruntime",
        "--iters",
        "3",
        "--warmup",
        "1",
        "--rounds",
        "1",
        "--cached-peak",
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    words = " ".join(proc.stdout.split())  # the caption wraps wherever its numbers put the line end
    assert "GOP/s" in words and "% peak" in words and "peak onnxruntime:fp32" in words
    assert "(probe conv1x1-c512-14, cache)" in words and "side by side" not in words
    kinds = sorted(p.name.split("-")[0] for p in (bundle_dir / "results").iterdir())
    assert kinds == ["bench", "bench"]
    Bundle.open(bundle_dir)  # still verifies


# ------------------------------------------------------------------------------------------ details
class _FakeRunner:
    def __init__(self, fn) -> None:
        self.fn = fn

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.fn(feed)


def test_confusion_matrix_and_class_iou() -> None:
    from edgecv.bundle import Contract
    from edgecv.validate.details import class_iou, confusion_matrix
    from edgecv.validate.metrics import ValSet

    c = Contract(task="classify", class_names=["a", "b", "c"], input_shape=[1, 3, 4, 4])
    items = [(Path(str(i)), (k, lab)) for i, (k, lab) in enumerate([(0, 0), (1, 1), (2, 1), (2, 2)])]
    vs = ValSet(c, items, lambda _p, t: ({"input": np.full((1, 3, 4, 4), t[0], np.float32)}, t[1]))
    # the fake model predicts the class stored in the input
    m = confusion_matrix(_FakeRunner(lambda f: {"output": np.eye(3)[[int(f["input"][0, 0, 0, 0])]]}), vs)
    assert m["labels"] == ["a", "b", "c"] and m["matrix"] == [[1, 0, 0], [0, 1, 1], [0, 0, 1]]

    cs = Contract(task="segment", class_names=["bg", "fg"], input_shape=[1, 3, 2, 2])
    mask = np.array([[0, 1], [1, 1]], np.uint8)
    pred = np.array([[0, 1], [0, 1]])
    vs2 = ValSet(cs, [(Path("0"), mask)], lambda _p, t: ({"input": np.zeros((1, 3, 2, 2), np.float32)}, t))
    iou = class_iou(_FakeRunner(lambda f: {"output": np.eye(2)[pred].transpose(2, 0, 1)[None]}), vs2)
    assert iou["iou"] == pytest.approx([50.0, 100 * 2 / 3])


def test_pr_curves_perfect_and_half() -> None:
    from edgecv.bundle import Contract
    from edgecv.tasks.preprocess import Transform
    from edgecv.validate.details import pr_curves
    from edgecv.validate.metrics import ValSet

    c = Contract(
        task="detect",
        class_names=["x"],
        input_shape=[1, 3, 32, 32],
        resize="letterbox",
        output_names=["boxes", "scores", "classes", "num_dets"],
        decode={"nms": "graph"},
    )
    gt = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32)
    tf = Transform(1.0, 1.0, 0.0, 0.0, (32, 32))
    vs = ValSet(
        c,
        [(Path("0"), None)],
        lambda _p, _t: ({"input": np.zeros((1, 3, 32, 32), np.float32)}, (tf, gt, np.array([0, 0]), (32, 32))),
    )

    def model(boxes: np.ndarray, scores: list[float]):
        k = len(boxes)
        return _FakeRunner(
            lambda f: {
                "boxes": boxes[None],
                "scores": np.array([scores], np.float32),
                "classes": np.zeros((1, k), np.int64),
                "num_dets": np.array([k]),
            }
        )

    perfect = pr_curves(model(gt, [0.9, 0.8]), vs)["classes"]["x"]
    assert perfect["ap"] == pytest.approx(100.0) and perfect["recall"][-1] == 1.0 and perfect["gt"] == 2
    # one true box found at the highest score, one false box: AP = 0.5 (recall stops at 0.5 with precision 1)
    half = pr_curves(model(np.array([gt[0], [0, 20, 5, 25]], np.float32), [0.9, 0.8]), vs)["classes"]["x"]
    assert half["ap"] == pytest.approx(50.0) and half["precision"] == [1.0, 0.5] and half["recall"] == [0.5, 0.5]


def test_mask_round_trip_and_pareto() -> None:
    from edgecv.report.figures import pareto_front
    from edgecv.validate.details import decode_mask, encode_mask

    m = (np.arange(64 * 48) % 7).reshape(64, 48).astype(np.uint8)
    assert np.array_equal(decode_mask(json.loads(json.dumps(encode_mask(m)))), m)
    pts = [(10.0, 90.0), (5.0, 80.0), (12.0, 85.0), (3.0, 70.0), (5.0, 79.0), (20.0, 91.0)]
    assert pareto_front(pts) == [3, 1, 0, 5]  # fastest first; (12, 85) and (5, 79) are beaten


def test_timeline_is_bounded() -> None:
    from edgecv.stream.timeline import Timeline

    tl = Timeline(bucket_s=1.0, max_buckets=8)
    for i in range(40):  # 20 s at 2 frames/s
        tl.frame(i * 0.5, {"infer": 2.0, "e2e": 5.0}, dropped=i // 10, reconnects=1 if i >= 30 else 0)
    d = tl.to_dict()
    assert d["bucket_s"] == 4.0 and len(d["rows"]) == 5  # doubled twice to stay within 8 buckets
    assert sum(r["frames"] for r in d["rows"]) == 40
    assert all(r["fps"] == 2.0 and r["mean_ms"] == {"infer": 2.0, "e2e": 5.0} for r in d["rows"])
    assert d["rows"][-1]["dropped"] == 3 and d["rows"][-1]["reconnects"] == 1 and d["rows"][0]["reconnects"] == 0


# ------------------------------------------------------------------------------------------ report
def test_report_of_a_bundle_without_results_names_the_commands(cli, bundle_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "r.html"
    proc = cli("report", str(bundle_dir), "-o", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    b = info["bundles"][0]
    assert b["sections"] == ["provenance"] and info["images"] == 0
    missing = b["missing"]
    assert set(missing) == {"summary", "speed-accuracy", "latency", "roofline", "int8", "task", "gallery", "stream"}
    assert "edgecv bench" in missing["summary"] and "edgecv run" in missing["stream"]
    assert "--val" in missing["task"] and "--layers" in missing["int8"]
    page = out.read_text()
    for line in missing.values():
        assert line.split("<code>")[1].split("</code>")[0] in page
    assert "<script" not in page and "http://" not in page and "https://" not in page
    bad = cli("report", str(tmp_path / "nothing"), "-o", str(out))
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "expected a bundle folder" in bad.stderr


def _imagefolder(root: Path, names: list[str], size: int, n: int = 2) -> Path:
    import cv2

    rng = np.random.default_rng(0)
    for k, name in enumerate(names):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            cv2.imwrite(str(root / name / f"{i}.png"), rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
    return root


def _segfolder(root: Path, size: int, n: int = 3) -> Path:
    import cv2

    rng = np.random.default_rng(1)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir(parents=True)
    for i in range(n):
        cv2.imwrite(str(root / "images" / f"{i}.png"), rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
        cv2.imwrite(str(root / "masks" / f"{i}.png"), rng.integers(0, 3, (size, size), dtype=np.uint8))
    return root


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny classifier and a tiny segmenter with validate (+ --val, --layers), bench and run results recorded."""
    pytest.importorskip("torch")
    pytest.importorskip("openvino")
    pytest.importorskip("cv2")
    pytest.importorskip("matplotlib")
    from conftest import run_cli
    from helpers import make_tiny_bundle

    base = tmp_path_factory.mktemp("recorded")
    env = {"EDGECV_CACHE_DIR": str(base / "cache")}
    cls = base / "cls"
    make_tiny_bundle(cls, size=32)
    val = _imagefolder(base / "val", [f"c{i}" for i in range(10)], 32)
    run_cli("compile", str(cls), "-b", "onnxruntime", "-p", "int8", "--calib", str(val / "c0"), check=True)
    # the bundle names tests/helpers.py as its source: the live torch reference needs it named here (issue 12)
    source = ("--model-source", f"{Path(__file__).with_name('helpers.py')}:tiny_cnn")
    proc = run_cli(
        "validate",
        str(cls),
        "-b",
        "onnxruntime",
        "-b",
        "openvino",
        "-b",
        "onnxruntime:int8",
        "--val",
        str(val),
        "--layers",
        *source,
        env=env,
    )
    # a tiny random model's INT8 may miss the numeric tolerance (exit 1); its result is kept all the same
    assert proc.returncode in (0, 1), proc.stderr
    assert len(list((cls / "results").glob("validate-*.json"))) == 1
    run_cli(
        "bench",
        str(cls),
        "-b",
        "torch",
        "-b",
        "onnxruntime",
        "-b",
        "openvino",
        "-b",
        "onnxruntime:int8",
        "--iters",
        "8",
        "--warmup",
        "1",
        "--rounds",
        "1",
        "--batch",
        "1",
        "--batch",
        "2",
        *source,
        check=True,
        env=env,
    )
    frames = base / "frames"
    _imagefolder(frames, ["x"], 48, n=6)
    run_cli("run", str(cls), "--source", str(frames / "x"), "-b", "openvino", "--quiet", check=True)
    seg = base / "seg"
    make_tiny_bundle(seg, task="segment", size=32, num_classes=3)
    run_cli(
        "validate",
        str(seg),
        "-b",
        "onnxruntime",
        "-b",
        "openvino:fp16" if "FP16" in _ov_caps() else "openvino",
        "--val",
        str(_segfolder(base / "segval", 32)),
        check=True,
        env=env,
    )
    return {"cls": cls, "seg": seg}


# both tests below share the module's recorded bundles: one xdist worker builds them once (make test: --dist loadgroup)
@pytest.mark.xdist_group("report")
def test_report_draws_every_section_from_recorded_results(cli, recorded: dict[str, Path], tmp_path: Path) -> None:
    cls = tmp_path / "cls"
    shutil.copytree(recorded["cls"], cls)
    out = tmp_path / "report.html"
    proc = cli("report", str(cls), str(recorded["seg"]), "-o", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    c, s = info["bundles"]
    assert c["missing"] == {} and c["skipped"] == [] and c["other_hosts"] == 0
    assert set(c["sections"]) == {
        "summary",
        "speed-accuracy",
        "latency",
        "roofline",
        "int8",
        "task",
        "gallery",
        "stream",
        "provenance",
    }
    # the segmenter has validate only: its gallery and per-class IoU, and one line per section still missing
    assert {"task", "gallery", "provenance"} <= set(s["sections"]) and "summary" in s["missing"]
    page = out.read_text()
    assert page.count("data:image/png;base64,") == info["images"] >= 10
    assert "Pareto frontier" in page and "% peak" in page and "class differs from PyTorch" in page
    assert "<script" not in page and 'src="http' not in page

    # a corrupt result is named in one line and skipped; a foreign one is kept apart
    results = sorted((cls / "results").glob("run-*.json"))
    results[0].write_text("garbage")
    proc = cli("report", str(cls), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert f"results/{results[0].name}" in proc.stderr and proc.stderr.count("\n") == 1
    assert "No recorded stream" in out.read_text()


@pytest.mark.xdist_group("report")
@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed (make system-deps)")
def test_report_in_headless_chromium(recorded: dict[str, Path], tmp_path: Path, root: Path) -> None:
    pytest.importorskip("websocket")
    from browser import Page

    from edgecv.report import build_report

    out = tmp_path / "report.html"
    info = build_report([recorded["cls"], recorded["seg"]], out)
    with Page(width=1400, height=1000) as page:
        page.open(out)
        imgs = page.images()
        title = page.evaluate("document.title")
        shot = page.screenshot(tmp_path / "report.png", max_height=3000)
        errors = list(page.errors)
    assert len(imgs) == info.images >= 10
    assert all(i["complete"] and i["w"] > 0 and i["h"] > 0 for i in imgs), [i for i in imgs if not i["w"]]
    assert errors == []
    assert title.startswith("edgecv report")
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    keep = root / "out" / "test-report.png"  # left for a look; out/ is ignored by git
    keep.parent.mkdir(exist_ok=True)
    shutil.copyfile(shot, keep)


def test_replay_runs_the_validation_set_once_for_metric_and_details() -> None:
    from edgecv.bundle import Contract
    from edgecv.validate.details import Replay, confusion_matrix
    from edgecv.validate.metrics import ValSet, top1

    c = Contract(task="classify", class_names=["a", "b"], input_shape=[1, 3, 2, 2])
    items = [(Path(str(i)), i % 2) for i in range(6)]
    vs = ValSet(c, items, lambda p, t: ({"input": np.full((1, 3, 2, 2), float(p.name), np.float32)}, t))
    vs = vs.materialize()
    calls = []

    def infer(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        calls.append(1)
        return {"output": np.eye(2)[[int(feed["input"][0, 0, 0, 0]) % 2]]}

    run = Replay(_FakeRunner(infer))
    assert top1(run, vs) == 100.0  # type: ignore[arg-type]
    assert confusion_matrix(run, vs)["matrix"] == [[3, 0], [0, 3]]
    assert len(calls) == 6
