"""Lossy pass ``dw_conv``: a dense kxk conv → depthwise kxk + pointwise 1x1 (low-rank split init)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgecv.rewrite.base import METHOD_WALK, Pass, PassResult, conv_like, plain_conv2d, register_pass, replace_children

if TYPE_CHECKING:
    import torch
    from torch import nn


# --------------------------------------------------------------------------------------------- dw_conv
def depthwise_separable(conv: Any) -> nn.Module:
    """``Sequential(depthwise kxk, pointwise 1x1)`` initialised with the best rank-1 split of each input channel's
    ``(out, k*k)`` weight slice (SVD), so ``pw[o, i] * dw[i]`` approximates ``W[o, i]``."""
    import torch
    from torch import nn

    w = conv.weight.detach().double()
    o, i, kh, kw = w.shape
    m = w.permute(1, 0, 2, 3).reshape(i, o, kh * kw)
    u, s, vh = torch.linalg.svd(m, full_matrices=False)
    root = s[:, 0].sqrt()
    dw_w = (vh[:, 0, :] * root[:, None]).reshape(i, 1, kh, kw)
    pw_w = (u[:, :, 0] * root[:, None]).t().reshape(o, i, 1, 1)
    dw = conv_like(conv, i, i, groups=i, bias=False)
    pw = nn.Conv2d(i, o, 1, bias=conv.bias is not None)
    dtype = conv.weight.dtype
    dw.weight = nn.Parameter(dw_w.to(dtype))
    pw.weight = nn.Parameter(pw_w.to(dtype))
    if conv.bias is not None:
        pw.bias = nn.Parameter(conv.bias.detach().clone())
    return nn.Sequential(dw, pw).to(conv.weight.device)


@register_pass(
    "dw_conv", exact=False, description="conv -> depthwise-separable (depthwise kxk + pointwise 1x1), SVD rank-1 init"
)
class DepthwiseSeparable(Pass):
    """conv kxk (groups=1, k>1) → depthwise kxk + pointwise 1x1."""

    def __init__(self, min_channels: int = 4) -> None:
        super().__init__()
        self.min_channels = min_channels  # RGB stems stay full convs (as in MobileNet)

    def transform(self, model: nn.Module, sample: torch.Tensor) -> PassResult:
        def fn(_: str, m: Any) -> nn.Module | None:
            if plain_conv2d(m) and m.groups == 1 and max(m.kernel_size) > 1 and m.in_channels >= self.min_channels:
                return depthwise_separable(m)  # type: ignore[arg-type]
            return None

        done = replace_children(model, fn)
        return PassResult(
            model, METHOD_WALK, len(done), [f"kept convs with < {self.min_channels} input channels"] if done else []
        )
