"""Exact pass ``remove_dropout``: dropout is the identity in eval mode."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgecv.rewrite.base import GraphPass, finish_graph, register_pass

if TYPE_CHECKING:
    import torch
    from torch import fx, nn


def _dropout_types() -> tuple[type, ...]:
    from torch import nn

    return (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)


def _is_functional_dropout(node: fx.Node) -> bool:
    import torch.nn.functional as F

    fns = (F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout, F.feature_alpha_dropout)
    if node.op != "call_function" or node.target not in fns:
        return False
    training = node.kwargs.get("training", node.args[2] if len(node.args) > 2 else True)
    return training is False  # training=True is a real random op even in eval mode: leave it (certificate would fail)


def _bypass_fx(gm: fx.GraphModule, types: tuple[type, ...], functional_dropout: bool = False) -> int:
    modules = dict(gm.named_modules())
    removed = 0
    for node in list(gm.graph.nodes):
        hit = node.op == "call_module" and isinstance(modules.get(node.target), types) and len(node.args) == 1
        hit = hit or (functional_dropout and _is_functional_dropout(node))
        if hit and node.args and hasattr(node.args[0], "op"):
            node.replace_all_uses_with(node.args[0])
            gm.graph.erase_node(node)
            removed += 1
    finish_graph(gm)
    return removed


@register_pass("remove_dropout", exact=True, description="remove dropout (identity in eval mode)")
class RemoveDropout(GraphPass):
    """Drop Dropout modules and ``F.dropout(..., training=False)`` calls (identity in eval mode)."""

    walk_note = "dropout replaced by nn.Identity"

    def rewrite_graph(self, gm: fx.GraphModule, sample: torch.Tensor) -> int:
        return _bypass_fx(gm, _dropout_types(), functional_dropout=True)

    def rewrite_modules(self, model: nn.Module, sample: torch.Tensor) -> int:
        from torch import nn

        n = 0
        for name, m in list(model.named_modules()):
            for child_name, child in list(m.named_children()):
                if isinstance(child, _dropout_types()):
                    setattr(m, child_name, nn.Identity())
                    n += 1
        return n
