"""Exact pass ``remove_identity``: drop ``nn.Identity`` modules."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgecv.rewrite.base import GraphPass, is_plain_sequential, register_pass
from edgecv.rewrite.passes.remove_dropout import _bypass_fx

if TYPE_CHECKING:
    import torch
    from torch import fx, nn


@register_pass("remove_identity", exact=True, description="remove nn.Identity modules")
class RemoveIdentity(GraphPass):
    """Drop ``nn.Identity`` modules from the graph (or from plain ``nn.Sequential``s when fx does not trace)."""

    walk_note = "removed only inside nn.Sequential"

    def rewrite_graph(self, gm: fx.GraphModule, sample: torch.Tensor) -> int:
        from torch import nn

        return _bypass_fx(gm, (nn.Identity,))

    def rewrite_modules(self, model: nn.Module, sample: torch.Tensor) -> int:
        from torch import nn

        n = 0
        for seq in list(model.modules()):
            if is_plain_sequential(seq):
                for key in [k for k, c in seq._modules.items() if isinstance(c, nn.Identity)]:
                    if len(seq._modules) > 1:  # an empty Sequential would fail on input
                        del seq._modules[key]
                        n += 1
        return n
