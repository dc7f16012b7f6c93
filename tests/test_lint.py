"""Quantization-risk lint: flags SiLU, SE sigmoid gates, norms, outlier channels and wide depthwise weights, by name."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
from torch import nn

from edgecv.rewrite.lint import lint_inputs, lint_model

pytestmark = pytest.mark.torch


class SE(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(c, c // 2, 1)
        self.fc2 = nn.Conv2d(c // 2, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.fc2(torch.relu(self.fc1(x.mean((2, 3), keepdim=True)))))  # functional gate


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.SiLU())
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.se = SE(8)
        self.proj = nn.Conv2d(8, 8, 1)
        self.act = nn.ReLU()
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.act(self.proj(self.se(self.dw(self.stem(x))))))


@pytest.fixture(scope="module")
def inputs() -> torch.Tensor:
    return lint_inputs((1, 3, 32, 32), 3)[0]


def by(report, issue_word: str):
    return [f for f in report.findings if issue_word in f.issue]


def test_inputs_are_real_photos_normalised() -> None:
    x, source = lint_inputs((1, 3, 48, 40), 3)
    assert x.shape == (3, 3, 48, 40) and source == "3 skimage.data photos"
    assert -3 < float(x.mean()) < 3 and float(x.std()) > 0.3  # ImageNet-normalised, not raw 0..255
    assert not torch.equal(x[0], x[1])
    noise, src2 = lint_inputs((2, 1, 16, 16), 2)
    assert src2 == "2 seeded noise inputs" and torch.equal(noise, lint_inputs((2, 1, 16, 16), 2)[0])


def test_clean_net_flags_silu_and_se_gate_only(inputs: torch.Tensor) -> None:
    model = Net().eval()
    report = lint_model(model, inputs)
    assert report.method == "fx"
    silu = by(report, "SiLU")
    assert [f.layer for f in silu] == ["stem.2"] and silu[0].fix == "act_relu6"
    # the pre-activation range is measured: it equals the BN output range
    assert silu[0].range is not None and silu[0].range[0] < 0 < silu[0].range[1]
    gates = by(report, "sigmoid gate")
    assert len(gates) == 1 and gates[0].layer.startswith("se.") and gates[0].fix == "hard_sigmoid"
    assert not by(report, "outlier")
    layers = {s.name for s in report.layers}
    assert {"stem.0", "dw", "proj", "head.2"} <= layers


def test_injected_outlier_channel_is_named(inputs: torch.Tensor) -> None:
    model = Net().eval()
    with torch.no_grad():
        model.proj.bias[3] = 300.0  # one channel 100x larger than the rest
    report = lint_model(model, inputs)
    hits = [f for f in by(report, "outlier channel") if f.layer == "proj"]
    assert len(hits) == 1 and "channel 3" in hits[0].issue and hits[0].severity == "high"
    assert hits[0].range is not None and hits[0].range[1] > 250
    assert report.findings[0].severity == "high"  # sorted by severity
    # the ReLU after proj only carries the same outlier channel on: reported once, where it starts
    assert not [f for f in report.findings if f.layer == "act"]


def test_wide_depthwise_weight_ranges(inputs: torch.Tensor) -> None:
    model = Net().eval()
    with torch.no_grad():
        model.dw.weight[2] *= 200.0
    report = lint_model(model, inputs)
    dw = by(report, "depthwise")
    assert [f.layer for f in dw] == ["dw"] and dw[0].score > 50


def test_norms_softmax_and_module_walk(inputs: torch.Tensor) -> None:
    class Attn(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.ln = nn.GroupNorm(1, 8)
            self.hs = nn.Hardswish()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.hs(self.ln(self.conv(x)))
            w = torch.softmax(y.flatten(2), dim=-1)
            return (w * y.flatten(2)).sum(-1)

    report = lint_model(Attn().eval(), inputs)
    assert [f.fix for f in by(report, "GroupNorm")] == ["norm_to_bn"]
    assert len(by(report, "softmax")) == 1 and by(report, "Hardswish")[0].layer == "hs"

    class Untraceable(Attn):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.hs(self.ln(self.conv(x)))
            return y if y.sum() > 0 else -y

    rep2 = lint_model(Untraceable().eval(), inputs)
    assert rep2.method == "module walk" and by(rep2, "Hardswish")[0].layer == "hs"
    assert by(rep2, "GroupNorm")[0].layer == "ln"


def test_zoo_se_model_flags_its_gates(inputs: torch.Tensor) -> None:
    zoo = pytest.importorskip("edgecv.zoo")
    model = zoo.create_model("resnet_tiny_se").eval()
    report = lint_model(model, inputs)
    gates = by(report, "sigmoid gate")
    assert gates and all(g.fix == "hard_sigmoid" for g in gates)


def test_zoo_switchable_norm_is_one_finding(inputs: torch.Tensor) -> None:
    zoo = pytest.importorskip("edgecv.zoo")
    model = zoo.create_model("resnet_tiny_norms").eval()
    names = {type(m).__name__ for m in model.modules()}
    if "SwitchableNorm2d" not in names:
        pytest.skip("resnet_tiny_norms has no SwitchableNorm2d")
    report = lint_model(model, inputs)
    norms = [f for f in report.findings if f.op == "SwitchableNorm2d"]
    n_modules = sum(type(m).__name__ == "SwitchableNorm2d" for m in model.modules())
    assert len(norms) == n_modules and all(f.fix == "norm_to_bn" for f in norms)
    assert not by(report, "softmax")  # the norm's internal softmax over its mixing weights is not reported


def test_lint_cli_json(cli) -> None:
    proc = cli(
        "lint",
        "mobilenet_v2_tiny",
        "--input-shape",
        "1x3x64x64",
        "--samples",
        "2",
        "--json",
        env={"OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["input_shape"] == [2, 3, 64, 64] and data["method"] == "fx"
    assert data["layers"] and all("outlier_score" in s for s in data["layers"])
    bad = cli("lint", "mobilenet_v2_tiny", "--samples", "0")
    assert bad.returncode == 2 and "--samples: expected an integer >= 1, found 0" in bad.stderr
