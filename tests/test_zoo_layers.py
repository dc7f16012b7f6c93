"""Zoo layers: every conv / norm / activation / attention block by name, with numbers that prove the semantics,
and every attention block exported to ONNX and run on ONNX Runtime and OpenVINO."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F
from torch import nn

from edgecv.errors import ConfigError, UnknownNameError
from edgecv.zoo.layers import (
    ATTNS,
    NORMS,
    ConvNormAct,
    LayerNorm2d,
    MultiHeadSelfAttention,
    SwitchableNorm2d,
    create_act,
    create_attn,
    create_conv,
    create_norm,
    eca_kernel_size,
    init_weights,
)

pytestmark = pytest.mark.torch


def _x(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- norms


@pytest.mark.parametrize("name", ["bn", "ln", "in", "gn", "sn", "none"])
def test_norm_shapes(name: str) -> None:
    x = _x(2, 12, 5, 7)
    assert create_norm(name, 12)(x).shape == x.shape


def test_norm_types_and_unknown_name() -> None:
    assert isinstance(create_norm("bn", 8), nn.BatchNorm2d)
    assert isinstance(create_norm("in", 8), nn.InstanceNorm2d) and create_norm("in", 8).affine
    gn = create_norm("gn", 12)  # 32 groups do not divide 12: the largest divisor ≤ 32 is used
    assert isinstance(gn, nn.GroupNorm) and gn.num_groups == 12
    assert create_norm("gn", 64).num_groups == 32
    with pytest.raises(UnknownNameError, match="expected one of:.*bn.*switchable"):
        create_norm("batch_norm", 8)
    with pytest.raises(ConfigError, match="norm 'bn': bad arguments"):
        create_norm("bn", 8, bogus=1)


def test_layernorm2d_normalizes_over_channels_per_position() -> None:
    x = _x(2, 6, 4, 5) * 3 + 1
    ln = LayerNorm2d(6)
    with torch.no_grad():
        ln.weight.copy_(torch.arange(1.0, 7.0))
        ln.bias.copy_(torch.linspace(-1, 1, 6))
    ref = F.layer_norm(x.permute(0, 2, 3, 1), (6,), ln.weight, ln.bias, eps=ln.eps).permute(0, 3, 1, 2)
    torch.testing.assert_close(ln(x), ref, atol=1e-5, rtol=1e-5)
    # without the affine, every position has zero mean and unit (biased) variance over C
    y = LayerNorm2d(6, affine=False)(x)
    torch.testing.assert_close(y.mean(1), torch.zeros(2, 4, 5), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var(1, unbiased=False), torch.ones(2, 4, 5), atol=1e-3, rtol=0)


def test_instance_and_group_norm_statistics() -> None:
    x = _x(2, 8, 6, 6) * 2 + 3
    y = create_norm("in", 8)(x)  # fresh affine: identity scale/shift
    torch.testing.assert_close(y.mean((2, 3)), torch.zeros(2, 8), atol=1e-5, rtol=0)
    g = create_norm("gn", 8, num_groups=2)(x).reshape(2, 2, -1)
    torch.testing.assert_close(g.mean(-1), torch.zeros(2, 2), atol=1e-5, rtol=0)
    torch.testing.assert_close(g.var(-1, unbiased=False), torch.ones(2, 2), atol=1e-3, rtol=0)


def _pure(sn: SwitchableNorm2d, branch: int) -> SwitchableNorm2d:
    # softmax([0, -1e4, -1e4]) is exactly one-hot in float32
    w = torch.full((3,), -1e4)
    w[branch] = 0.0
    with torch.no_grad():
        sn.mean_weight.copy_(w)
        sn.var_weight.copy_(w)
    return sn


def test_switchable_norm_pure_bn_equals_batchnorm_train_and_eval() -> None:
    x = _x(4, 6, 5, 5) * 2 + 0.5
    sn = _pure(SwitchableNorm2d(6), 2).train()
    bn = nn.BatchNorm2d(6).train()
    with torch.no_grad():
        for m in (sn, bn):
            m.weight.copy_(torch.linspace(0.5, 2, 6))
            m.bias.copy_(torch.linspace(-1, 1, 6))
    for step in range(3):  # several steps so the running statistics accumulate
        xs = x * (step + 1)
        torch.testing.assert_close(sn(xs), bn(xs), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sn.running_mean, bn.running_mean, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sn.running_var, bn.running_var, atol=1e-4, rtol=1e-5)
    sn.eval(), bn.eval()
    torch.testing.assert_close(sn(x), bn(x), atol=1e-5, rtol=1e-5)


def test_switchable_norm_pure_in_and_ln_branches() -> None:
    x = _x(3, 6, 4, 4) * 2 + 1
    torch.testing.assert_close(_pure(SwitchableNorm2d(6), 0)(x), F.instance_norm(x, eps=1e-5), atol=1e-4, rtol=1e-4)
    # SN's LN branch normalizes each sample over (C, H, W): GroupNorm with one group
    torch.testing.assert_close(_pure(SwitchableNorm2d(6), 1)(x), F.group_norm(x, 1, eps=1e-5), atol=1e-4, rtol=1e-4)


def test_switchable_norm_default_mix_is_the_average_of_statistics() -> None:
    x = _x(3, 4, 4, 4) + 2
    sn = SwitchableNorm2d(4).train()  # equal logits → weights 1/3 each
    m_in, v_in = x.mean((2, 3), keepdim=True), x.var((2, 3), keepdim=True, unbiased=False)
    m_ln, v_ln = x.mean((1, 2, 3), keepdim=True), x.var((1, 2, 3), keepdim=True, unbiased=False)
    m_bn, v_bn = x.mean((0, 2, 3), keepdim=True), x.var((0, 2, 3), keepdim=True, unbiased=False)
    mean, var = (m_in + m_ln + m_bn) / 3, (v_in + v_ln + v_bn) / 3
    torch.testing.assert_close(sn(x), (x - mean) / torch.sqrt(var + 1e-5), atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------- activations


def test_create_act() -> None:
    x = torch.linspace(-4, 4, 41)
    torch.testing.assert_close(create_act("relu6")(x * 2), (x * 2).clamp(0, 6))
    torch.testing.assert_close(create_act("silu")(x), x * torch.sigmoid(x))
    torch.testing.assert_close(create_act("leaky_relu", negative_slope=0.2)(x), torch.where(x > 0, x, 0.2 * x))
    torch.testing.assert_close(create_act("gelu")(x), 0.5 * x * (1 + torch.erf(x / math.sqrt(2))))
    assert isinstance(create_act(None), nn.Identity)
    with pytest.raises(UnknownNameError, match="did you mean relu"):
        create_act("rel")


# ---------------------------------------------------------------- convolutions


def test_conv_norm_act_is_conv_then_bn_then_act() -> None:
    m = ConvNormAct(4, 8, 3, norm="bn", act="relu").eval()
    assert m.conv.bias is None  # a norm follows, so the conv bias would be redundant
    with torch.no_grad():
        m.norm.running_mean.uniform_(-1, 1)
        m.norm.running_var.uniform_(0.5, 2)
    x = _x(2, 4, 9, 9)
    torch.testing.assert_close(m(x), F.relu(m.norm(m.conv(x))))
    assert ConvNormAct(4, 8, norm=None).conv.bias is not None


def test_conv_kinds_groups_and_param_counts() -> None:
    c, o, k = 16, 32, 3
    std = create_conv("standard", c, o, k, norm=None, act=None)
    assert std.conv.groups == 1 and sum(p.numel() for p in std.conv.parameters()) == o * c * k * k + o
    grp = create_conv("group", c, o, k, groups=4)
    assert grp.conv.groups == 4 and grp.conv.weight.numel() == o * (c // 4) * k * k
    dw = create_conv("depthwise", c, c, k)
    assert dw.conv.groups == c == dw.conv.in_channels
    assert dw.conv.weight.shape == (c, 1, k, k)
    assert sum(p.numel() for p in dw.parameters()) == c * k * k + 2 * c  # conv (no bias) + BN affine
    sep = create_conv("dw_separable", c, o, k)
    assert sep.dw.conv.groups == c and sep.pw.conv.kernel_size == (1, 1)
    assert sum(p.numel() for p in sep.parameters()) == c * k * k + 2 * c + c * o + 2 * o
    assert sum(p.numel() for p in sep.parameters()) < sum(p.numel() for p in create_conv("standard", c, o).parameters())
    with pytest.raises(ConfigError, match="groups: expected a divisor"):
        create_conv("group", 16, 30, groups=4)
    with pytest.raises(ConfigError, match="conv kind: expected one of"):
        create_conv("deformable", 4, 4)


@pytest.mark.parametrize(
    "kind,dilation,offsets", [("standard", 1, [-1, 0, 1]), ("dilated", 2, [-2, 0, 2]), ("dilated", 3, [-3, 0, 3])]
)
def test_dilated_receptive_field(kind: str, dilation: int, offsets: list[int]) -> None:
    m = create_conv(kind, 1, 1, 3, dilation=None if kind == "standard" else dilation, norm=None, act=None)
    assert m.conv.dilation == (dilation, dilation)
    with torch.no_grad():
        m.conv.weight.fill_(1.0)
        m.conv.bias.zero_()
    x = torch.zeros(1, 1, 15, 15)
    x[0, 0, 7, 7] = 1.0  # an impulse: the output is non-zero exactly where the kernel taps can see it
    y = m(x)[0, 0]
    assert y.shape == (15, 15)  # "same" padding
    hits = {(int(i) - 7, int(j) - 7) for i, j in torch.nonzero(y)}
    assert hits == {(a, b) for a in offsets for b in offsets}  # 9 taps spread over (2d+1)² with holes


def test_stride_two_halves() -> None:
    assert create_conv("dw_separable", 8, 8, 3, stride=2)(_x(1, 8, 16, 16)).shape == (1, 8, 8, 8)


# ---------------------------------------------------------------- attention

ALL_ATTN = ["se", "eca", "sk", "cbam", "danet_pam", "danet_cam", "danet", "nonlocal", "mhsa", "transformer"]


def test_attention_registry_covers_the_issue() -> None:
    assert set(ALL_ATTN) <= set(ATTNS.names())
    assert isinstance(create_attn(None, 8), nn.Identity) and isinstance(create_attn("none", 8), nn.Identity)
    with pytest.raises(UnknownNameError, match="expected one of:.*cbam"):
        create_attn("ecaa", 8)
    with pytest.raises(ConfigError, match="attention 'se': bad arguments"):
        create_attn("se", 8, heads=2)


@pytest.mark.parametrize("name", ALL_ATTN)
def test_attention_shapes_and_not_identity(name: str) -> None:
    torch.manual_seed(0)
    kw = {"gamma_init": 0.5} if name.startswith("danet") else ({"zero_init": False} if name == "nonlocal" else {})
    m = create_attn(name, 16, **kw).eval()
    x = _x(2, 16, 6, 5)
    y = m(x)
    assert y.shape == x.shape
    assert (y - x).abs().max() > 1e-3  # it does something
    y.sum().backward()  # and trains
    assert all(p.grad is not None for p in m.parameters() if p.requires_grad)


def test_se_equals_hand_computation() -> None:
    m = create_attn("se", 32, reduction=4).eval()
    x = _x(2, 32, 7, 7)
    s = x.mean((2, 3))  # squeeze
    e = torch.sigmoid(
        F.linear(F.relu(F.linear(s, m.fc1.weight[:, :, 0, 0], m.fc1.bias)), m.fc2.weight[:, :, 0, 0], m.fc2.bias)
    )  # excitation
    torch.testing.assert_close(m(x), x * e[:, :, None, None])  # scale
    assert m.fc1.out_channels == 8


def test_eca_kernel_size_follows_the_channel_count_formula() -> None:
    # k = |log2(C)/2 + 1/2|_odd (gamma 2, b 1): C ≤ 64 → 3, 128…1024 → 5, 2048 → 7
    assert [eca_kernel_size(c) for c in (8, 16, 32, 64, 128, 256, 512, 1024, 2048)] == [3, 3, 3, 3, 5, 5, 5, 5, 7]
    assert create_attn("eca", 256).conv.kernel_size == (5,) and create_attn("eca", 2048).kernel_size == 7
    assert create_attn("eca", 64, kernel_size=9).conv.padding == (4,)
    assert sum(p.numel() for p in create_attn("eca", 512).parameters()) == 5  # k weights, no reduction MLP
    with pytest.raises(ConfigError, match="eca kernel_size: expected an odd integer"):
        create_attn("eca", 64, kernel_size=4)


def test_eca_equals_hand_computation() -> None:
    m = create_attn("eca", 128).eval()
    x = _x(2, 128, 5, 5)
    w = m.conv.weight[0, 0]  # [k]
    k = w.numel()
    s = F.pad(x.mean((2, 3)), (k // 2, k // 2))  # zero-padded channel descriptor
    a = torch.stack([(s[:, c : c + k] * w).sum(1) for c in range(128)], 1)  # 1-D conv across neighbouring channels
    torch.testing.assert_close(m(x), x * torch.sigmoid(a)[:, :, None, None])


def test_sk_selects_between_a_3x3_and_a_dilated_3x3_with_softmax() -> None:
    m = create_attn("sk", 16, min_channels=4).eval()
    b3, b5 = m.branches
    assert b3.conv.kernel_size == b5.conv.kernel_size == (3, 3)
    assert b3.conv.dilation == (1, 1) and b5.conv.dilation == (2, 2)  # the "5×5" is a dilated 3×3
    x = _x(2, 16, 8, 8)
    u3, u5 = b3(x), b5(x)
    z = m.fc((u3 + u5).mean((2, 3), keepdim=True))
    a = torch.softmax(m.select(z).reshape(2, 2, 16, 1, 1), 1)
    torch.testing.assert_close(a.sum(1), torch.ones(2, 16, 1, 1))
    torch.testing.assert_close(m(x), a[:, 0] * u3 + a[:, 1] * u5)


def test_cbam_is_channel_then_spatial_with_avg_and_max() -> None:
    m = create_attn("cbam", 16, reduction=4).eval()
    x = _x(2, 16, 6, 6)
    mc = torch.sigmoid(m.channel.mlp(x.mean((2, 3), keepdim=True)) + m.channel.mlp(x.amax((2, 3), keepdim=True)))
    xc = x * mc
    ms = torch.sigmoid(
        m.spatial.norm(m.spatial.conv(torch.cat([xc.mean(1, keepdim=True), xc.amax(1, keepdim=True)], 1)))
    )
    assert m.spatial.conv.kernel_size == (7, 7)
    torch.testing.assert_close(m(x), xc * ms)


def test_danet_position_and_channel_attention_by_hand() -> None:
    x = _x(2, 16, 4, 3)
    n, c, hw = 2, 16, 12
    pam = create_attn("danet_pam", 16, gamma_init=0.7).eval()
    assert torch.equal(create_attn("danet_pam", 16)(x), x)  # gamma starts at 0: identity, as in the paper
    q, k, v = (conv(x).reshape(n, -1, hw) for conv in (pam.query, pam.key, pam.value))
    s = torch.softmax(torch.einsum("nci,ncj->nij", q, k), -1)  # s[i, j]: how much position i attends to j
    torch.testing.assert_close(pam(x), x + 0.7 * torch.einsum("ncj,nij->nci", v, s).reshape(x.shape))

    cam = create_attn("danet_cam", 16, gamma_init=0.3).eval()
    f = x.reshape(n, c, hw)
    e = f @ f.transpose(1, 2)
    a = torch.softmax(e.amax(-1, keepdim=True) - e, -1)
    torch.testing.assert_close(cam(x), x + 0.3 * (a @ f).reshape(x.shape))

    dual = create_attn("danet", 16, gamma_init=0.5).eval()
    torch.testing.assert_close(dual(x), dual.pam(x) + dual.cam(x) - x)


def test_nonlocal_embedded_gaussian_by_hand() -> None:
    x = _x(2, 8, 4, 4)
    assert torch.equal(create_attn("nonlocal", 8).eval()(x), x)  # zero-init output BN: identity at start
    m = create_attn("nonlocal", 8, zero_init=False).eval()
    th, ph, g = (conv(x).flatten(2) for conv in (m.theta, m.phi, m.g))  # [N, C/2, HW]
    f = torch.softmax(th.transpose(1, 2) @ ph, -1)  # f(x_i, x_j) = exp(θ_i·φ_j) / Σ_j
    y = (f @ g.transpose(1, 2)).transpose(1, 2).reshape(2, 4, 4, 4)
    torch.testing.assert_close(m(x), x + m.norm(m.out(y)))


def test_mhsa_equals_torch_multihead_attention() -> None:
    dim, heads = 32, 4
    ours = MultiHeadSelfAttention(dim, heads).eval()
    ref = nn.MultiheadAttention(dim, heads, batch_first=True).eval()
    with torch.no_grad():
        ref.in_proj_weight.copy_(ours.qkv.weight)
        ref.in_proj_bias.copy_(ours.qkv.bias)
        ref.out_proj.weight.copy_(ours.proj.weight)
        ref.out_proj.bias.copy_(ours.proj.bias)
    t = _x(3, 10, dim)
    torch.testing.assert_close(ours(t), ref(t, t, t, need_weights=False)[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["mhsa", "transformer", "danet_pam", "nonlocal"])
def test_global_attention_is_equivariant_to_spatial_permutation(name: str) -> None:
    # no positional term: permuting the H·W positions permutes the output the same way
    kw = {"gamma_init": 0.5} if name == "danet_pam" else ({"zero_init": False} if name == "nonlocal" else {})
    m = create_attn(name, 16, **kw).eval()
    x = _x(1, 16, 4, 4)
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(1))
    xp = x.flatten(2)[:, :, perm].reshape(x.shape)
    torch.testing.assert_close(m(xp), m(x).flatten(2)[:, :, perm].reshape(x.shape), atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- init


def test_kaiming_normal_fan_in_std() -> None:
    layer = nn.Linear(1024, 2048)
    init_weights(layer, "kaiming_normal", mode="fan_in", nonlinearity="relu")
    expected = math.sqrt(2.0 / 1024)
    assert abs(layer.weight.std().item() - expected) / expected < 0.05
    assert torch.count_nonzero(layer.bias) == 0


def test_kaiming_normal_fan_out_on_conv_and_leaky_slope() -> None:
    conv = nn.Conv2d(64, 256, 3)
    init_weights(conv, "kaiming_normal", mode="fan_out", nonlinearity="leaky_relu", a=0.2)
    fan_out = 256 * 9
    expected = math.sqrt(2.0 / (1 + 0.2**2)) / math.sqrt(fan_out)
    assert abs(conv.weight.std().item() - expected) / expected < 0.05


def test_kaiming_uniform_and_xavier_bounds() -> None:
    lin = nn.Linear(1000, 500)
    init_weights(lin, "kaiming_uniform", mode="fan_in", nonlinearity="relu")
    bound = math.sqrt(2.0) * math.sqrt(3.0 / 1000)
    assert lin.weight.abs().max().item() <= bound
    assert abs(lin.weight.std().item() - bound / math.sqrt(3)) / (bound / math.sqrt(3)) < 0.05
    init_weights(lin, "xavier_uniform", gain=2.0)
    xb = 2.0 * math.sqrt(6.0 / 1500)
    assert lin.weight.abs().max().item() <= xb and lin.weight.abs().max().item() > 0.95 * xb
    init_weights(lin, "xavier_normal", gain=0.5)
    xs = 0.5 * math.sqrt(2.0 / 1500)
    assert abs(lin.weight.std().item() - xs) / xs < 0.05


def test_init_resets_norms_and_rejects_bad_names() -> None:
    m = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8))
    with torch.no_grad():
        m[1].weight.fill_(3.0)
    init_weights(m, "xavier_uniform")
    assert torch.equal(m[1].weight, torch.ones(8)) and torch.equal(m[1].bias, torch.zeros(8))
    with pytest.raises(UnknownNameError, match="expected one of: xavier_uniform"):
        init_weights(m, "orthogonal")
    with pytest.raises(ConfigError, match="fan_in"):
        init_weights(m, "kaiming_normal", mode="fan_avg")


# ---------------------------------------------------------------- export: ONNX Runtime + OpenVINO

EXPORTS = [("torchscript", 17), ("torchscript", 18), ("dynamo", 18)]


def _check(m: nn.Module, x: torch.Tensor, tmp_path, exporter: str, opset: int) -> dict:
    from edgecv.export.check import check_module

    res = check_module(m, x, tmp_path, exporter, opset)
    assert res["export"]["ok"], res["export"]["error"]
    for rt in ("onnxruntime", "openvino"):
        assert res[rt]["ok"], f"{rt}: {res[rt]['error']}"
        with torch.no_grad():
            scale = max(1.0, float(m(x).abs().max()))
        assert res[rt]["max_abs"] <= 1e-4 * scale
    return res


@pytest.mark.onnxruntime
@pytest.mark.openvino
@pytest.mark.parametrize("exporter,opset", EXPORTS)
@pytest.mark.parametrize("name", ALL_ATTN)
def test_attention_exports_and_runs(name: str, exporter: str, opset: int, tmp_path) -> None:
    torch.manual_seed(0)
    # non-zero gammas / output BN, so the attention path is part of the compared output
    kw = {"gamma_init": 0.5} if name.startswith("danet") else ({"zero_init": False} if name == "nonlocal" else {})
    m = create_attn(name, 16, **kw).eval()
    _check(m, _x(1, 16, 8, 6), tmp_path, exporter, opset)


@pytest.mark.onnxruntime
@pytest.mark.openvino
@pytest.mark.parametrize("tokens,dim,heads", [(4, 128, 4), (4, 16, 4), (9, 18, 9)])
def test_mhsa_tokens_equal_heads_on_openvino(tokens: int, dim: int, heads: int, tmp_path) -> None:
    # regression: the fused 5-D qkv reshape/permute was miscompiled by OpenVINO 2026.4 when T == heads
    torch.manual_seed(0)
    _check(MultiHeadSelfAttention(dim, heads).eval(), _x(1, tokens, dim), tmp_path, "torchscript", 17)


@pytest.mark.onnxruntime
@pytest.mark.openvino
@pytest.mark.parametrize("norm", sorted(set(NORMS.names()) - {"none"}))
def test_norms_export_and_run(norm: str, tmp_path) -> None:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 12, 3, padding=1), create_norm(norm, 12)).eval()
    from edgecv.export.check import randomize_norm_stats

    randomize_norm_stats(m)
    _check(m, _x(2, 3, 8, 8), tmp_path, "torchscript", 17)


@pytest.mark.onnxruntime
@pytest.mark.openvino
@pytest.mark.parametrize("kind", ["standard", "group", "depthwise", "dw_separable", "dilated"])
def test_convs_export_and_run(kind: str, tmp_path) -> None:
    torch.manual_seed(0)
    m = create_conv(kind, 8, 8, 3, stride=2).eval()
    _check(m, _x(1, 8, 12, 12), tmp_path, "dynamo", 18)
