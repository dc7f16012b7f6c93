"""``timm:<name>`` sources: contracts from ``pretrained_cfg``, preprocessing equal to timm's eval transform (Pillow's
resampling reproduced bit-exactly in numpy), offline-safe building, and edge classifiers exported and validated on
ONNX Runtime and OpenVINO (random weights)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.torch
timm = pytest.importorskip("timm")
PIL_Image = pytest.importorskip("PIL.Image")


# ------------------------------------------------------------------------------------------ resampling
def test_pil_resize_is_bit_exact_to_pillow_in_both_pass_orders() -> None:
    from edgecv.tasks.resample import pil_resize, vertical_first

    rng = np.random.default_rng(0)
    tried = {True: 0, False: 0}
    for shape in ((40, 61, 3), (97, 53, 3), (64, 64), (30, 200, 3)):
        img = rng.integers(0, 256, shape, dtype=np.uint8)
        h0, w0 = shape[:2]
        for w, h in (
            (w0 // 3, h0 // 2),
            (w0 - 1, h0 // 4),
            (w0 + 7, h0 - 9),
            (2 * w0, h0 // 3),
            (w0 // 2, 2 * h0),
            (3 * w0, 2 * h0),
            (w0, h0 // 2),
            (w0 // 2, h0),
        ):
            for method, pil in (
                ("bilinear", PIL_Image.BILINEAR),
                ("bicubic", PIL_Image.BICUBIC),
                ("lanczos", PIL_Image.LANCZOS),
                ("nearest", PIL_Image.NEAREST),
            ):
                ref = np.asarray(PIL_Image.fromarray(img).resize((w, h), pil))
                out = pil_resize(img, (w, h), method)
                assert out.shape == ref.shape and out.dtype == np.uint8
                np.testing.assert_array_equal(out, ref, err_msg=f"{shape} -> {(w, h)} {method}")
            tried[vertical_first(w0, h0, w, h)] += 1
    assert tried[True] and tried[False]  # both of Pillow's pass orders were exercised


def test_center_crop_geometry_is_torchvision_resize_then_center_crop() -> None:
    """Short side to round(size / crop_ratio), long side truncated, crop offset rounded: checked on images whose
    sizes make every rounding visible (odd margins, a long side that does not divide)."""
    import torch
    from torchvision.transforms import CenterCrop, Resize

    from edgecv.tasks.preprocess import center_crop_geometry

    for h0, w0, size, scale in (
        (300, 451, 224, 256),
        (451, 300, 224, 235),
        (97, 53, 32, 37),
        (480, 640, 256, 284),
        (225, 227, 224, 225),
    ):
        x = torch.arange(h0 * w0, dtype=torch.float64).reshape(1, h0, w0)
        resized = Resize(scale, antialias=False)(x)
        cropped = CenterCrop(size)(resized)
        nh, nw, top, left = center_crop_geometry(h0, w0, size, size, size / scale)
        assert (nh, nw) == tuple(resized.shape[1:])
        assert torch.equal(cropped, resized[:, top : top + size, left : left + size])


# ------------------------------------------------------------------------------------------ contracts
SMALL = ("efficientvit_m0", "mobilenetv4_conv_small")
ALL = (
    "mobilenetv4_conv_small",
    "efficientvit_m0",
    "efficientvit_b0",
    "fastvit_t8",
    "repvit_m0_9",
    "convnext_atto",
    "repvit_m1",
)


@pytest.mark.parametrize("name", ["fastvit_t8", "efficientvit_b0"])
def test_contract_comes_from_pretrained_cfg(name: str) -> None:
    from timm.data import resolve_data_config

    from edgecv.export.sources import load_model

    lm = load_model(f"timm:{name}")
    cfg = resolve_data_config(model=lm.module)
    c = lm.contract
    size = int(cfg["input_size"][1])
    assert c.task == "classify" and c.input_shape == [1, *cfg["input_size"]]
    assert c.mean == pytest.approx(cfg["mean"]) and c.std == pytest.approx(cfg["std"])
    assert c.interpolation == cfg["interpolation"] == "bicubic" and c.antialias
    assert c.resize == "center_crop"
    assert round(size / c.crop_ratio) == int(size / cfg["crop_pct"])  # timm: floor(size / crop_pct)
    assert len(c.class_names) == 1000 and c.class_names[:2] == ["tench", "goldfish"]
    assert lm.source_info["kind"] == "timm" and lm.source_info["spec"] == f"timm:{name}" and not lm.notes
    assert not lm.guess_task
    few = load_model(f"timm:{name}", model_kwargs={"num_classes": 7})
    assert few.contract.class_names == [] and few.contract.task == "classify"  # no ImageNet names on 7 classes


@pytest.mark.parametrize("name", SMALL)
def test_preprocess_equals_timm_eval_transform_on_photos(name: str) -> None:
    """edgecv's device-side preprocessing of real photos == timm.data.create_transform(**resolve_data_config(m))."""
    cv2 = pytest.importorskip("cv2")
    from skimage import data
    from timm.data import create_transform, resolve_data_config

    from edgecv.export.sources import load_model
    from edgecv.tasks.preprocess import preprocess

    lm = load_model(f"timm:{name}")
    tf = create_transform(**resolve_data_config(model=lm.module))
    for photo in (data.astronaut(), data.chelsea(), data.coffee()):
        ref = tf(PIL_Image.fromarray(photo)).numpy()[None]
        x, _ = preprocess(cv2.cvtColor(photo, cv2.COLOR_RGB2BGR), lm.contract)
        assert x.shape == ref.shape
        assert float(np.abs(x - ref).max()) <= 1e-4  # float rounding only: the uint8 pixels are identical
    # without Pillow's antialiasing (OpenCV's bicubic) the same photo is fed visibly differently
    cv_only = lm.contract.model_copy(update={"antialias": False})
    x, _ = preprocess(cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR), cv_only)
    assert float(np.abs(x - tf(PIL_Image.fromarray(data.astronaut())).numpy()[None]).max()) > 0.1


