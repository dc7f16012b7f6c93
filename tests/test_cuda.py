"""The CUDA paths of the torch tier, run where a CUDA GPU exists (skipped elsewhere: ``cuda`` marker).

What runs on an NVIDIA GPU without TensorRT: the torch reference runner on ``cuda`` at fp32/fp16/bf16 (validate and
bench), a detector whose NMS runs in the model (the eager NonMaxSuppression stand-in on CUDA tensors), and
training on CUDA. Each check asserts the numbers the CPU path asserts, and that the GPU really ran.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = [pytest.mark.cuda, pytest.mark.torch]


def _json(proc) -> dict:
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def cls_bundle(tmp_path_factory: pytest.TempPathFactory, cli) -> Path:
    out = tmp_path_factory.mktemp("cuda") / "cls"
    _json(cli("export", "shapes_classifier", "-o", str(out), "--json"))
    return out


@pytest.fixture(scope="module")
def det_bundle(tmp_path_factory: pytest.TempPathFactory, cli) -> Path:
    out = tmp_path_factory.mktemp("cuda") / "det"
    _json(cli("export", "shapes_detector", "-o", str(out), "--json"))
    return out


@pytest.mark.parametrize("precision,min_cos", [("fp32", 0.99999), ("fp16", 0.999), ("bf16", 0.995)])
def test_validate_torch_on_cuda(cls_bundle: Path, cli, precision: str, min_cos: float) -> None:
    import torch

    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    d = _json(cli("validate", str(cls_bundle), "-b", f"torch:{precision}", "--device", "cuda", "--json", "--no-record"))
    # the reference is the eager model on the CPU at fp32, and it agrees with the outputs saved at export
    assert d["reference"] == "live" and "disagrees" not in (d.get("reference_note") or ""), d.get("reference_note")
    (row,) = [r for r in d["rows"] if r["backend"] == "torch"]
    assert row["error"] is None and row["passed"], row
    assert row["precision_ran"] == precision
    assert "cuda" in str(row["device"]).lower() or "gpu" in str(row["device"]).lower(), row["device"]
    out = row["outputs"][0]
    assert out["cosine"] >= min_cos and out["top1_agreement"] == 1.0, out
    if precision == "fp32":  # cuDNN fp32 (TF32 off) against the CPU reference: float rounding only
        assert out["max_abs"] < 1e-2 * max(1.0, out["scale"]), out


def test_detector_graph_nms_on_cuda(det_bundle: Path, cli) -> None:
    d = _json(
        cli("validate", str(det_bundle), "-b", "torch", "-b", "torch:fp16", "--device", "cuda", "--json", "--no-record")
    )
    rows = {r["precision"]: r for r in d["rows"] if r["backend"] == "torch"}
    assert rows["fp32"]["error"] is None and rows["fp32"]["passed"], rows["fp32"]
    assert rows["fp16"]["error"] is None, rows["fp16"]
    assert rows["fp16"]["precision_ran"] == "fp16"


def test_bench_torch_on_cuda(cls_bundle: Path, cli) -> None:
    d = _json(
        cli(
            "bench",
            str(cls_bundle),
            "-b",
            "torch",
            "-b",
            "torch:fp16",
            "--device",
            "cuda",
            "--batch",
            "1",
            "--batch",
            "32",
            "--min-time",
            "0.5",
            "--no-stages",
            "--no-peak",
            "--no-record",
            "--json",
        )
    )
    rows = [r for r in d["rows"] if r["backend"] == "torch"]
    assert len(rows) == 4, rows
    for r in rows:
        assert r["error"] is None, r
        assert r["latency"]["p50_ms"] > 0 and r["latency"]["iters"] >= 5
        assert "cuda" in str(r["device"]).lower() or "gpu" in str(r["device"]).lower(), r["device"]
    # throughput grows with batch on a GPU (items/s, not a timing threshold on one run: batch 32 moves 32x the items)
    by = {(r["precision"], r["batch"]): r["latency"]["throughput"] for r in rows}
    assert by[("fp32", 32)] > by[("fp32", 1)]


def test_train_one_epoch_on_cuda(tmp_path: Path, cli, root: Path) -> None:
    d = _json(
        cli(
            "train",
            str(root / "recipes" / "classifier.yaml"),
            "-o",
            str(tmp_path / "run"),
            "--epochs",
            "1",
            "--device",
            "cuda",
            "--json",
        )
    )
    text = json.dumps(d)
    assert "cuda" in text, text[:500]
    assert (tmp_path / "run" / "last.pt").exists()
