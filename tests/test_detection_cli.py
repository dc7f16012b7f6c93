"""Detectors through the CLI: export with graph NMS, validate by box matching and mAP, bench stage split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgecv.validate.compare import compare_outputs, judge, tolerance_for

pytestmark = [pytest.mark.torch, pytest.mark.onnxruntime, pytest.mark.openvino]


def _dets(boxes: list[list[float]], scores: list[float], classes: list[int], k: int = 5) -> dict[str, np.ndarray]:
    b = np.zeros((1, k, 4), np.float32)
    s = np.zeros((1, k), np.float32)
    c = np.zeros((1, k), np.int64)
    n = len(boxes)
    b[0, :n], s[0, :n], c[0, :n] = boxes, scores, classes
    return {"boxes": b, "scores": s, "classes": c, "num_dets": np.array([n], np.int64)}


def test_detections_compare_as_boxes_not_elementwise() -> None:
    ref = _dets([[0, 0, 10, 10], [20, 20, 40, 40], [5, 5, 6, 6]], [0.9, 0.8, 0.01], [1, 2, 3])
    # same boxes, other order, tiny score noise, and the low-score box gone: elementwise this differs a lot
    got = _dets([[20, 20, 40, 40.01], [0, 0, 10, 10]], [0.80001, 0.90002], [2, 1])
    [cmp] = compare_outputs(ref, got, "detect")
    judge(cmp, tolerance_for("fp32"))
    assert cmp.name == "detections" and cmp.passed, cmp.failures
    assert cmp.box_recall == 1.0 and cmp.boxes_ref == 2 and cmp.box_extra == 0
    assert cmp.max_abs == pytest.approx(2e-5, abs=1e-6)
    # a confident box of the wrong class is a miss and an extra
    bad = _dets([[20, 20, 40, 40], [0, 0, 10, 10]], [0.8, 0.9], [2, 4])
    [cmp] = compare_outputs(ref, bad, "detect")
    judge(cmp, tolerance_for("fp32"))
    assert not cmp.passed and cmp.box_recall == 0.5 and cmp.box_extra == 1
    assert any("box recall" in f for f in cmp.failures)


def test_box_recall_with_no_reference_boxes_is_not_checked_not_one() -> None:
    """No confident reference box (the default photos often give none): recall is not 1.000 but 'not checked'."""
    from edgecv.validate.detection import match_detections

    ref = _dets([[0, 0, 10, 10]], [0.1], [1])  # only a box under the 0.25 score floor
    got = _dets([[30, 30, 60, 60]], [0.2], [2])  # a different box: nothing was compared either way
    [cmp] = compare_outputs(ref, got, "detect")
    judge(cmp, tolerance_for("fp32"))
    assert cmp.boxes_ref == 0 and cmp.box_recall is None
    assert cmp.not_checked and "no reference box" in cmp.not_checked[0] and "0.25" in cmp.not_checked[0]
    d = cmp.to_dict()
    assert d["box_recall"] is None and d["cosine"] is None  # the cosine column carries the mean IoU: none either
    agr = match_detections(
        [(np.zeros((0, 4)), np.zeros(0), np.zeros(0))], [(np.zeros((0, 4)), np.zeros(0), np.zeros(0))]
    )
    assert agr.recall is None and agr.mean_iou is None and agr.to_dict()["recall"] is None


def test_detector_export_validate_bench(tmp_path: Path, cli) -> None:
    out = tmp_path / "det"
    proc = cli("export", "yolov3_test", "-o", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    assert res["contract"]["task"] == "detect" and res["contract"]["resize"] == "letterbox"
    assert res["contract"]["decode"]["nms"] == "graph"
    assert res["contract"]["output_names"] == [
        "boxes",
        "scores",
        "classes",
        "num_dets",
        "pre_nms_boxes",
        "pre_nms_scores",
    ]
    assert res["parity_passed"] is True

    data = tmp_path / "val"
    assert (
        cli(
            "data",
            "synth",
            "--task",
            "detect",
            "-o",
            str(data),
            "--n-train",
            "0",
            "--n-val",
            "6",
            "--size",
            "64",
            "--seed",
            "1",
        ).returncode
        == 0
    )
    # a random-init detector gives no confident box on the reference photos: box matching is "not checked" and
    # fails unless accepted; the pre-NMS candidates are still compared (and pass)
    proc = cli("validate", str(out), "-b", "onnxruntime", "--json")
    assert proc.returncode == 1
    assert json.loads(proc.stdout)["rows"][0]["verdict"] == "not checked"
    proc = cli(
        "validate", str(out), "-b", "onnxruntime", "-b", "openvino", "--val", str(data), "--json", "--allow-unchecked"
    )
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(proc.stdout)
    assert [r["passed"] for r in rep["rows"]] == [True, True]
    assert [r["verdict"] for r in rep["rows"]] == ["pass (unchecked accepted)"] * 2
    assert [o["name"] for o in rep["rows"][0]["outputs"]] == ["detections", "pre_nms_boxes", "pre_nms_scores"]
    assert all(o["passed"] and o["cosine"] > 0.99999 for o in rep["rows"][1]["outputs"][1:])
    rows = {r["backend"]: r for r in rep["task_metric"]["rows"]}
    assert set(rows) == {"torch", "onnxruntime", "openvino"}
    assert rep["task_metric"]["name"] == "mAP@0.5 %"
    for b in ("onnxruntime", "openvino"):  # fp32 engines give the mAP torch gives (same boxes)
        assert rows[b]["metric"] == pytest.approx(rows["torch"]["metric"], abs=0.5)

    proc = cli("bench", str(out), "-b", "onnxruntime", "--iters", "5", "--warmup", "1", "--rounds", "1", "--json")
    assert proc.returncode == 0, proc.stderr
    st = json.loads(proc.stdout)["stages"]["onnxruntime:fp32"]
    assert st["n"] == 50 and st["pre_ms"] > 0 and st["infer_ms"] > 0 and st["post_ms"] > 0
    # each frame's total holds its three stages, so the median total is at least each stage's median (a structural
    # bound: comparing with the sum of medians is a timing threshold that fails on a loaded machine)
    assert st["total_ms"] >= max(st["pre_ms"], st["infer_ms"], st["post_ms"])
    # the serial frame rate is frames over the time they took: 1000 / mean total, and the mean adds up
    assert st["fps"] == pytest.approx(1000.0 / st["total_mean_ms"], rel=1e-9)
    assert st["total_mean_ms"] == pytest.approx(st["pre_mean_ms"] + st["infer_mean_ms"] + st["post_mean_ms"], rel=1e-9)
