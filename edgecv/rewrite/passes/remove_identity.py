"""Exact pass ``remove_identity``: drop ``nn.Identity`` modules."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgecv.rewrite.base import (
    METHOD_FX,
    METHOD_WALK,
    Pass,
    PassResult,
    is_plain_sequential,
    register_pass,
    try_trace,
)
from edgecv.rewrite.passes.remove_dropout import _bypass_fx

if TYPE_CHECKING:
    import torch
    from torch import nn


@register_pass
class RemoveIdentity(Pass):
    """Drop ``nn.Identity`` modules from the graph (or from plain ``nn.Sequential``s when fx does not trace)."""

    name = "remove_identity"
    exact = True
    description = "remove nn.Identity modules"

    def transform(self, model: nn.Module, sample: torch.Tensor) -> PassResult:
        from torch import nn

        gm, why = try_trace(model)
        if gm is not None:
            return PassResult(gm, METHOD_FX, _bypass_fx(gm, (nn.Identity,)))
        n = 0
        for seq in list(model.modules()):
            if is_plain_sequential(seq):
                for key in [k for k, c in seq._modules.items() if isinstance(c, nn.Identity)]:
                    if len(seq._modules) > 1:  # an empty Sequential would fail on input
                        del seq._modules[key]
                        n += 1
        return PassResult(model, METHOD_WALK, n, [f"fx trace failed ({why}); removed only inside nn.Sequential"])
