"""Size of a torch model: parameters and forward FLOPs. One owner for the zoo check (:mod:`edgecv.export.check`)
and the rewrite report (:mod:`edgecv.rewrite`)."""

from __future__ import annotations

import warnings
from typing import Any

from edgecv._lazy import lazy_import


def count_params(model: Any) -> int:
    """Number of parameters (buffers such as BN running stats excluded, as torchvision counts)."""
    return int(sum(p.numel() for p in model.parameters()))


def count_flops(model: Any, sample: Any) -> int:
    """Forward FLOPs on ``sample`` counted by :class:`torch.utils.flop_counter.FlopCounterMode`: a multiply-add is
    2 FLOPs (conv, matmul, attention); element-wise ops (norms, activations, pooling) are not counted."""
    torch = lazy_import("torch")
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model(sample)
    return int(counter.get_total_flops())
