"""Orchestration over both tiers: open runners (torch included), and run a recipe end to end.

This is the only place that joins the build tier (zoo/export) with the runtime tier (backends/validate/bench).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgecv.backends import open_runner as _open_engine_runner

if TYPE_CHECKING:
    from edgecv.backends.base import Runner
    from edgecv.bundle import Bundle


def open_runner(bundle: Bundle, backend: str, precision: str = "fp32", device: str | None = None,
                threads: int | None = None, **kwargs: Any) -> Runner:
    """A runner for ``bundle`` on any backend. ``torch`` rebuilds the eager model from the bundle's recorded
    source (zoo name, file, checkpoint) — the build tier is imported only here, only for torch."""
    if backend == "torch":
        from edgecv.backends.torch import TorchRunner
        from edgecv.export.sources import load_model_from_manifest

        model = load_model_from_manifest(bundle.manifest)
        return TorchRunner.from_module(model, bundle.contract, precision=precision, device=device,
                                       threads=threads, **kwargs)
    return _open_engine_runner(bundle, backend, precision=precision, device=device, threads=threads, **kwargs)
