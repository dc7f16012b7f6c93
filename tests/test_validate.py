"""validate: comparison numbers on crafted arrays, tolerance boundaries, validate_bundle and the CLI exit codes."""

from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from edgecv.backends.base import Runner
from edgecv.backends.runs import fit_batch, parse_backend_specs
from edgecv.errors import BackendError, BundleError, ConfigError, UnknownNameError
from edgecv.types import TensorSpec
from edgecv.validate.compare import TOLERANCES, compare_output, compare_outputs, judge, tolerance_for

# ---------------------------------------------------------------------------------------------- compare_outputs


def test_compare_classify_exact_numbers() -> None:
    ref = np.array([[0, 1, 2, 3, 4, 5], [5, 4, 3, 2, 1, 0]], dtype=np.float32)
    got = ref.copy()
    got[0, 5] += 0.5  # same argmax, bigger
    got[1, 1] += 1.5  # 5.5 > 5: row 1's top-1 flips from class 0 to class 1, top-5 set unchanged
    (c,) = compare_outputs({"logits": ref}, {"logits": got}, "classify")
    assert c.name == "logits" and c.shape == (2, 6) == c.got_shape
    assert c.scale == 5.0
    assert c.max_abs == 1.5
    assert c.max_rel == pytest.approx(0.3, abs=1e-12)
    assert c.mean_abs == pytest.approx(2.0 / 12, abs=1e-12)
    assert c.max_elem_rel == pytest.approx(1.5 / (4 + 1e-6), rel=1e-12)
    # ref·got = 110 + 0.5*5 + 1.5*4; |ref|^2 = 110; |got|^2 = 110 - 25 + 30.25 - 16 + 30.25
    assert c.cosine == pytest.approx(118.5 / math.sqrt(110 * 129.5), rel=1e-12)
    assert c.top1_agreement == 0.5
    assert c.top5_agreement == 1.0
    assert c.pixel_agreement is None


def test_compare_top5_set_disagreement_keeps_top1() -> None:
    ref = np.array([[6, 5, 4, 3, 2, 1, 0]], dtype=np.float32)
    got = ref.copy()
    got[0, 6] = 2.5  # class 6 enters the top 5, class 4 (value 2) leaves it; top-1 still class 0
    (c,) = compare_outputs({"y": ref}, {"y": got}, "classify")
    assert c.top1_agreement == 1.0
    assert c.top5_agreement == 0.0


def test_compare_segment_pixel_agreement() -> None:
    ref = np.zeros((1, 2, 2, 2), dtype=np.float32)
    ref[0, 1] = [[1.0, -1.0], [1.0, -1.0]]  # class map [[1, 0], [1, 0]]
    got = ref.copy()
    got[0, 1, 0, 1] = 0.5  # pixel (0, 1) flips to class 1
    (c,) = compare_outputs({"seg": ref}, {"seg": got}, "segment")
    assert c.pixel_agreement == 0.75
    assert c.top1_agreement is None and c.top5_agreement is None
    assert c.max_abs == 1.5 and c.scale == 1.0


def test_compare_shape_missing_and_nonfinite_fail() -> None:
    ref = {"a": np.ones((2, 3), np.float32), "b": np.ones((2, 3), np.float32), "c": np.ones(4, np.float32)}
    got_c = np.ones(4, np.float32)
    got_c[2] = np.nan
    got = {"a": np.ones((2, 4), np.float32), "c": got_c}
    a, b, c = (judge(x, TOLERANCES["int8"]) for x in compare_outputs(ref, got, "generic"))
    assert not a.passed and a.failures == ["shape: expected [2, 3], found [2, 4]"]
    assert not b.passed and "missing" in b.failures[0]
    assert not c.passed and c.nonfinite == 1 and c.max_abs == math.inf and c.cosine == 0.0
    assert any("NaN/Inf" in f for f in c.failures)
    # JSON has no inf: non-comparable numbers become null
    assert c.to_dict()["max_abs"] is None
    json.dumps([x.to_dict() for x in (a, b, c)])


def test_compare_all_zero_outputs_are_equal() -> None:
    c = compare_output("z", np.zeros((2, 3)), np.zeros((2, 3)))
    assert (c.max_abs, c.max_rel, c.cosine) == (0.0, 0.0, 1.0)
    assert judge(c, TOLERANCES["fp32"]).passed