# ------------------------------------------------------------------------------------------ offline, bundle as data
def test_timm_source_never_downloads_and_names_what_is_wrong() -> None:
    from edgecv.errors import ConfigError, UnknownNameError
    from edgecv.export.sources import load_model

    for kw in ({"pretrained": True}, {"checkpoint_path": "/tmp/x.pth"}, {"pretrained_cfg_overlay": {"file": "x"}}):
        with pytest.raises(ConfigError, match="pretrained=False"):
            load_model("timm:efficientvit_m0", model_kwargs=kw)
    with pytest.raises(UnknownNameError, match="did you mean.*efficientvit_m0"):
        load_model("timm:efficientvit_m0x")


def test_manifest_rebuilds_a_timm_model_only_by_its_registered_name() -> None:
    import torch

    from edgecv.bundle import Manifest
    from edgecv.errors import ConfigError, ModelSourceError
    from edgecv.export.sources import load_model, load_model_from_manifest

    lm = load_model("timm:efficientvit_m0")
    rebuilt = load_model_from_manifest(Manifest(provenance={"source": lm.source_info}))
    a, b = lm.module.state_dict(), rebuilt.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # same seeded random init
    for spec in ("timm:../../evil.py:f", "timm:efficientvit_m0 --x", "timm:"):
        bad = {**lm.source_info, "spec": spec}
        with pytest.raises(ModelSourceError, match="registered timm model name"):
            load_model_from_manifest(Manifest(provenance={"source": bad}))
    with pytest.raises(ConfigError, match="pretrained=False"):  # a bundle cannot ask for a download either
        load_model_from_manifest(Manifest(provenance={"source": {**lm.source_info, "kwargs": {"pretrained": True}}}))


# ------------------------------------------------------------------------------------------ export + validate
@pytest.mark.onnxruntime
@pytest.mark.openvino
@pytest.mark.parametrize("name", [n if n in SMALL else pytest.param(n, marks=pytest.mark.slow) for n in ALL])
def test_timm_classifier_exports_and_validates(cli, tmp_path: Path, name: str) -> None:
    from edgecv.bundle import Bundle
    from edgecv.export.sources import load_model

    out = tmp_path / name
    proc = cli("export", f"timm:{name}", "-o", str(out), "--n-reference", "2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    b = Bundle.open(out)
    want = load_model(f"timm:{name}").contract  # the contract is pretrained_cfg's, unchanged by the export
    fields = (
        "task",
        "input_shape",
        "resize",
        "crop_ratio",
        "interpolation",
        "antialias",
        "mean",
        "std",
        "color",
        "class_names",
    )
    assert {f: getattr(b.contract, f) for f in fields} == {f: getattr(want, f) for f in fields}
    # random weights: every reference photo may get the same class, which validate reports as not checked (the
    # elementwise comparison of the logits still runs and must pass)
    proc = cli(
        "validate", str(out), "-b", "onnxruntime", "-b", "openvino", "--allow-unchecked", "--no-record", "--json"
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    d = json.loads(proc.stdout)
    rows = {r["backend"]: r for r in d["rows"]}
    assert set(rows) == {"onnxruntime", "openvino"}
    assert d["passed"] and all(r["passed"] for r in rows.values()), rows
