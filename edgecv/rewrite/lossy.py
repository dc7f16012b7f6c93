"""Lossy passes: cheaper or quantization-friendlier structure that changes the outputs.

Each replaces modules with an initialisation chosen to keep the outputs close (low-rank split for
depthwise-separable, block-diagonal slice for group conv, per-channel least-squares calibration on the sample
for norm → BN, centre crop for stacked 3x3), reports the drift it causes and asks for fine-tuning.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from edgecv.errors import ConfigError
from edgecv.rewrite.base import METHOD_FX, METHOD_WALK, Pass, PassResult, finish_graph, register_pass, try_trace

if TYPE_CHECKING:
    import torch
    from torch import fx, nn


def replace_children(model: nn.Module, fn: Callable[[str, Any], nn.Module | None]) -> list[str]:
    """Replace every submodule for which ``fn(qualified_name, module)`` returns a module; do not descend into
    replacements. Returns the names replaced."""
    done: list[str] = []

    def visit(parent: nn.Module, prefix: str) -> None:
        for name, child in list(parent.named_children()):
            qual = f"{prefix}{name}"
            new = fn(qual, child)
            if new is not None:
                setattr(parent, name, new)
                done.append(qual)
            else:
                visit(child, qual + ".")

    visit(model, "")
    return done


def _plain_conv2d(m: Any) -> bool:
    from torch import nn

    return type(m) is nn.Conv2d


# --------------------------------------------------------------------------------------------- dw_conv
def depthwise_separable(conv: Any) -> nn.Module:
    """``Sequential(depthwise kxk, pointwise 1x1)`` initialised with the best rank-1 split of each input channel's
    ``(out, k*k)`` weight slice (SVD), so ``pw[o, i] * dw[i]`` approximates ``W[o, i]``."""
    import torch
    from torch import nn

    w = conv.weight.detach().double()
    o, i, kh, kw = w.shape
    m = w.permute(1, 0, 2, 3).reshape(i, o, kh * kw)
    u, s, vh = torch.linalg.svd(m, full_matrices=False)
    root = s[:, 0].sqrt()
    dw_w = (vh[:, 0, :] * root[:, None]).reshape(i, 1, kh, kw)
    pw_w = (u[:, :, 0] * root[:, None]).t().reshape(o, i, 1, 1)
    dw = nn.Conv2d(
        i,
        i,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        groups=i,
        bias=False,
        padding_mode=conv.padding_mode,
    )
    pw = nn.Conv2d(i, o, 1, bias=conv.bias is not None)
    dtype = conv.weight.dtype
    dw.weight = nn.Parameter(dw_w.to(dtype))
    pw.weight = nn.Parameter(pw_w.to(dtype))
    if conv.bias is not None:
        pw.bias = nn.Parameter(conv.bias.detach().clone())
    return nn.Sequential(dw, pw).to(conv.weight.device)


@register_pass
class DepthwiseSeparable(Pass):
    """conv kxk (groups=1, k>1) → depthwise kxk + pointwise 1x1."""

    name = "dw_conv"
    exact = False
    description = "conv -> depthwise-separable (depthwise kxk + pointwise 1x1), SVD rank-1 init"

    def __init__(self, min_channels: int = 4) -> None:
        super().__init__()
        self.min_channels = min_channels  # RGB stems stay full convs (as in MobileNet)

    def transform(self, model: nn.Module, sample: torch.Tensor) -> PassResult:
        def fn(_: str, m: Any) -> nn.Module | None:
            if _plain_conv2d(m) and m.groups == 1 and max(m.kernel_size) > 1 and m.in_channels >= self.min_channels:
                return depthwise_separable(m)  # type: ignore[arg-type]
            return None

        done = replace_children(model, fn)
        return PassResult(
            model, METHOD_WALK, len(done), [f"kept convs with < {self.min_channels} input channels"] if done else []
        )


# --------------------------------------------------------------------------------------------- group_conv
def grouped(conv: Any, groups: int) -> nn.Conv2d:
    """The block-diagonal part of ``conv`` as a conv with ``groups`` groups."""
    import torch
    from torch import nn

    o, i = conv.out_channels, conv.in_channels
    new = nn.Conv2d(
        i,
        o,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        groups=groups,
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
    ).to(conv.weight.device)
    w = conv.weight.detach()
    og, ig = o // groups, i // groups
    blocks = [w[g * og : (g + 1) * og, g * ig : (g + 1) * ig] for g in range(groups)]
    new.weight = nn.Parameter(torch.cat(blocks, 0).clone())
    if conv.bias is not None:
        new.bias = nn.Parameter(conv.bias.detach().clone())
    return new


@register_pass
class GroupConv(Pass):
    """conv (groups=1) → group conv with G groups, keeping the block-diagonal weights."""

    name = "group_conv"
    exact = False
    description = "conv -> group conv with G groups (--groups), block-diagonal init"

    def __init__(self, groups: int = 2) -> None:
        super().__init__()
        if not isinstance(groups, int) or groups < 2:
            raise ConfigError(f"group_conv: expected groups to be an integer >= 2, found {groups!r}")
        self.groups = groups

    def transform(self, model: nn.Module, sample: torch.Tensor) -> PassResult:
        g = self.groups
        skipped: list[str] = []

        def fn(name: str, m: Any) -> nn.Module | None:
            if _plain_conv2d(m) and m.groups == 1:
                if m.in_channels % g == 0 and m.out_channels % g == 0:
                    return grouped(m, g)  # type: ignore[arg-type]
                skipped.append(name)
            return None

        done = replace_children(model, fn)
        notes = (
            [f"skipped {len(skipped)} convs whose channels are not divisible by {g}: {', '.join(skipped[:5])}"]
            if skipped
            else []
        )
        return PassResult(model, METHOD_WALK, len(done), notes)


# --------------------------------------------------------------------------------------------- activations
def _smooth_act_types() -> tuple[type, ...]:
    from torch import nn

    return (nn.SiLU, nn.GELU, nn.Hardswish, nn.Mish)


def _functional_smooth(node: fx.Node) -> bool:
    import torch
    import torch.nn.functional as F

    if node.op == "call_function":
        return node.target in (F.silu, F.gelu, F.hardswish, F.mish, torch.nn.functional.silu)
    return False


class _ActSwap(Pass):
    exact = False
    target: str = "relu"

    def transform(self, model: nn.Module, sample: torch.Tensor) -> PassResult:
        import torch.nn.functional as F
        from torch import nn

        make = nn.ReLU if self.target == "relu" else nn.ReLU6
        done = replace_children(model, lambda _n, m: make() if isinstance(m, _smooth_act_types()) else None)
        method, n_fx = METHOD_WALK, 0
        gm, _why = try_trace(model)
        if gm is not None and any(_functional_smooth(n) for n in gm.graph.nodes):
            fn = F.relu if self.target == "relu" else F.relu6
            for node in list(gm.graph.nodes):
                if _functional_smooth(node):
                    with gm.graph.inserting_before(node):
                        new = gm.graph.call_function(fn, (node.args[0],))
                    node.replace_all_uses_with(new)
                    gm.graph.erase_node(node)
                    n_fx += 1
            model, method = finish_graph(gm), f"{METHOD_WALK} + {METHOD_FX}"
        return PassResult(model, method, len(done) + n_fx)


@register_pass
class ActToReLU(_ActSwap):
    """SiLU / GELU / Hardswish / Mish → ReLU (modules, and functional calls where fx traces)."""

    name = "act_relu"
    description = "SiLU/GELU/Hardswish/Mish -> ReLU"
    target = "relu"


@register_pass
class ActToReLU6(_ActSwap):
    """SiLU / GELU / Hardswish / Mish → ReLU6 (bounded: friendlier activation ranges for INT8)."""

    name = "act_relu6"
    description = "SiLU/GELU/Hardswish/Mish -> ReLU6"
    target = "relu6"


# --------------------------------------------------------------------------------------------- norms
_NORM_NAME = re.compile(r"(Group|Layer|Instance|Switchable)Norm", re.IGNORECASE)


def is_non_bn_norm(m: Any) -> bool:
    """GroupNorm / LayerNorm / InstanceNorm / SwitchableNorm (torch or edgecv.zoo.layers, matched by class name)."""
    from torch import nn

    if isinstance(m, (nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)):
        return True
    return bool(_NORM_NAME.search(type(m).__name__))


def calibrated_bn(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-5) -> nn.BatchNorm2d:
    """A BatchNorm2d whose eval output is the per-channel least-squares affine fit of ``y`` on ``x``
    (``y_c ≈ a_c (x_c - mean x_c) + mean y_c``) over the sample's batch and spatial positions."""
    import torch
    from torch import nn

    c = x.shape[1]
    xs = x.detach().double().transpose(0, 1).reshape(c, -1)
    ys = y.detach().double().transpose(0, 1).reshape(c, -1)
    mx, my = xs.mean(1), ys.mean(1)
    var_x = ((xs - mx[:, None]) ** 2).mean(1)
    cov = ((xs - mx[:, None]) * (ys - my[:, None])).mean(1)
    slope = torch.where(var_x > 0, cov / var_x.clamp_min(1e-30), torch.zeros_like(var_x))
    bn: Any = nn.BatchNorm2d(c, eps=eps).eval()
    with torch.no_grad():
        bn.running_mean.copy_(mx)
        bn.running_var.copy_(var_x)
        bn.weight.copy_(slope * torch.sqrt(var_x + eps))
        bn.bias.copy_(my)
    return bn.to(x.device)


