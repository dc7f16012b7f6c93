"""Shipped default weights reach their recorded metric on the regenerated held-out val split (within 0.5 points),
and the zoo names ``shapes_classifier`` / ``shapes_segmenter`` build with those weights loaded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = [pytest.mark.torch]

WEIGHTS = Path(__file__).resolve().parents[1] / "edgecv" / "zoo" / "weights"
DEFAULTS = {
    "shapes_classifier": ("classify", "top1", "mobilenet_v2_edge"),
    "shapes_segmenter": ("segment", "miou", "unet_dw_edge"),
}
# genuinely trained: top-1 well above chance (12.5%); mIoU well above predicting background everywhere (9.4% on
# the segmenter's val split) — and neither saturated, so INT8 work has headroom to show a drop
BOUNDS = {"shapes_classifier": (75.0, 97.0), "shapes_segmenter": (20.0, 95.0)}


def _info(name: str) -> dict:
    if not (WEIGHTS / f"{name}.pt").is_file():
        pytest.skip(f"no shipped weights edgecv/zoo/weights/{name}.pt in this checkout")
    return json.loads((WEIGHTS / f"{name}.json").read_text())


@pytest.mark.parametrize("name", sorted(DEFAULTS))
def test_default_reaches_recorded_metric(name: str) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("cv2")
    pytest.importorskip("skimage")
    from edgecv.train.defaults import check_default

    info = _info(name)
    task, metric, arch = DEFAULTS[name]
    assert (info["task"], info["metric"], info["arch"]) == (task, metric, arch)
    assert info["split"] == "val" and info["data"]["generator"] == "edgecv.data.synth"
    assert info["data"]["n_val"] >= 200
    recorded, got = check_default(name, WEIGHTS)
    assert abs(got - recorded) <= 0.5, f"{name}: recorded {info['metric']} {recorded}, measured {got}"
    lo, hi = BOUNDS[name]
    assert lo < got < hi


def test_shipped_weights_are_small() -> None:
    total = sum(p.stat().st_size for p in WEIGHTS.glob("*.pt")) if WEIGHTS.is_dir() else 0
    assert total < 15 * 2**20


def test_zoo_config_matches_shipped_record() -> None:
    """The registry cfg (what export builds the contract from) says what the weights were trained with."""
    from edgecv.zoo import model_cfg

    for name, (task, _, _) in DEFAULTS.items():
        info = _info(name)
        cfg = model_cfg(name)
        pre = info["preprocessing"]
        assert cfg["task"] == task
        assert list(cfg["input_size"]) == pre["input_size"]
        assert list(cfg["mean"]) == pytest.approx(pre["mean"]) and list(cfg["std"]) == pytest.approx(pre["std"])
        assert cfg.get("color", "RGB") == pre["color"] and cfg["resize"] == pre["resize"]
        assert list(cfg["class_names"]) == info["classes"] and cfg["num_classes"] == len(info["classes"])


def test_shapes_classifier_loads_trained_weights(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("cv2")
    pytest.importorskip("skimage")
    from edgecv.data.datasets import ImageTransform, open_dataset
    from edgecv.data.synth import generate
    from edgecv.zoo import create_model, model_cfg

    info = _info("shapes_classifier")
    model = create_model("shapes_classifier").eval()
    random_init = create_model("shapes_classifier", pretrained=False)
    assert not torch.equal(model.classifier[1].weight, random_init.classifier[1].weight)
    # a fresh split (another seed than train/val): the labels come from the generator, not from the model
    generate("classify", tmp_path / "d", n_train=0, n_val=64, size=64, seed=123)
    raw = open_dataset("classify", tmp_path / "d", split="val")
    cfg = model_cfg("shapes_classifier")
    assert list(raw.classes) == list(cfg["class_names"])
    tf = ImageTransform(tuple(cfg["input_size"][1:]), cfg["mean"], cfg["std"], "RGB", "classify")
    xs, ys = zip(*(tf(*raw[i]) for i in range(len(raw))))
    with torch.no_grad():
        pred = model(torch.stack(xs)).argmax(1)
    acc = 100.0 * float((pred == torch.tensor(ys)).float().mean())
    # the recorded val accuracy, give or take the noise of 64 images
    assert acc > min(70.0, info["value"] - 15.0), f"shapes_classifier: {acc:.1f}% on 64 fresh images"


def test_shapes_segmenter_loads_trained_weights(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("cv2")
    pytest.importorskip("skimage")
    from edgecv.data.datasets import ImageTransform, open_dataset
    from edgecv.data.synth import generate
    from edgecv.train.tasks import MeanIoU
    from edgecv.zoo import create_model, model_cfg

    _info("shapes_segmenter")
    model = create_model("shapes_segmenter")
    assert not model.training
    generate("segment", tmp_path / "d", n_train=0, n_val=32, size=64, seed=123)
    raw = open_dataset("segment", tmp_path / "d", split="val")
    cfg = model_cfg("shapes_segmenter")
    tf = ImageTransform(tuple(cfg["input_size"][1:]), cfg["mean"], cfg["std"], "RGB", "segment")
    xs, ys = zip(*(tf(*raw[i]) for i in range(len(raw))))
    x, y = torch.stack(xs), torch.stack(ys)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (32, 9, 64, 64)
    trained, bg_only = MeanIoU(9), MeanIoU(9)
    trained.update(out, y)
    bg_only.update(torch.nn.functional.one_hot(torch.zeros_like(y), 9).permute(0, 3, 1, 2).float(), y)
    # objects found and labelled: far better than calling every pixel background
    assert trained.compute() > 2 * bg_only.compute(), (trained.compute(), bg_only.compute())


def test_shipped_model_refuses_other_shape() -> None:
    pytest.importorskip("torch")
    from edgecv.errors import ConfigError
    from edgecv.zoo import create_model

    _info("shapes_classifier")
    with pytest.raises(ConfigError, match="shipped weights"):
        create_model("shapes_classifier", num_classes=5)
    assert create_model("shapes_classifier", pretrained=False, num_classes=5).classifier[1].out_features == 5
