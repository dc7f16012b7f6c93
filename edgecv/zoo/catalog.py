"""The zoo's catalog: list, describe and build the registered models.

It sits above the families (:mod:`edgecv.zoo.families`, which register their variants in
:data:`edgecv.zoo.registry.MODELS` when imported) and loads them on first use, so ``import edgecv.zoo`` stays cheap.
"""

from __future__ import annotations

from typing import Any

from edgecv.zoo.registry import MODELS


def load_families() -> None:
    """Import every model family, which registers its variants (imports torch)."""
    import edgecv.zoo.families  # noqa: F401


def create_model(name: str, **kwargs: Any) -> Any:
    """Build a registered model (random init unless the variant loads weights). Unknown names list the choices."""
    load_families()
    return MODELS.get(name)(**kwargs)


def model_cfg(name: str) -> dict[str, Any]:
    """A variant's default config (:func:`edgecv.zoo.registry.default_cfg`); unknown names list the choices."""
    load_families()
    MODELS.get(name)
    return MODELS.meta(name)


def list_models(task: str | None = None, include_tiny: bool = True) -> list[str]:
    """Registered variant names, optionally of one task and without the tiny test variants."""
    load_families()
    return MODELS.filter(lambda n, m: (task is None or m["task"] == task) and (include_tiny or not m["tiny"]))