# ---------------------------------------------------------------------------------------------- tolerances


@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16", "int8"])
def test_abs_bound_boundary(precision: str) -> None:
    tol = TOLERANCES[precision]
    ref = np.array([[10.0, 0.0, 0.0, 0.0]])
    allowed = tol.rtol * 10.0
    # vary a non-top element so only the abs bound is at stake; loosen cosine to isolate it
    tol = tolerance_for(precision, min_cosine=-1.0)
    inside = ref.copy()
    inside[0, 1] = allowed * (1 - 1e-9)
    outside = ref.copy()
    outside[0, 1] = allowed * (1 + 1e-6)
    # int8 judges decision outputs by agreement + cosine; the abs bound applies to outputs without a decision
    task = "generic" if precision == "int8" else "classify"
    assert judge(compare_output("y", ref, inside, task), tol).passed
    c = judge(compare_output("y", ref, outside, task), tol)
    assert not c.passed and len(c.failures) == 1 and c.failures[0].startswith("max abs")


def test_int8_decision_outputs_are_judged_by_agreement_not_max_abs() -> None:
    tol = TOLERANCES["int8"]
    ref = np.array([[10.0, 0.0, 1.0, 0.0], [0.0, 8.0, 0.0, 1.0]])
    got = ref + np.array([[-2.0, 0.0, 0.0, 0.0], [0.0, -1.0, 0.0, 0.0]])  # 0.2 x scale off, same top-1
    c = judge(compare_output("y", ref, got, "classify"), tol)
    assert c.max_rel == pytest.approx(0.2) and c.passed, c.failures
    flipped = ref.copy()
    flipped[1] = [0.0, 1.0, 0.0, 8.0]
    c = judge(compare_output("y", ref, flipped, "classify"), tol)
    assert not c.passed and any("top-1" in f for f in c.failures)


def test_best_class_candidate_scores_tolerate_class_ties_not_score_errors() -> None:
    """Candidate scores that keep only each candidate's best class (Ultralytics' heads): a near-tie that one engine
    rounds to another class moves the score to another column; that is no error, a changed score is."""
    tol = TOLERANCES["fp32"]
    boxes = np.array([[[10.0, 10.0, 50.0, 50.0]]], np.float32)
    dets = {"boxes": boxes, "scores": np.array([[0.9]], np.float32), "classes": np.array([[0]]), "num_dets": [1]}
    ref = np.zeros((1, 3, 4), np.float32)
    ref[0, 0, 0], ref[0, 1, 2], ref[0, 2, 1] = 0.9, 6.2e-5, 0.3
    tie = ref.copy()
    tie[0, 1, 2], tie[0, 1, 3] = 0.0, 6.2e-5  # the same score held by another class (elementwise: 6.2e-5 off)
    both = ref.copy()
    both[0, 1, 3] = 6.2e-5  # an exact tie kept in both classes
    moved = ref.copy()
    moved[0, 2, 1] = 0.25  # a real score change
    for got, passed in ((tie, True), (both, True), (moved, False)):
        c = judge(compare_outputs({**dets, "pre_nms_scores": ref}, {**dets, "pre_nms_scores": got}, "detect")[-1], tol)
        assert c.name == "pre_nms_scores" and c.shape == (1, 3, 4) and c.passed is passed, c.failures
    # multi-label scores (every class kept: zoo YOLO) stay elementwise, where the class column is the claim
    multi = ref + 0.01
    flip = multi.copy()
    flip[0, 1, 2], flip[0, 1, 3] = multi[0, 1, 3], multi[0, 1, 2]
    c = compare_outputs({**dets, "pre_nms_scores": multi}, {**dets, "pre_nms_scores": flip}, "detect")[-1]
    assert c.max_abs == pytest.approx(6.2e-5, rel=1e-3)


@pytest.mark.parametrize(("cos", "passed"), [(0.9801, True), (0.9799, False)])
def test_cosine_boundary_int8(cos: float, passed: bool) -> None:
    tol = tolerance_for("int8", atol=10.0)  # isolate the cosine bound
    ref = np.array([1.0, 0.0])
    got = np.array([cos, math.sqrt(1 - cos * cos)])
    c = judge(compare_output("y", ref, got), tol)
    assert c.cosine == pytest.approx(cos, abs=1e-12)
    assert c.passed is passed