@register_pass
class NormToBN(Pass):
    """GroupNorm / LayerNorm / InstanceNorm / SwitchableNorm on NCHW tensors → BatchNorm2d (foldable into the
    conv), calibrated on the sample so the outputs stay as close as a per-channel affine map allows."""

    name = "norm_to_bn"
    exact = False
    description = "GN/LN/IN/SwitchableNorm -> BatchNorm2d, calibrated on the sample"

    def transform(self, model: nn.Module, sample: torch.Tensor) -> PassResult:
        import torch

        seen: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        handles = []
        for name, m in model.named_modules():
            if is_non_bn_norm(m):

                def hook(mod: Any, inp: Any, out: Any, name: str = name) -> None:
                    if inp and isinstance(inp[0], torch.Tensor) and isinstance(out, torch.Tensor):
                        seen.setdefault(name, []).append((inp[0], out))

                handles.append(m.register_forward_hook(hook))
        try:
            with torch.no_grad():
                model(sample)
        finally:
            for h in handles:
                h.remove()
        skipped: list[str] = []

        def fn(name: str, m: Any) -> nn.Module | None:
            if not is_non_bn_norm(m):
                return None
            calls = seen.get(name, [])
            if len(calls) != 1 or calls[0][0].dim() != 4 or calls[0][0].shape != calls[0][1].shape:
                skipped.append(f"{name} ({'not called' if not calls else f'input {list(calls[0][0].shape)}'})")
                return None
            return calibrated_bn(*calls[0])

        done = replace_children(model, fn)
        notes = (
            [f"kept {len(skipped)} norms (only single-use NCHW norms map to BatchNorm2d): {', '.join(skipped[:5])}"]
            if skipped
            else []
        )
        return PassResult(model, METHOD_WALK, len(done), notes)


