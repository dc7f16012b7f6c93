"""Look up and run rewrite passes: :func:`get_pass`, :func:`list_passes`, :func:`apply_passes`.

This module sits above :mod:`edgecv.rewrite.base` (the :class:`~edgecv.rewrite.base.Pass` interface and the
:data:`~edgecv.rewrite.base.PASSES` registry) and :mod:`edgecv.rewrite.passes` (one file per built-in pass, each
registering itself when imported). Importing it imports the passes, which import no torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import edgecv.rewrite.passes  # noqa: F401 - importing the pass modules registers the built-in passes
from edgecv.errors import ConfigError
from edgecv.export.stats import count_params
from edgecv.rewrite.base import (
    PASSES,
    Pass,
    RewriteError,
    RewriteReport,
    compare_outputs,
    infer_sample,
    run_model,
)

if TYPE_CHECKING:
    import torch
    from torch import nn


def get_pass(name: str, **options: Any) -> Pass:
    """A pass instance by registered name; ``options`` go to its constructor (e.g. ``groups=4``)."""
    cls = PASSES.get(name)
    try:
        return cls(**options)
    except TypeError as exc:
        raise ConfigError(f"pass '{name}': bad options {sorted(options)} ({exc})") from exc


def list_passes() -> list[dict[str, Any]]:
    """Every registered pass: its name, ``exact`` and ``description``."""
    return [{"name": n, **PASSES.meta(n)} for n in PASSES.names()]


def apply_passes(
    model: nn.Module,
    names: list[str],
    sample: torch.Tensor | None,
    inplace: bool = False,
    options: dict[str, dict[str, Any]] | None = None,
) -> tuple[nn.Module, RewriteReport]:
    """Run the named passes in order; exact ones certify themselves, lossy ones report their drift.

    Args:
        model: the model, in eval mode.
        names: registered pass names, e.g. ``["fold_bn", "dw_conv"]``.
        sample: input batch used to certify/measure every pass (required when any pass is lossy).
        inplace: let the first pass change ``model`` instead of copying it.
        options: per-pass constructor options, e.g. ``{"group_conv": {"groups": 4}}``.

    Returns:
        the rewritten model and a :class:`RewriteReport` (per pass: exact, method, changes, max abs diff,
        cosine, params before/after; plus end-to-end drift).
    """
    options = options or {}
    unknown = set(options) - set(names)
    if unknown:
        raise ConfigError(f"options given for passes not in the list: {sorted(unknown)}; passes: {names}")
    passes = [get_pass(n, **options.get(n, {})) for n in names]  # resolve all names before doing any work
    if sample is None and any(not p.exact for p in passes):
        lossy = [p.name for p in passes if not p.exact]
        raise RewriteError(f"lossy passes {lossy} need a sample input to measure their drift; found sample=None")
    if sample is None:
        sample = infer_sample(model)
    ref = run_model(model, sample)
    report = RewriteReport(params_before=count_params(model))
    current = model
    for i, p in enumerate(passes):
        # later passes copy too: the float64 re-check of an exact pass needs its untouched input
        current, rep = p.run(current, sample, inplace=inplace and i == 0)
        report.passes.append(rep)
    diff = compare_outputs(ref, run_model(current, sample))
    report.params_after = count_params(current)
    report.max_abs, report.cosine, report.top1_agreement = diff.max_abs, diff.cosine, diff.top1_agreement
    return current, report