@pytest.mark.parametrize(("flips", "passed"), [(1, True), (2, False)])
def test_top1_boundary_fp16(flips: int, passed: bool) -> None:
    tol = tolerance_for("fp16", atol=100.0, min_cosine=-1.0)
    ref = np.tile(np.array([[2.0, 1.0, 0.0]]), (100, 1))
    got = ref.copy()
    got[:flips, 1] = 3.0
    c = judge(compare_output("y", ref, got, "classify"), tol)
    assert c.top1_agreement == pytest.approx(1 - flips / 100)
    assert c.passed is passed


def test_tolerance_overrides_and_errors() -> None:
    t = tolerance_for("fp32", atol=0.5, rtol=0.0)
    assert t.allowed_abs(1000.0) == 0.5 and t.min_cosine == TOLERANCES["fp32"].min_cosine
    with pytest.raises(ConfigError, match="rtol"):
        tolerance_for("fp32", rtol=-1.0)
    with pytest.raises(ConfigError, match="min-cosine"):
        tolerance_for("fp32", min_cosine=1.5)
    with pytest.raises(ConfigError, match="fp8"):
        tolerance_for("fp8")
    # looser precisions really are looser
    order = [TOLERANCES[p] for p in ("fp32", "fp16", "bf16", "int8")]
    assert all(a.rtol < b.rtol and a.min_cosine > b.min_cosine for a, b in itertools.pairwise(order))


def test_parse_backend_specs() -> None:
    assert parse_backend_specs(["onnxruntime", "openvino:bf16", "onnxruntime"], "fp16") == [
        ("onnxruntime", "fp16"),
        ("openvino", "bf16"),
    ]
    with pytest.raises(UnknownNameError, match="expected one of"):
        parse_backend_specs(["onnxruntim"])
    with pytest.raises(ConfigError, match="fp8"):
        parse_backend_specs(["openvino:fp8"])
    with pytest.raises(ConfigError, match="precision"):
        parse_backend_specs(["openvino"], "fp64")


def test_fit_batch_slices_and_cycles() -> None:
    a = np.arange(3)[:, None] * np.ones((3, 2))
    assert fit_batch({"x": a}, 2)["x"][:, 0].tolist() == [0, 1]
    assert fit_batch({"x": a}, 5)["x"][:, 0].tolist() == [0, 1, 2, 0, 1]


# ---------------------------------------------------------------------------------------------- validate_bundle


class _ArrayRunner(Runner):
    """A runner that returns fixed outputs (a stand-in for the live torch model)."""

    name = "fake"

    def __init__(self, outputs: dict[str, np.ndarray], input_shape: tuple[int | None, ...]) -> None:
        super().__init__()
        self._outputs = outputs
        self._shape = input_shape

    def _load(self) -> None:
        self._input_spec = [TensorSpec("input", self._shape)]
        self._output_spec = [TensorSpec(k, tuple(v.shape)) for k, v in self._outputs.items()]

    def _infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = feed["input"].shape[0]
        return {k: v[:n] for k, v in self._outputs.items()}


class _Corrupt(Runner):
    """Wraps a real runner and corrupts its output: the least likely class becomes top-1."""

    def __init__(self, inner: Runner) -> None:
        super().__init__()
        self.inner = inner
        self.name = inner.name

    def _load(self) -> None:
        self.inner.load()
        self._input_spec, self._output_spec = self.inner.input_spec, self.inner.output_spec
        self.precision, self.device = self.inner.precision, self.inner.device

    def _close(self) -> None:
        self.inner.close()

    def _infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = dict(self.inner.infer(feed))
        y = out["output"].copy()
        rows = np.arange(len(y))
        y[rows, y.argmin(axis=1)] = y.max(axis=1) + 1.0  # the least likely class becomes top-1
        out["output"] = y
        return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    pytest.importorskip("torch")
    from helpers import make_tiny_bundle

    return make_tiny_bundle(tmp_path_factory.mktemp("val") / "tiny")


def _engine_opener():
    from edgecv.pipeline import open_runner

    return open_runner