# --------------------------------------------------------------------------------------------- hard sigmoid
_GATE_NAME = re.compile(r"SE|Squeeze|Excit|CBAM|SK|Attention|Attn|Gate|Selective", re.IGNORECASE)


def _feeds_mul(node: fx.Node, depth: int = 3) -> bool:
    """True when the node's value reaches a multiplication (possibly through view/expand/reshape)."""
    import torch

    passthrough = {"view", "expand", "expand_as", "reshape", "unsqueeze", "flatten", "contiguous"}
    for u in node.users:
        if u.op == "call_function" and u.target in (operator.mul, torch.mul, operator.imul):
            return True
        if u.op == "call_method" and u.target == "mul":
            return True
        if depth > 0 and u.op == "call_method" and u.target in passthrough and _feeds_mul(u, depth - 1):
            return True
    return False


def _is_sigmoid(node: Any, modules: dict[str, Any]) -> bool:
    import torch
    from torch import nn

    if node.op == "call_module":
        return isinstance(modules.get(node.target), nn.Sigmoid)
    if node.op == "call_function":
        return node.target in (torch.sigmoid, torch.nn.functional.sigmoid)
    return node.op == "call_method" and node.target == "sigmoid"


@register_pass
class HardSigmoidGates(Pass):
    """Sigmoid gates (SE / CBAM / SK: a sigmoid whose output multiplies a feature map) → hard-sigmoid."""

    name = "hard_sigmoid"
    exact = False
    description = "sigmoid gates in SE/CBAM/SK -> hard-sigmoid"

    def transform(self, model: nn.Module, sample: torch.Tensor) -> PassResult:
        import torch.nn.functional as F
        from torch import nn

        gm, why = try_trace(model)
        if gm is not None:
            modules = dict(gm.named_modules())
            n = 0
            for node in list(gm.graph.nodes):
                if _is_sigmoid(node, modules) and node.args and _feeds_mul(node):
                    with gm.graph.inserting_before(node):
                        new = gm.graph.call_function(F.hardsigmoid, (node.args[0],))
                    node.replace_all_uses_with(new)
                    gm.graph.erase_node(node)
                    n += 1
            return PassResult(finish_graph(gm), METHOD_FX, n)

        def fn(name: str, m: Any) -> nn.Module | None:
            return nn.Hardsigmoid() if isinstance(m, nn.Sigmoid) and _in_gate(model, name) else None

        done = replace_children(model, fn)
        return PassResult(
            model,
            METHOD_WALK,
            len(done),
            [f"fx trace failed ({why}); replaced nn.Sigmoid inside attention-named modules only"],
        )


