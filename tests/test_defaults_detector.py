"""The shipped default detector (``shapes_detector`` = yolov3_tiny + edgecv/zoo/weights/yolov3_tiny_synth.pt):
its recorded mAP is reproduced on the regenerated val split, it clears the issue's bar, and ONNX Runtime matches
PyTorch on it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.torch]

WEIGHTS = Path(__file__).resolve().parents[1] / "edgecv" / "zoo" / "weights"
INFO = WEIGHTS / "yolov3_tiny_synth.json"


def _info() -> dict:
    return json.loads(INFO.read_text())


def test_record_is_complete_and_meets_the_bar() -> None:
    info = _info()
    pt = WEIGHTS / info["weights"]
    assert pt.stat().st_size < 6 * 1024 * 1024
    assert info["classes"] == ["circle", "ring", "square", "rectangle", "triangle", "star", "cross", "hexagon"]
    assert info["preprocessing"]["resize"] == "letterbox"
    assert info["data"]["n_val"] >= 400 and info["data"]["size"] == 96
    # the bar, on the full val split, and the exported engines agree with PyTorch within 0.5 mAP points
    maps = info["map"]
    assert maps["torch"]["map50"] >= 0.7
    for be in ("onnxruntime", "openvino"):
        assert abs(maps[be]["map50"] - maps["torch"]["map50"]) <= 0.005
        assert abs(maps[be]["map"] - maps["torch"]["map"]) <= 0.005


def test_registry_entry_builds_the_shipped_model() -> None:
    import torch

    from edgecv.zoo import create_model, model_cfg
    from edgecv.zoo.families.yolo import SHAPES_DETECTOR_ARCH

    info = _info()
    cfg = model_cfg("shapes_detector")
    assert cfg["task"] == "detect" and cfg["resize"] == "letterbox"
    assert list(cfg["input_size"]) == info["input_size"]
    assert list(cfg["class_names"]) == info["classes"]
    # the registry's fixed arguments are the ones the weights were trained with
    assert {k: [list(a) for a in v] if k == "anchors" else v for k, v in SHAPES_DETECTOR_ARCH.items()} == {
        k: info["kwargs"][k] for k in SHAPES_DETECTOR_ARCH
    }
    m = create_model("shapes_detector")
    sd = torch.load(WEIGHTS / info["weights"], map_location="cpu", weights_only=True)
    assert all(torch.equal(m.state_dict()[k], v) for k, v in sd.items())
    assert not m.training
    with pytest.raises(Exception, match="pretrained=False"):
        create_model("shapes_detector", num_classes=3)
    assert create_model("shapes_detector", pretrained=False, num_classes=3).num_classes == 3


def _release_script() -> Any:
    """``scripts/shipped_detector.py`` (a release script, not part of the package), loaded from its file."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "scripts" / "shipped_detector.py"
    spec = importlib.util.spec_from_file_location("shipped_detector", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.onnxruntime
def test_shipped_detector_reproduces_its_val_map(tmp_path: Path) -> None:
    """Regenerate the first val images (same generator seed/size; per-image seeding makes them identical to the
    full split's first images), re-measure PyTorch and ONNX Runtime through an exported bundle, and compare with
    the recorded subset metric."""
    import torch

    from edgecv.data.synth import generate

    backend_maps = _release_script().backend_maps
    from edgecv.validate.detection import load_coco_samples

    torch.set_num_threads(1)
    info = _info()
    d, sub = info["data"], info["subset"]
    generate("detect", tmp_path / "data", n_train=0, n_val=sub["images"], size=d["size"], seed=d["seed"])
    samples = load_coco_samples(str(tmp_path / "data"), "val")
    assert len(samples) == sub["images"]
    maps, rows = backend_maps(
        WEIGHTS / info["weights"],
        info["kwargs"],
        info["classes"],
        samples,
        backends=("onnxruntime",),
        out_dir=tmp_path / "bundle",
        arch=info["arch"],
    )
    assert abs(maps["torch"]["map50"] - sub["torch"]["map50"]) <= 0.005
    assert abs(maps["torch"]["map"] - sub["torch"]["map"]) <= 0.005
    assert abs(maps["onnxruntime"]["map50"] - maps["torch"]["map50"]) <= 0.005
    assert abs(maps["onnxruntime"]["map"] - maps["torch"]["map"]) <= 0.005
    # and box for box: the confident detections of both engines coincide
    assert rows[0]["recall"] >= 0.99 and rows[0]["mean_iou"] >= 0.99
