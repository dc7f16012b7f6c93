"""Exact pass: re-parameterize multi-branch blocks (RepVGG 3x3 + 1x1 + identity-BN, ACNet-like sums) into one conv.

With fx, the pattern is found structurally: an ``add`` tree whose leaves are ``BN(conv(x))``, ``conv(x)``,
``BN(x)`` or ``x`` for the *same* ``x``, with centred odd kernels, equal stride/groups/channels. Without fx,
:class:`~edgecv.rewrite.modules.RepVGGBlock` instances are collapsed by their own method.
"""

from __future__ import annotations

import operator
from typing import TYPE_CHECKING, Any

from edgecv.rewrite.base import GraphPass, finish_graph, register_pass

if TYPE_CHECKING:
    import torch
    from torch import fx, nn


def _is_add(node: Any) -> bool:
    import torch

    return (
        getattr(node, "op", None) == "call_function"
        and node.target in (operator.add, torch.add)
        and len(node.args) == 2
        and not node.kwargs
    )


def _leaves(node: Any, root: Any) -> list[Any]:
    """Flatten an add tree; inner adds are only opened when nothing else uses them."""
    out: list[Any] = []
    for a in node.args:
        if _is_add(a) and len(a.users) == 1:
            out.extend(_leaves(a, root))
        else:
            out.append(a)
    return out


def _branch(leaf: Any, modules: dict[str, Any], counts: dict[str, int]) -> tuple[Any, Any, Any] | None:
    """(conv or None, bn or None, input node) for a leaf, or None if it is not a mergeable branch."""
    from torch import nn

    if not hasattr(leaf, "op"):
        return None

    def mod(n: Any) -> Any:
        return modules.get(n.target) if getattr(n, "op", None) == "call_module" and counts.get(n.target) == 1 else None

    def plain_conv(m: Any) -> bool:
        return (
            type(m) is nn.Conv2d
            and m.padding_mode == "zeros"
            and m.dilation == (1, 1)
            and m.kernel_size[0] == m.kernel_size[1]
            and m.kernel_size[0] % 2 == 1
            and m.padding == (m.kernel_size[0] // 2,) * 2
        )

    m = mod(leaf)
    if isinstance(m, nn.BatchNorm2d) and m.running_mean is not None and len(leaf.args) == 1:
        inner = leaf.args[0]
        c = mod(inner)
        if plain_conv(c) and len(inner.users) == 1 and len(inner.args) == 1:
            return c, m, inner.args[0]
        return None, m, inner
    if plain_conv(m) and len(leaf.args) == 1:
        return m, None, leaf.args[0]
    return None, None, leaf


def reparam_fx(gm: fx.GraphModule, sample: torch.Tensor) -> int:
    from edgecv.rewrite.base import call_counts
    from edgecv.rewrite.modules import merge_branches

    merged = 0
    for node in reversed(list(gm.graph.nodes)):
        # outer adds come first; an inner add is tried on its own only if its tree did not merge (else erased)
        if getattr(node, "_erased", False) or not _is_add(node):
            continue
        modules = dict(gm.named_modules())
        counts = call_counts(gm)
        leaves = _leaves(node, node)
        branches = [_branch(leaf, modules, counts) for leaf in leaves]
        if len(branches) < 2 or any(b is None for b in branches):
            continue
        xs = {id(b[2]) for b in branches}  # type: ignore[index]
        convs = [b[0] for b in branches if b[0] is not None]  # type: ignore[index]
        if len(xs) != 1 or not convs:
            continue
        c0 = convs[0]
        if any(
            c.stride != c0.stride
            or c.groups != c0.groups
            or c.in_channels != c0.in_channels
            or c.out_channels != c0.out_channels
            for c in convs
        ):
            continue
        has_identity = any(b[0] is None for b in branches)  # type: ignore[index]
        if has_identity and (c0.stride != (1, 1) or c0.in_channels != c0.out_channels):
            continue
        if any(
            b[0] is None and b[1] is not None and b[1].num_features != c0.out_channels  # type: ignore[index]
            for b in branches
        ):
            continue
        k = max(c.kernel_size[0] for c in convs)
        conv = merge_branches(
            [(b[0], b[1]) for b in branches],  # type: ignore[index]
            c0.in_channels,
            c0.out_channels,
            k,  # type: ignore
            c0.stride[0],
            c0.groups,
        )
        name = f"reparam_{merged}"
        while hasattr(gm, name):
            name += "_"
        gm.add_submodule(name, conv)
        x = branches[0][2]  # type: ignore[index]
        with gm.graph.inserting_before(node):
            new = gm.graph.call_module(name, (x,))
        node.replace_all_uses_with(new)
        gm.graph.erase_node(node)
        gm.graph.eliminate_dead_code()
        merged += 1
    finish_graph(gm)
    return merged


@register_pass(
    "reparam", exact=True, description="re-parameterize RepVGG-style 3x3 + 1x1 + identity branches into one 3x3 conv"
)
class Reparameterize(GraphPass):
    """Collapse multi-branch conv blocks (RepVGG-style) into one conv."""

    walk_note = "only RepVGGBlock modules collapsed"

    def rewrite_graph(self, gm: fx.GraphModule, sample: torch.Tensor) -> int:
        return reparam_fx(gm, sample)

    def rewrite_modules(self, model: nn.Module, sample: torch.Tensor) -> int:
        from edgecv.rewrite.modules import RepVGGBlock

        n = 0
        for m in model.modules():
            if isinstance(m, RepVGGBlock) and m.reparam is None:
                m.reparameterize()
                n += 1
        return n
