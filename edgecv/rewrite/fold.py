"""Exact passes: fold BatchNorm into the preceding conv / linear / conv-transpose, and fuse conv-bn-activation."""

from __future__ import annotations

import copy
import itertools
from typing import TYPE_CHECKING, Any

from edgecv.rewrite.base import (
    METHOD_FX,
    METHOD_WALK,
    Pass,
    PassResult,
    finish_graph,
    is_plain_sequential,
    register_pass,
    set_submodule,
    try_trace,
)

if TYPE_CHECKING:
    import torch
    from torch import fx, nn


def _bn_types() -> tuple[type, ...]:
    from torch import nn

    return (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _foldable_types() -> tuple[type, ...]:
    from torch import nn

    return (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Linear)


def can_fold(layer: Any, bn: Any) -> bool:
    """True when ``bn`` (eval mode, running stats) can be folded into ``layer``."""
    from torch import nn

    layer_: Any = layer
    bn_: Any = bn
    if not isinstance(layer, _foldable_types()) or not isinstance(bn, _bn_types()):
        return False
    if bn_.running_mean is None or bn_.running_var is None:  # track_running_stats=False: batch stats even in eval
        return False
    out = layer_.out_features if isinstance(layer_, nn.Linear) else layer_.out_channels
    return bool(out == bn_.num_features)


def fold_bn_into(layer: Any, bn: Any) -> nn.Module:
    """A copy of ``layer`` with the eval-mode ``bn`` that follows it folded into its weight and bias.

    Handles Conv1/2/3d (any groups, dilation, stride), ConvTranspose1/2/3d (whose weight is
    ``(in, out/groups, *k)``, so the per-output-channel scale is applied per group) and Linear. The arithmetic
    runs in float64 so the folded float32 weights carry only one rounding.
    """
    import torch
    from torch import nn

    w = layer.weight.detach().double()
    out_ch = bn.num_features
    b = layer.bias.detach().double() if layer.bias is not None else torch.zeros(out_ch, dtype=torch.float64)
    mean, var = bn.running_mean.double(), bn.running_var.double()
    gamma = bn.weight.detach().double() if bn.weight is not None else torch.ones(out_ch, dtype=torch.float64)
    beta = bn.bias.detach().double() if bn.bias is not None else torch.zeros(out_ch, dtype=torch.float64)
    scale = gamma / torch.sqrt(var + bn.eps)
    if isinstance(layer, nn.modules.conv._ConvTransposeNd):
        g = layer.groups
        kdims = w.shape[2:]
        wg = w.reshape(g, w.shape[0] // g, w.shape[1], *kdims)
        new_w = (wg * scale.reshape(g, 1, w.shape[1], *([1] * len(kdims)))).reshape(w.shape)
    else:
        new_w = w * scale.reshape(-1, *([1] * (w.dim() - 1)))
    new_b = (b - mean) * scale + beta
    fused = copy.deepcopy(layer)
    dtype = layer.weight.dtype
    fused.weight = nn.Parameter(new_w.to(dtype), requires_grad=layer.weight.requires_grad)
    fused.bias = nn.Parameter(new_b.to(dtype), requires_grad=layer.weight.requires_grad)
    return fused


def _call_counts(gm: fx.GraphModule) -> dict[str, int]:
    counts: dict[str, int] = {}
    for n in gm.graph.nodes:
        if n.op == "call_module":
            counts[n.target] = counts.get(n.target, 0) + 1
    return counts


def _shape_prop(gm: fx.GraphModule, sample: torch.Tensor) -> bool:
    from torch.fx.passes.shape_prop import ShapeProp

    try:
        ShapeProp(gm).propagate(sample)
        return True
    except Exception:  # noqa: BLE001 - fx shape propagation raises many kinds; fall back to no shapes
        return False


def _out_rank(node: fx.Node) -> int | None:
    meta = node.meta.get("tensor_meta")
    shape = getattr(meta, "shape", None)
    return len(shape) if shape is not None else None


def fold_bn_fx(gm: fx.GraphModule, sample: torch.Tensor) -> int:
    """Fold every BN whose input is a conv/linear node used by nothing else. Returns the number folded."""
    from torch import nn

    _shape_prop(gm, sample)
    modules: dict[str, Any] = dict(gm.named_modules())
    counts = _call_counts(gm)
    folded = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not isinstance(modules.get(node.target), _bn_types()):
            continue
        if len(node.args) != 1 or node.kwargs:
            continue
        prev = node.args[0]
        if getattr(prev, "op", None) != "call_module" or len(prev.users) != 1:
            continue  # the conv output feeds something besides this BN: folding would change that user
        layer, bn = modules.get(prev.target), modules[node.target]
        if counts[prev.target] != 1 or counts[node.target] != 1 or not can_fold(layer, bn):
            continue  # a module called from two places cannot be changed for one of them
        if isinstance(layer, nn.Linear) and _out_rank(prev) != 2:
            continue  # BatchNorm1d on (N, L, C) normalises L, not the linear's features
        set_submodule(gm, prev.target, fold_bn_into(layer, bn))
        modules[prev.target] = gm.get_submodule(prev.target)
        node.replace_all_uses_with(prev)
        gm.graph.erase_node(node)
        folded += 1
    finish_graph(gm)
    return folded


def fold_bn_walk(model: nn.Module) -> int:
    """Module-walk fallback: fold (layer, BN) pairs that sit next to each other in plain ``nn.Sequential``s."""
    from torch import nn

    folded = 0
    for seq in list(model.modules()):
        if not is_plain_sequential(seq):
            continue
        keys = list(seq._modules)
        for a, b in itertools.pairwise(keys):
            layer, bn = seq._modules[a], seq._modules[b]  # type: Any, Any
            if can_fold(layer, bn):
                seq._modules[a] = fold_bn_into(layer, bn)
                seq._modules[b] = nn.Identity()
                folded += 1
    return folded


@register_pass
class FoldBN(Pass):
    """Fold eval-mode BatchNorm into the preceding conv / linear / conv-transpose (only when the BN is that
    layer's sole user)."""

    name = "fold_bn"
    exact = True
    description = "fold BatchNorm into the preceding conv/linear/conv-transpose"

    def transform(self, model: nn.Module, sample: torch.Tensor) -> PassResult:
        gm, why = try_trace(model)
        if gm is not None:
            return PassResult(gm, METHOD_FX, fold_bn_fx(gm, sample))
        n = fold_bn_walk(model)
        return PassResult(model, METHOD_WALK, n, [f"fx trace failed ({why}); folded only inside nn.Sequential"])


# --------------------------------------------------------------------------------------------- fuse
def _act_modules() -> tuple[type, ...]:
    from torch import nn

    return (
        nn.ReLU,
        nn.ReLU6,
        nn.SiLU,
        nn.Hardswish,
        nn.GELU,
        nn.Sigmoid,
        nn.Hardsigmoid,
        nn.LeakyReLU,
        nn.Mish,
        nn.Tanh,
        nn.Hardtanh,
        nn.ELU,
    )


def _functional_act(node: Any) -> nn.Module | None:
    """The module equivalent of a functional activation node (``F.relu(x)``, ``x.relu()``...), or None."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    if len(node.args) < 1:
        return None
    extra_args = node.args[1:]
    if node.op == "call_function":
        if node.target in (F.relu, torch.relu) and not extra_args:
            return nn.ReLU()
        if node.target is F.relu6 and not extra_args:
            return nn.ReLU6()
        if node.target is F.silu and not extra_args:
            return nn.SiLU()
        if node.target is F.hardswish and not extra_args:
            return nn.Hardswish()
        if node.target in (torch.sigmoid,) and not extra_args and not node.kwargs:
            return nn.Sigmoid()
        if node.target is F.gelu and not extra_args:
            return nn.GELU(approximate=node.kwargs.get("approximate", "none"))
    if node.op == "call_method" and node.target in ("relu", "sigmoid") and len(node.args) == 1 and not node.kwargs:
        return nn.ReLU() if node.target == "relu" else nn.Sigmoid()
    return None


def make_fused(layer: Any, act: Any) -> nn.Module:
    """One module computing ``act(layer(x))``: ``torch.ao.nn.intrinsic.ConvReLU{1,2,3}d`` / ``LinearReLU`` for ReLU
    (what the PyTorch quantization flow expects), else a ``ConvAct`` Sequential."""
    from torch import nn
    from torch.ao.nn import intrinsic as nni

    if type(act) is nn.ReLU:
        pairs = {
            nn.Conv1d: nni.ConvReLU1d,
            nn.Conv2d: nni.ConvReLU2d,
            nn.Conv3d: nni.ConvReLU3d,
            nn.Linear: nni.LinearReLU,
        }
        cls = pairs.get(type(layer))
        if cls is not None:
            return cls(layer, nn.ReLU())
    from edgecv.rewrite.modules import ConvAct

    return ConvAct(layer, act)


def fuse_act_fx(gm: fx.GraphModule) -> int:
    modules: dict[str, Any] = dict(gm.named_modules())
    counts = _call_counts(gm)
    fused = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not isinstance(modules.get(node.target), _foldable_types()):
            continue
        if counts[node.target] != 1 or len(node.users) != 1:
            continue
        user = next(iter(node.users))
        if user.args[:1] != (node,):
            continue
        act: Any = None
        if (
            user.op == "call_module"
            and isinstance(modules.get(user.target), _act_modules())
            and len(user.args) == 1
            and not user.kwargs
        ):
            act = copy.deepcopy(modules[user.target])
            if hasattr(act, "inplace"):
                act.inplace = False
        else:
            act = _functional_act(user)
        if act is None:
            continue
        set_submodule(gm, node.target, make_fused(modules[node.target], act))
        user.replace_all_uses_with(node)
        gm.graph.erase_node(user)
        fused += 1
    finish_graph(gm)
    return fused


def fuse_walk(model: nn.Module) -> int:
    from torch import nn

    fused = 0
    for seq in list(model.modules()):
        if not is_plain_sequential(seq):
            continue
        # skip the Identity fold_bn_walk leaves where the BN was
        keys = [k for k in seq._modules if not isinstance(seq._modules[k], nn.Identity)]
        for a, b in itertools.pairwise(keys):
            layer, act = seq._modules[a], seq._modules[b]  # type: Any, Any
            if isinstance(layer, _foldable_types()) and isinstance(act, _act_modules()):
                seq._modules[a] = make_fused(layer, copy.deepcopy(act))
                seq._modules[b] = nn.Identity()
                fused += 1
    return fused


@register_pass
class FuseConvBNAct(Pass):
    """Fold BN, then fuse each conv/linear with the activation that is its sole user into one module."""

    name = "fuse"
    exact = True
    description = "fold BN and fuse conv/linear + activation into one module (ConvReLU2d / ConvAct)"

    def transform(self, model: nn.Module, sample: torch.Tensor) -> PassResult:
        gm, why = try_trace(model)
        if gm is not None:
            folded = fold_bn_fx(gm, sample)
            fused = fuse_act_fx(gm)
            return PassResult(gm, METHOD_FX, folded + fused, [f"{folded} BN folded, {fused} activations fused"])
        folded = fold_bn_walk(model)
        fused = fuse_walk(model)
        return PassResult(
            model,
            METHOD_WALK,
            folded + fused,
            [f"fx trace failed ({why}); {folded} BN folded, {fused} activations fused in nn.Sequential"],
        )
