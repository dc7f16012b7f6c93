"""Lossy pass ``norm_to_bn``: Group/Layer/Instance norms → BatchNorm calibrated on the sample (per-channel least squares)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from edgecv.rewrite.base import METHOD_WALK, Pass, PassResult, register_pass, replace_children

if TYPE_CHECKING:
    import torch
    from torch import nn


# --------------------------------------------------------------------------------------------- norms
_NORM_NAME = re.compile(r"(Group|Layer|Instance|Switchable)Norm", re.IGNORECASE)


def is_non_bn_norm(m: Any) -> bool:
    """GroupNorm / LayerNorm / InstanceNorm / SwitchableNorm (torch or edgecv.zoo.layers, matched by class name)."""
    from torch import nn

    if isinstance(m, (nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)):
        return True
    return bool(_NORM_NAME.search(type(m).__name__))


def calibrated_bn(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-5) -> nn.BatchNorm2d:
    """A BatchNorm2d whose eval output is the per-channel least-squares affine fit of ``y`` on ``x``
    (``y_c ≈ a_c (x_c - mean x_c) + mean y_c``) over the sample's batch and spatial positions."""
    import torch
    from torch import nn

    c = x.shape[1]
    xs = x.detach().double().transpose(0, 1).reshape(c, -1)
    ys = y.detach().double().transpose(0, 1).reshape(c, -1)
    mx, my = xs.mean(1), ys.mean(1)
    var_x = ((xs - mx[:, None]) ** 2).mean(1)
    cov = ((xs - mx[:, None]) * (ys - my[:, None])).mean(1)
    slope = torch.where(var_x > 0, cov / var_x.clamp_min(1e-30), torch.zeros_like(var_x))
    bn: Any = nn.BatchNorm2d(c, eps=eps).eval()
    with torch.no_grad():
        bn.running_mean.copy_(mx)
        bn.running_var.copy_(var_x)
        bn.weight.copy_(slope * torch.sqrt(var_x + eps))
        bn.bias.copy_(my)
    return bn.to(x.device)


@register_pass(
    "norm_to_bn", exact=False, description="GN/LN/IN/SwitchableNorm -> BatchNorm2d, calibrated on the sample"
)
class NormToBN(Pass):
    """GroupNorm / LayerNorm / InstanceNorm / SwitchableNorm on NCHW tensors → BatchNorm2d (foldable into the
    conv), calibrated on the sample so the outputs stay as close as a per-channel affine map allows."""

    def transform(self, model: nn.Module, sample: torch.Tensor) -> PassResult:
        import torch

        seen: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        handles = []
        for name, m in model.named_modules():
            if is_non_bn_norm(m):

                def hook(mod: Any, inp: Any, out: Any, name: str = name) -> None:
                    if inp and isinstance(inp[0], torch.Tensor) and isinstance(out, torch.Tensor):
                        seen.setdefault(name, []).append((inp[0], out))

                handles.append(m.register_forward_hook(hook))
        try:
            with torch.no_grad():
                model(sample)
        finally:
            for h in handles:
                h.remove()
        skipped: list[str] = []

        def fn(name: str, m: Any) -> nn.Module | None:
            if not is_non_bn_norm(m):
                return None
            calls = seen.get(name, [])
            if len(calls) != 1 or calls[0][0].dim() != 4 or calls[0][0].shape != calls[0][1].shape:
                skipped.append(f"{name} ({'not called' if not calls else f'input {list(calls[0][0].shape)}'})")
                return None
            return calibrated_bn(*calls[0])

        done = replace_children(model, fn)
        notes = (
            [f"kept {len(skipped)} norms (only single-use NCHW norms map to BatchNorm2d): {', '.join(skipped[:5])}"]
            if skipped
            else []
        )
        return PassResult(model, METHOD_WALK, len(done), notes)
