"""edgecv pipeline: the whole chain on a tiny recipe, and step skipping by hash."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = [pytest.mark.torch, pytest.mark.onnxruntime, pytest.mark.openvino]

RECIPE = """
model: {name: mobilenet_v2_tiny}
data:
  task: classify
  synth: {n_train: 48, n_val: 16, size: 32, seed: 3}
  batch_size: 16
train: {epochs: 1, seed: 0, threads: 1, optimizer: {name: adam, lr: 0.01}}
export: {opset: 18, dynamic_batch: true}
compile:
  - {backend: openvino, precision: fp32}
# one epoch: the model may give its val split one class, so the top-1 check has no decision to compare; accepted
validate: {backends: [onnxruntime, openvino], allow_unchecked: true}
bench: {backends: [onnxruntime, openvino], batches: [1], threads: 1}
"""


def test_pipeline_runs_then_skips_what_is_up_to_date(tmp_path: Path) -> None:
    from edgecv.pipeline import run_recipe

    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE)
    out = tmp_path / "out"
    res = run_recipe(recipe, out, bench_min_time=0.05, log=lambda m: None)
    assert [s.status for s in res.steps] == ["ran"] * 5
    rows = {(r["backend"], r["precision"]): r for r in res.rows}
    assert set(rows) == {("torch", "fp32"), ("onnxruntime", "fp32"), ("openvino", "fp32")}
    torch_top1 = rows[("torch", "fp32")]["metric"]
    assert 0.0 <= torch_top1 <= 100.0
    for key in (("onnxruntime", "fp32"), ("openvino", "fp32")):
        # fp32 engines agree with torch on the reference inputs and give the same top-1 on the 16 val images
        assert rows[key]["agrees_with_torch"] is True
        assert rows[key]["metric"] == pytest.approx(torch_top1, abs=100 / 16 + 1e-6)
        assert rows[key]["latency"]["p50_ms"] > 0 and rows[key]["speedup_vs_torch"] > 0
    assert rows[("openvino", "fp32")]["precision_ran"] == "fp32"
    manifest = json.loads((out / "bundle" / "manifest.json").read_text())
    assert manifest["contract"]["class_names"] and len(manifest["contract"]["class_names"]) >= 2
    assert manifest["contract"]["input_shape"][2:] == [32, 32]
    assert "openvino:fp32" in manifest["artifacts"]

    # same recipe again: nothing re-runs
    again = run_recipe(recipe, out, bench_min_time=0.05, log=lambda m: None)
    assert [s.status for s in again.steps] == ["skipped (up to date)"] * 5
    assert again.rows[0]["metric"] == torch_top1

    # only the bench section changed: only bench re-runs
    recipe.write_text(RECIPE.replace("batches: [1]", "batches: [2]"))
    third = run_recipe(recipe, out, bench_min_time=0.05, log=lambda m: None)
    assert [s.status for s in third.steps] == ["skipped (up to date)"] * 4 + ["ran"]
    assert third.rows[0]["batch"] == 2


def test_pipeline_bad_recipe_fails_before_running(tmp_path: Path, cli) -> None:
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(RECIPE.replace("name: adam", "name: adamm"))
    proc = cli("pipeline", str(recipe), "-o", str(tmp_path / "o"))
    assert proc.returncode == 2
    assert "train.optimizer.name" in proc.stderr and "adamw" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o" / "train").exists()
