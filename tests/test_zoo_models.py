"""Zoo models, parametrized over the registry (timm tests/test_models.py): every tiny variant is built, run,
exported and checked on ONNX Runtime and OpenVINO; every variant's default cfg is checked on the meta device."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from edgecv.errors import ConfigError, ExportError, UnknownNameError
from edgecv.export.check import check_model, count_params, export_onnx, model_stats
from edgecv.zoo import create_model, list_models, model_cfg

pytestmark = pytest.mark.torch

ALL = list_models()
TINY = [n for n in ALL if model_cfg(n)["tiny"]]
# the families this module owns (classification / segmentation heads: [N, classes] / [N, classes, H, W]); other
# families (detection, shipped-weight "edge" variants) are checked by their own tests, and every tiny variant of
# every family goes through the CLI export check at the bottom of this file
OWN_FAMILIES = ("resnet", "mobilenet", "vit", "unet")
DENSE = [n for n in ALL if model_cfg(n)["family"] in OWN_FAMILIES]
DENSE_TINY = [n for n in DENSE if model_cfg(n)["tiny"]]

REQUIRED = [
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet_tiny",
    "mobilenet_v1",
    "mobilenet_v1_tiny",
    "mobilenet_v2",
    "mobilenet_v2_tiny",
    "vit_tiny",
    "vit_small",
    "unet",
    "unet_dw",
    "unet_tiny",
    "unet_dw_tiny",
    "resnet18_se",
    "resnet_tiny_cbam",
]


def test_registry_names_and_tiny_per_family() -> None:
    assert set(REQUIRED) <= set(ALL)
    families = {model_cfg(n)["family"] for n in ALL}
    assert families >= set(OWN_FAMILIES)
    for fam in OWN_FAMILIES:
        assert any(model_cfg(n)["tiny"] for n in ALL if model_cfg(n)["family"] == fam), f"{fam} has no tiny variant"
    assert set(list_models(task="segment")) >= {"unet", "unet_dw", "unet_tiny", "unet_dw_tiny"}
    assert all(model_cfg(n)["task"] == "segment" for n in list_models(task="segment"))


def _expected_shape(name: str, batch: int = 1) -> tuple[int, ...]:
    cfg = model_cfg(name)
    _c, h, w = cfg["input_size"]
    if cfg["task"] == "segment":
        return (batch, cfg["num_classes"], h, w)
    return (batch, cfg["num_classes"])


@pytest.mark.parametrize("name", DENSE)
def test_default_cfg_is_honest_on_meta(name: str) -> None:
    # the variant built with no arguments takes its cfg's input and gives its cfg's classes
    cfg = model_cfg(name)
    assert len(cfg["mean"]) == len(cfg["std"]) == cfg["input_size"][0]
    with torch.device("meta"):
        model = create_model(name).eval()
        y = model(torch.empty(2, *cfg["input_size"]))
    assert tuple(y.shape) == _expected_shape(name, 2)
    if cfg["tiny"]:
        assert cfg["input_size"][1] <= 64 and count_params(model) < 1_000_000


# torchvision's / timm's published parameter counts
KNOWN_PARAMS = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "mobilenet_v2": 3_504_872,
    "vit_small": 22_050_664,
    "resnet50_se": 28_088_024,
    "mobilenet_v1": 4_231_976,
}


@pytest.mark.parametrize("name", sorted(KNOWN_PARAMS))
def test_known_param_counts(name: str) -> None:
    with torch.device("meta"):
        assert count_params(create_model(name)) == KNOWN_PARAMS[name]


def test_param_counts_match_torchvision_architectures() -> None:
    tv = pytest.importorskip("torchvision")
    for ours, theirs in [("resnet18", "resnet18"), ("resnet50", "resnet50"), ("mobilenet_v2", "mobilenet_v2")]:
        with torch.device("meta"):
            a, b = create_model(ours), getattr(tv.models, theirs)()
        assert count_params(a) == count_params(b)
        # same layer-by-layer parameter shapes, not just the same total
        assert sorted(p.shape for p in a.parameters()) == sorted(p.shape for p in b.parameters())


def test_flops_match_the_published_resnet18_and_mobilenet_v2() -> None:
    # FlopCounterMode counts 2 FLOPs per multiply-add: resnet18 is 1.814 GMACs, mobilenet_v2 0.30 GMACs at 224
    assert model_stats("resnet18")["gflops"] == pytest.approx(2 * 1.814, rel=0.01)
    assert model_stats("mobilenet_v2")["gflops"] == pytest.approx(2 * 0.3008, rel=0.01)


def test_variant_kwargs_merge_into_the_arch() -> None:
    with torch.device("meta"):
        se = create_model("resnet18", attn="se")
        assert count_params(se) == count_params(create_model("resnet18_se"))
        assert count_params(create_model("resnet18", num_classes=10)) == 11_689_512 - 990 * 513
        gn = create_model("resnet_tiny", norm="gn")
        assert any(isinstance(m, torch.nn.GroupNorm) for m in gn.modules())
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in gn.modules())
        wide = create_model("mobilenet_v2", width_mult=1.4)
        assert count_params(wide) == 6_108_776  # torchvision mobilenet_v2(width_mult=1.4)
    with pytest.raises(ConfigError, match="resnet18: bad arguments"):
        create_model("resnet18", depth=5)
    with pytest.raises(UnknownNameError, match="did you mean"):
        create_model("resnet19")
    with pytest.raises(UnknownNameError, match="expected one of:.*cbam"):
        create_model("resnet_tiny", attn="cbma")


def test_unet_options_change_the_structure() -> None:
    dil = create_model("unet_tiny", dilated_bottleneck=True)
    assert dil.bottleneck.conv1.conv.dilation == (2, 2) and dil.bottleneck.conv2.conv.dilation == (4, 4)
    dw = create_model("unet_dw_tiny")
    convs = [m for m in dw.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    assert convs and all(m.groups == m.in_channels for m in convs)  # every 3×3 is depthwise
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert dil.eval()(x).shape == (1, 4, 64, 64)


@pytest.mark.parametrize("name", DENSE_TINY)
def test_tiny_forward_and_train_step(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name)
    x = torch.randn(2, *model_cfg(name)["input_size"])
    model.train()
    y = model(x)
    assert tuple(y.shape) == _expected_shape(name, 2)
    y.square().mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    model.eval()
    with torch.no_grad():
        a, b = model(x[:1]), model(x)[:1]
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)  # eval: samples are independent


@pytest.mark.onnxruntime
@pytest.mark.openvino
@pytest.mark.parametrize("exporter,opset", [("torchscript", 17), ("torchscript", 18), ("dynamo", 18)])
@pytest.mark.parametrize("name", DENSE_TINY)
def test_tiny_exports_and_matches_on_ort_and_openvino(name: str, exporter: str, opset: int) -> None:
    res = check_model(name, exporter=exporter, opset=opset)
    assert res["export"]["ok"], res["export"]["error"]
    for rt in ("onnxruntime", "openvino"):
        r = res[rt]
        assert r["ok"], f"{rt}: {r['error']}"
        assert r["max_abs"] <= r["tol"] and r["tol"] >= 1e-4


@pytest.mark.onnxruntime
def test_export_verifies_the_opset_it_wrote(tmp_path) -> None:
    model = create_model("resnet_tiny").eval()
    x = torch.randn(1, 3, 64, 64)
    path = export_onnx(model, x, tmp_path / "m.onnx", "torchscript", 18)
    from edgecv.export.onnx import verify_onnx as _verify_onnx

    with pytest.raises(ExportError, match="wrote opset 18, not the requested 17"):
        _verify_onnx(path, "torchscript", 17)
    with pytest.raises(ConfigError, match="exporter: expected one of"):
        export_onnx(model, x, tmp_path / "n.onnx", "jit", 17)


def test_check_lines_up_graph_nms_detections_tied_in_score_and_still_catches_wrong_boxes() -> None:
    """Random-weight Faster R-CNN gives many detections at ~1/(C+1): two of them 1e-8 apart came out swapped on
    ONNX Runtime (a 16 px "error"). The check reorders only same-class rows tied within the tolerance."""
    import numpy as np

    from edgecv.export.check import align_detections, compare

    boxes = np.array([[[0, 0, 10, 10], [0, 16, 10, 26], [5, 5, 20, 20], [0, 0, 0, 0]]], np.float32)
    scores = np.array([[0.5, 0.11613174, 0.11613173, 0.0]], np.float32)
    classes = np.array([[1, 4, 4, 0]], np.int64)
    ref = [boxes, scores, classes, np.array([3])]
    swap = [0, 2, 1, 3]  # rows 1 and 2 tie (1e-8 apart) and come back in the other order
    out = [boxes[:, swap], scores[:, swap], classes[:, swap], np.array([3])]
    assert not compare(ref, out)["ok"]
    assert compare(ref, align_detections(ref, out))["ok"]
    # a real difference still fails: a moved box, or a tied row of another class (not swappable)
    moved = [a.copy() for a in out]
    moved[0][0, 1, 0] += 1.0
    assert compare(ref, align_detections(ref, moved))["max_abs"] >= 1.0
    other = [a.copy() for a in out]
    other[2][0, 1] = 5
    assert not compare(ref, align_detections(ref, other))["ok"]
    # boxes swapped between same-class rows whose scores are far apart (0.3 vs 0.1): no tie, so they stay wrong
    sc = np.array([[0.5, 0.3, 0.1, 0.0]], np.float32)
    ref_far = [boxes, sc, classes, np.array([3])]
    far = [boxes[:, swap], sc, classes, np.array([3])]
    assert not compare(ref_far, align_detections(ref_far, far))["ok"]


def test_cli_lists_table_and_json(cli) -> None:
    out = cli("models", "--task", "segment", check=True).stdout
    assert "unet_dw_tiny" in out and "resnet18" not in out and "multiply-add = 2 FLOPs" in out
    data = json.loads(cli("models", "resnet*", "--json", check=True).stdout)
    rows = {r["name"]: r for r in data["models"]}
    assert set(rows) == {n for n in ALL if n.startswith("resnet")}
    assert rows["resnet18"]["params"] == 11_689_512 and rows["resnet50"]["params"] == 25_557_032
    assert rows["resnet_tiny"]["tiny"] and rows["resnet_tiny"]["input_size"] == [3, 64, 64]
    bad = cli("models", "--task", "pose")
    assert bad.returncode == 2 and "no model matches" in bad.stderr


@pytest.mark.onnxruntime
@pytest.mark.openvino
def test_cli_check_reports_ok_for_every_tiny_model(cli) -> None:
    # the TorchScript exporter keeps this to ~1 s a model; the dynamo exporter is covered per model above
    proc = cli("models", "--tiny", "--check", "--json", "--exporter", "torchscript", "--opset", "17")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["check"]["failed"] == [] and data["check"]["exporter"] == "torchscript"
    assert sorted(r["name"] for r in data["models"]) == TINY
    for r in data["models"]:
        assert r["check_ok"], (r["name"], r["check"])
        for rt in ("onnxruntime", "openvino"):
            assert 0 <= r["check"][rt]["max_abs"] <= r["check"][rt]["tol"]


def test_gdc_head_replaces_average_pooling_with_a_full_map_depthwise_conv() -> None:
    from edgecv.zoo.families.mobilenet import final_map_size
    from edgecv.zoo.layers import GlobalDepthwiseConv

    assert [final_map_size(s) for s in (224, 112, 64, 65)] == [7, 4, 2, 3]
    with torch.device("meta"):
        gdc = create_model("mobilenet_v2_gdc")
        # a 7×7 depthwise kernel per channel plus the BN's scale and shift, on top of torchvision's 3,504,872
        assert count_params(gdc) == 3_504_872 + 1280 * 7 * 7 + 2 * 1280
        assert gdc.pool.conv.kernel_size == (7, 7) and gdc.pool.conv.groups == 1280
    m = create_model("mobilenet_v2_tiny_gdc").eval()
    pool = m.pool
    assert isinstance(pool, GlobalDepthwiseConv) and pool.conv.kernel_size == (2, 2)
    f = torch.randn(3, 256, 2, 2)
    bn = pool.norm
    by_hand = (f * pool.conv.weight[:, 0]).sum((2, 3))  # one weight per channel per position, no padding
    by_hand = (by_hand - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
    torch.testing.assert_close(pool(f), by_hand)
    # position-dependent: unlike GAP, swapping two positions changes the descriptor
    with torch.no_grad():
        pool.conv.weight.copy_(torch.arange(4.0).reshape(1, 1, 2, 2).expand_as(pool.conv.weight))
    assert not torch.allclose(pool(f), pool(f.flip(-1)))
    with pytest.raises(ConfigError, match="mobilenet head: expected one of gap, gdc, found 'gmp'"):
        create_model("mobilenet_v1_tiny", head="gmp")
