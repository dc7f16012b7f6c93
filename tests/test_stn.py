"""Spatial Transformer: the grid equals ``F.affine_grid``, the block warps by a known theta, the classifier exports
with ONNX ``GridSample`` and matches on ONNX Runtime and OpenVINO at a non-identity transform, and lint says how
``grid_sample`` quantizes."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F

from edgecv.errors import ConfigError
from edgecv.zoo import create_model
from edgecv.zoo.layers.spatial import SpatialTransformer

pytestmark = pytest.mark.torch


def _rotating(m: SpatialTransformer, angle: float, shift: float = 0.1) -> None:
    """Make the localization net output a fixed rotation (zero weights, the transform in the bias)."""
    c, s = math.cos(angle), math.sin(angle)
    with torch.no_grad():
        m.fc[-1].weight.zero_()
        m.fc[-1].bias.copy_(torch.tensor([c, -s, shift, s, c, -shift]))


def test_grid_equals_affine_grid_and_starts_as_identity() -> None:
    torch.manual_seed(0)
    m = SpatialTransformer(3, 16).eval()
    theta = torch.randn(2, 2, 3)
    torch.testing.assert_close(m.grid(theta), F.affine_grid(theta, [2, 3, 16, 16], align_corners=False))
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(m.theta(x), torch.tensor([[1.0, 0, 0], [0, 1, 0]]).expand(2, 2, 3))
    torch.testing.assert_close(m(x), x, atol=1e-5, rtol=0)  # identity theta samples every pixel centre
    with pytest.raises(ConfigError, match="spatial transformer size"):
        SpatialTransformer(3, 4)


def test_a_quarter_turn_rotates_the_image() -> None:
    m = SpatialTransformer(1, 8).eval()
    _rotating(m, math.pi / 2, shift=0.0)
    x = torch.arange(64.0).reshape(1, 1, 8, 8)
    # output(x_o, y_o) samples input at (-y_o, x_o): a 90° rotation of the pixel grid, exact at pixel centres
    torch.testing.assert_close(m(x), torch.rot90(x, 1, (2, 3)), atol=1e-4, rtol=0)


def test_classifier_trains_through_the_sampler() -> None:
    torch.manual_seed(0)
    model = create_model("stn_tiny").train()
    with torch.no_grad():
        model.stn.fc[-1].weight.normal_(0, 0.01)
    x = torch.randn(4, 3, 32, 32)
    F.cross_entropy(model(x), torch.tensor([0, 1, 2, 3])).backward()
    g = model.stn.loc[0].weight.grad  # the gradient reaches the localization net through grid_sample
    assert g is not None and float(g.abs().sum()) > 0


@pytest.mark.onnxruntime
@pytest.mark.openvino
@pytest.mark.parametrize("opset", [16, 17])
def test_export_keeps_gridsample_and_matches_on_ort_and_openvino(opset: int, tmp_path) -> None:
    onnx = pytest.importorskip("onnx")
    from edgecv.export.check import check_module, randomize_norm_stats

    torch.manual_seed(0)
    model = create_model("stn_classifier").eval()
    randomize_norm_stats(model)
    _rotating(model.stn, 0.4)
    with torch.no_grad():  # plus an input-dependent part, so the localization net is in the compared output
        model.stn.fc[-1].weight.normal_(0, 0.02)
    x = torch.rand(1, 3, 64, 64)
    res = check_module(model, x, tmp_path, "torchscript", opset)
    assert res["export"]["ok"], res["export"]["error"]
    ops = {n.op_type for n in onnx.load(str(tmp_path / "model.onnx")).graph.node}
    assert "GridSample" in ops and "AffineGrid" not in ops
    for rt in ("onnxruntime", "openvino"):
        assert res[rt]["ok"], f"{rt}: {res[rt]['error']}"
        assert res[rt]["max_abs"] <= 1e-4 * max(1.0, float(model(x).detach().abs().max()))
    # and the transform is far from the identity: the STN output differs from its input
    with torch.no_grad():
        assert float((model.stn(x) - x).abs().mean()) > 0.05


def test_lint_reports_grid_sample_quantization(cli) -> None:
    import json

    proc = cli("lint", "stn_tiny", "--samples", "2", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    gs = [f for f in data["findings"] if f["op"] == "grid_sample"]
    assert len(gs) == 1 and gs[0]["severity"] == "high" and gs[0]["layer"] == "stn.grid_sample"
    lo, hi = gs[0]["range"]
    # identity theta at init: grid = pixel centres of a 32 px image, ±(1 - 1/32)
    assert lo == pytest.approx(-31 / 32, abs=1e-5) and hi == pytest.approx(31 / 32, abs=1e-5)
    assert f"one INT8 step = {(hi - lo) / 255:.3g} normalised" in gs[0]["measured"]
    assert "fp16/fp32" in gs[0]["advice"]
