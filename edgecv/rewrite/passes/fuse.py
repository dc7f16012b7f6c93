"""Exact pass ``fuse``: fold BN, then fuse conv/linear with the activation that is its sole user."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from edgecv.rewrite.base import (
    METHOD_FX,
    METHOD_WALK,
    Pass,
    PassResult,
    call_counts,
    finish_graph,
    merge_adjacent,
    register_pass,
    set_submodule,
    try_trace,
)
from edgecv.rewrite.passes.fold_bn import _foldable_types, fold_bn_fx, fold_bn_walk

if TYPE_CHECKING:
    import torch
    from torch import fx, nn


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
    counts = call_counts(gm)
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
    def merge(layer: Any, act: Any) -> nn.Module | None:
        if isinstance(layer, _foldable_types()) and isinstance(act, _act_modules()):
            return make_fused(layer, copy.deepcopy(act))
        return None

    # skip the Identity fold_bn_walk leaves where the BN was
    return merge_adjacent(model, merge, skip_identity=True)


@register_pass(
    "fuse", exact=True, description="fold BN and fuse conv/linear + activation into one module (ConvReLU2d / ConvAct)"
)
class FuseConvBNAct(Pass):
    """Fold BN, then fuse each conv/linear with the activation that is its sole user into one module."""

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
