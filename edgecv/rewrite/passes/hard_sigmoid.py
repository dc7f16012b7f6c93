"""Lossy pass ``hard_sigmoid``: sigmoid gates (SE, attention) → hard sigmoid."""

from __future__ import annotations

import operator
import re
from typing import TYPE_CHECKING, Any

from edgecv.rewrite.base import GraphPass, finish_graph, register_pass, replace_children

if TYPE_CHECKING:
    import torch
    from torch import fx, nn


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


@register_pass("hard_sigmoid", exact=False, description="sigmoid gates in SE/CBAM/SK -> hard-sigmoid")
class HardSigmoidGates(GraphPass):
    """Sigmoid gates (SE / CBAM / SK: a sigmoid whose output multiplies a feature map) → hard-sigmoid."""

    walk_note = "replaced nn.Sigmoid inside attention-named modules only"

    def rewrite_graph(self, gm: fx.GraphModule, sample: torch.Tensor) -> int:
        import torch.nn.functional as F

        modules = dict(gm.named_modules())
        n = 0
        for node in list(gm.graph.nodes):
            if _is_sigmoid(node, modules) and node.args and _feeds_mul(node):
                with gm.graph.inserting_before(node):
                    new = gm.graph.call_function(F.hardsigmoid, (node.args[0],))
                node.replace_all_uses_with(new)
                gm.graph.erase_node(node)
                n += 1
        finish_graph(gm)
        return n

    def rewrite_modules(self, model: nn.Module, sample: torch.Tensor) -> int:
        from torch import nn

        def fn(name: str, m: Any) -> nn.Module | None:
            return nn.Hardsigmoid() if isinstance(m, nn.Sigmoid) and _in_gate(model, name) else None

        return len(replace_children(model, fn))


def _in_gate(model: nn.Module, name: str) -> bool:
    parts = name.split(".")
    for k in range(len(parts)):
        mod = model.get_submodule(".".join(parts[:k])) if k else model
        if _GATE_NAME.search(type(mod).__name__):
            return True
    return False