@pytest.mark.torch
@pytest.mark.onnxruntime
@pytest.mark.openvino
def test_validate_ort_openvino_fp32_pass_npz(tiny) -> None:
    from edgecv.validate import validate_bundle

    rep = validate_bundle(tiny, [("onnxruntime", "fp32"), ("openvino", "fp32")], reference="npz")
    assert rep.reference == "npz" and rep.passed and rep.batch == 4 and rep.task == "classify"
    assert rep.input_shapes == {"input": [4, 3, 64, 64]}
    for r in rep.results:
        assert r.error is None and r.precision_ran == "fp32" and r.tolerance.precision == "fp32"
        (o,) = r.outputs
        assert o.name == "output" and o.shape == (4, 10)
        assert o.max_rel < 1e-4 and o.cosine > 0.99999 and o.top1_agreement == 1.0 and o.passed
    d = rep.to_dict()
    assert d["passed"] is True and [x["backend"] for x in d["rows"]] == ["onnxruntime", "openvino"]
    json.dumps(d)


@pytest.mark.torch
@pytest.mark.onnxruntime
def test_validate_batch_cycles_reference_and_detects_corruption(tiny) -> None:
    from edgecv.validate import validate_bundle

    real = _engine_opener()

    def opener(bundle, backend, **kw):
        r = real(bundle, "onnxruntime", **kw)
        return _Corrupt(r) if backend == "openvino" else r

    rep = validate_bundle(
        tiny, [("onnxruntime", "fp32"), ("openvino", "fp32")], reference="npz", batch=6, opener=opener
    )
    assert rep.batch == 6
    ok, bad = rep.results
    assert ok.passed and not bad.passed and not rep.passed
    (o,) = bad.outputs
    assert o.top1_agreement == 0.0
    assert any(f.startswith("max abs") for f in o.failures) and any(f.startswith("top-1") for f in o.failures)


@pytest.mark.torch
def test_validate_backend_error_is_a_failed_row(tiny) -> None:
    from edgecv.validate import validate_bundle

    def opener(bundle, backend, **kw):
        raise BackendError("engine exploded")

    rep = validate_bundle(tiny, [("openvino", "fp16")], reference="npz", opener=opener)
    (r,) = rep.results
    assert not r.passed and r.error == "BackendError: engine exploded" and r.outputs == []


@pytest.mark.torch
@pytest.mark.onnxruntime
def test_validate_reference_modes_with_fake_live_model(tiny) -> None:
    from edgecv.validate import validate_bundle

    saved = tiny.load_reference()
    real = _engine_opener()

    def make_opener(live_out):
        def opener(bundle, backend, **kw):
            if backend == "torch":
                return _ArrayRunner(live_out, (None, 3, 64, 64))
            return real(bundle, backend, **kw)

        return opener

    good = make_opener(saved["outputs"])
    rep = validate_bundle(tiny, [("onnxruntime", "fp32")], reference="auto", opener=good)
    assert rep.reference == "live" and "agrees with reference.npz" in rep.reference_note and rep.passed
    assert rep.reference_check is not None and rep.reference_check[0].max_abs == 0.0

    wrong = make_opener({"output": saved["outputs"]["output"] + 1.0})
    rep = validate_bundle(tiny, [("onnxruntime", "fp32")], reference="auto", opener=wrong)
    assert rep.reference == "npz" and "disagrees" in rep.reference_note and rep.passed
    rep = validate_bundle(tiny, [("onnxruntime", "fp32")], reference="live", opener=wrong)
    assert rep.reference == "live" and "WARNING" in rep.reference_note and not rep.passed

    def no_torch(bundle, backend, **kw):
        if backend == "torch":
            raise ImportError("No module named 'torch'")
        return real(bundle, backend, **kw)

    rep = validate_bundle(tiny, [("onnxruntime", "fp32")], reference="auto", opener=no_torch)
    assert rep.reference == "npz" and "live torch unavailable" in rep.reference_note and rep.passed
    with pytest.raises(BundleError, match="live torch reference unavailable"):
        validate_bundle(tiny, [("onnxruntime", "fp32")], reference="live", opener=no_torch)


def test_validate_bad_arguments(tmp_path: Path) -> None:
    from edgecv.bundle import Bundle, Manifest
    from edgecv.validate import validate_bundle

    b = Bundle.create(tmp_path / "b", Manifest(), {})
    with pytest.raises(ConfigError, match="reference"):
        validate_bundle(b, [("onnxruntime", "fp32")], reference="torch")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="at least one"):
        validate_bundle(b, [])
    with pytest.raises(ConfigError, match="fp8"):
        validate_bundle(b, [("onnxruntime", "fp8")])
    with pytest.raises(BundleError, match="reference.npz"):
        validate_bundle(b, [("onnxruntime", "fp32")], reference="npz")


