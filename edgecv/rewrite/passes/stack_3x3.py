"""Lossy pass ``stack_3x3``: a kxk conv (k odd > 3) → stacked 3x3 convs (centre-crop init)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgecv.rewrite.base import METHOD_WALK, Pass, PassResult, plain_conv2d, register_pass, replace_children

if TYPE_CHECKING:
    import torch
    from torch import nn


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


@register_pass("stack_3x3", exact=False, description="conv kernel > 3 -> stacked 3x3 convs (5 -> 2, 7 -> 3)")
class Stack3x3(Pass):
    """kxk conv with k > 3 → stacked 3x3 convs (k=5 → two, k=7 → three)."""

    def transform(self, model: nn.Module, sample: torch.Tensor) -> PassResult:
        skipped: list[str] = []

        def fn(name: str, m: Any) -> nn.Module | None:
            if not plain_conv2d(m) or max(m.kernel_size) <= 3:
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
