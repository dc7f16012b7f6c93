"""Lossy pass ``act_relu``: smooth activations (SiLU, GELU, Hardswish …) → ReLU."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgecv.rewrite.base import (
    METHOD_FX,
    METHOD_WALK,
    Pass,
    PassResult,
    finish_graph,
    register_pass,
    replace_children,
    try_trace,
)

if TYPE_CHECKING:
    import torch
    from torch import fx, nn


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


@register_pass("act_relu", description="SiLU/GELU/Hardswish/Mish -> ReLU")
class ActToReLU(_ActSwap):
    """SiLU / GELU / Hardswish / Mish → ReLU (modules, and functional calls where fx traces)."""

    target = "relu"
