"""Exact pass ``fold_bn``: fold BatchNorm into the preceding conv / linear / conv-transpose."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from edgecv.rewrite.base import GraphPass, call_counts, finish_graph, merge_adjacent, register_pass, set_submodule

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
    counts = call_counts(gm)
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
    return merge_adjacent(model, lambda layer, bn: fold_bn_into(layer, bn) if can_fold(layer, bn) else None)


@register_pass("fold_bn", exact=True, description="fold BatchNorm into the preceding conv/linear/conv-transpose")
class FoldBN(GraphPass):
    """Fold eval-mode BatchNorm into the preceding conv / linear / conv-transpose (only when the BN is that
    layer's sole user)."""

    walk_note = "folded only inside nn.Sequential"

    def rewrite_graph(self, gm: fx.GraphModule, sample: torch.Tensor) -> int:
        return fold_bn_fx(gm, sample)

    def rewrite_modules(self, model: nn.Module, sample: torch.Tensor) -> int:
        return fold_bn_walk(model)
