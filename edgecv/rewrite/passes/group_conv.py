"""Lossy pass ``group_conv``: a dense conv → a grouped one (block-diagonal slice init)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgecv.errors import ConfigError
from edgecv.rewrite.base import METHOD_WALK, Pass, PassResult, conv_like, plain_conv2d, register_pass, replace_children

if TYPE_CHECKING:
    import torch
    from torch import nn


# --------------------------------------------------------------------------------------------- group_conv
def grouped(conv: Any, groups: int) -> nn.Conv2d:
    """The block-diagonal part of ``conv`` as a conv with ``groups`` groups."""
    import torch
    from torch import nn

    o, i = conv.out_channels, conv.in_channels
    new = conv_like(conv, i, o, groups=groups, bias=conv.bias is not None).to(conv.weight.device)
    w = conv.weight.detach()
    og, ig = o // groups, i // groups
    blocks = [w[g * og : (g + 1) * og, g * ig : (g + 1) * ig] for g in range(groups)]
    new.weight = nn.Parameter(torch.cat(blocks, 0).clone())
    if conv.bias is not None:
        new.bias = nn.Parameter(conv.bias.detach().clone())
    return new


@register_pass(
    "group_conv", exact=False, description="conv -> group conv with G groups (--groups), block-diagonal init"
)
class GroupConv(Pass):
    """conv (groups=1) → group conv with G groups, keeping the block-diagonal weights."""

    def __init__(self, groups: int = 2) -> None:
        super().__init__()
        if not isinstance(groups, int) or groups < 2:
            raise ConfigError(f"group_conv: expected groups to be an integer >= 2, found {groups!r}")
        self.groups = groups

    def transform(self, model: nn.Module, sample: torch.Tensor) -> PassResult:
        g = self.groups
        skipped: list[str] = []

        def fn(name: str, m: Any) -> nn.Module | None:
            if plain_conv2d(m) and m.groups == 1:
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
