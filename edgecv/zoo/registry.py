"""The model registry the families register into. A variant is a registered function ``fn(**kwargs) -> nn.Module``
(timm style), with its default config (task, input size, mean/std, family, tiny) stored as registry metadata beside
it.

This module imports no torch and no family: the families import it (``@register_model``). Listing, describing and
building models is :mod:`edgecv.zoo.catalog`, which loads the families first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from edgecv.registry import Registry

MODELS: Registry[Callable[..., Any]] = Registry("model")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def default_cfg(
    task: str = "classify",
    input_size: tuple[int, int, int] = (3, 224, 224),
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
    num_classes: int = 1000,
    family: str = "",
    tiny: bool = False,
    resize: str = "stretch",
    **extra: Any,
) -> dict[str, Any]:
    """A variant's defaults; the bundle contract is built from these."""
    return {
        "task": task,
        "input_size": tuple(input_size),
        "mean": tuple(mean),
        "std": tuple(std),
        "num_classes": num_classes,
        "family": family,
        "tiny": tiny,
        "resize": resize,
        **extra,
    }


def detector_cfg(family: str) -> dict[str, Any]:
    """The :func:`register_model` keywords every zoo detector shares: task ``detect``, pixels scaled to 0..1
    (``scale`` 1/255, no mean/std), letterbox resize; ``family`` names the detector family."""
    return {
        "task": "detect",
        "mean": (0.0, 0.0, 0.0),
        "std": (1.0, 1.0, 1.0),
        "resize": "letterbox",
        "scale": 1.0 / 255.0,
        "family": family,
    }


def register_model(name: str | None = None, **cfg: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register a variant function with its :func:`default_cfg` keywords."""

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        MODELS.register(name or fn.__name__, fn, **default_cfg(**cfg))
        return fn

    return deco


_M = TypeVar("_M")


def build_variant(variant: str, cls: Callable[..., _M], arch: dict[str, Any], **kwargs: Any) -> _M:
    """Instantiate a zoo variant: the caller's kwargs override the variant's arch (timm style), and arguments
    the class does not take are one :class:`ConfigError` line naming the variant."""
    from edgecv.errors import ConfigError

    try:
        return cls(**{**arch, **kwargs})
    except TypeError as exc:
        raise ConfigError(f"{variant}: bad arguments {sorted(kwargs)} ({exc})") from exc