def _in_gate(model: nn.Module, name: str) -> bool:
    parts = name.split(".")
    for k in range(len(parts)):
        mod = model.get_submodule(".".join(parts[:k])) if k else model
        if _GATE_NAME.search(type(mod).__name__):
            return True
    return False


# --------------------------------------------------------------------------------------------- stacked 3x3
def stacked_3x3(conv: Any) -> nn.Module:
    """A kxk conv (k odd > 3, 'same' padding) → (k-1)/2 stacked 3x3 convs with the same receptive field.

    The first convs keep the input channels and start as identity (Dirac); the last carries the stride and the
    original kernel's centre 3x3, so before fine-tuning only the outer ring of the kernel is lost.
    """
    import torch
    from torch import nn

    k, g, i, o = conv.kernel_size[0], conv.groups, conv.in_channels, conv.out_channels
    n = (k - 1) // 2
    layers: list[nn.Module] = []
    for _ in range(n - 1):
        c = nn.Conv2d(i, i, 3, 1, 1, groups=g, bias=False)
        w = torch.zeros_like(c.weight)
        per = i // g
        for ch in range(i):
            w[ch, ch % per, 1, 1] = 1.0
        c.weight = nn.Parameter(w)
        layers.append(c)
    last = nn.Conv2d(i, o, 3, conv.stride, 1, groups=g, bias=conv.bias is not None)
    off = (k - 3) // 2
    last.weight = nn.Parameter(conv.weight.detach()[:, :, off : off + 3, off : off + 3].clone())
    if conv.bias is not None:
        last.bias = nn.Parameter(conv.bias.detach().clone())
    layers.append(last)
    return nn.Sequential(*layers).to(conv.weight.device)


@register_pass
class Stack3x3(Pass):
    """kxk conv with k > 3 → stacked 3x3 convs (k=5 → two, k=7 → three)."""

    name = "stack_3x3"
    exact = False
    description = "conv kernel > 3 -> stacked 3x3 convs (5 -> 2, 7 -> 3)"

    def transform(self, model: nn.Module, sample: torch.Tensor) -> PassResult:
        skipped: list[str] = []

        def fn(name: str, m: Any) -> nn.Module | None:
            if not _plain_conv2d(m) or max(m.kernel_size) <= 3:
                return None
            k = m.kernel_size
            if (
                k[0] != k[1]
                or k[0] % 2 == 0
                or m.dilation != (1, 1)
                or m.padding != (k[0] // 2,) * 2
                or m.padding_mode != "zeros"
            ):
                skipped.append(name)
                return None
            return stacked_3x3(m)  # type: ignore[arg-type]

        done = replace_children(model, fn)
        notes = (
            [
                f"kept {len(skipped)} convs (non-square/even kernel, dilation or non-'same' padding): "
                f"{', '.join(skipped[:5])}"
            ]
            if skipped
            else []
        )
        return PassResult(model, METHOD_WALK, len(done), notes)