# ---------------------------------------------------------------------------------------------- CLI

_CORRUPT_MODULE = """
import numpy as np
from edgecv.backends.onnxruntime import OnnxRuntimeRunner

class CorruptRunner(OnnxRuntimeRunner):
    name = "corrupt"

    def _infer_impl(self, feed):
        out = dict(super()._infer_impl(feed))
        y = out["output"].copy()
        rows = np.arange(len(y))
        y[rows, y.argmin(axis=1)] = y.max(axis=1) + 1.0  # the least likely class becomes top-1
        out["output"] = y
        return out
"""

_RUN_WITH_CORRUPT = """
import sys
from edgecv.backends import RUNNERS
RUNNERS.register("corrupt", "corrupt_backend:CorruptRunner", module="onnxruntime")
from edgecv.cli.app import main
sys.argv = ["edgecv", *sys.argv[1:]]
main()
"""


@pytest.mark.torch
@pytest.mark.onnxruntime
@pytest.mark.openvino
def test_cli_validate_pass_fail_exit_codes(tiny, cli, tmp_path: Path) -> None:
    ok = cli(
        "validate",
        str(tiny.root),
        "--backend",
        "onnxruntime",
        "--backend",
        "openvino:fp32",
        "--reference",
        "npz",
        "--json",
    )
    assert ok.returncode == 0, ok.stderr
    d = json.loads(ok.stdout)
    assert d["passed"] and [(r["backend"], r["precision"], r["precision_ran"]) for r in d["rows"]] == [
        ("onnxruntime", "fp32", "fp32"),
        ("openvino", "fp32", "fp32"),
    ]

    # a registered backend whose outputs are corrupted: FAIL row, exit 1
    (tmp_path / "corrupt_backend.py").write_text(_CORRUPT_MODULE)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            _RUN_WITH_CORRUPT,
            "validate",
            str(tiny.root),
            "-b",
            "onnxruntime",
            "-b",
            "corrupt",
            "--reference",
            "npz",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = {ln.split("│")[1].strip(): ln for ln in proc.stdout.splitlines() if ln.startswith("│")}
    assert "PASS" in lines["onnxruntime"] and "FAIL" in lines["corrupt"]
    assert "validation failed for corrupt:fp32" in proc.stderr

    # tolerance override from the command line: an impossible bound fails the real backend too
    strict = cli(
        "validate", str(tiny.root), "-b", "onnxruntime", "--reference", "npz", "--rtol", "0", "--atol", "0", "--json"
    )
    assert strict.returncode in (0, 1)
    res = json.loads(strict.stdout)["rows"][0]
    assert res["outputs"][0]["passed"] is (res["outputs"][0]["max_abs"] == 0.0)
    assert strict.returncode == (0 if res["passed"] else 1)


def test_cli_validate_bad_input_exit_2(cli, tmp_path: Path) -> None:
    missing = cli("validate", str(tmp_path / "nope"), "-b", "onnxruntime")
    assert missing.returncode == 2 and "expected a bundle folder" in missing.stderr
    from edgecv.bundle import Bundle, Manifest

    Bundle.create(tmp_path / "b", Manifest(), {})
    bad = cli("validate", str(tmp_path / "b"), "-b", "onnxruntime:fp8")
    assert bad.returncode == 2 and "fp8" in bad.stderr
    unknown = cli("validate", str(tmp_path / "b"), "-b", "tensorflow")
    assert unknown.returncode == 2 and "expected one of" in unknown.stderr


def test_module_imports_no_torch() -> None:
    code = textwrap.dedent("""
        import sys
        import edgecv.validate, edgecv.validate.core, edgecv.validate.compare, edgecv.backends.runs
        import edgecv.bench, edgecv.bench.core, edgecv.cli.validate, edgecv.cli.bench
        bad = sorted(m for m in ("torch", "onnxruntime", "openvino", "edgecv.pipeline", "edgecv.export")
                     if m in sys.modules)
        assert not bad, bad
    """)
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
