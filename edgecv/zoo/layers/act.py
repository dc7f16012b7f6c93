"""Activations chosen by name (``create_act``), so a recipe can swap them without touching a model's code."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from edgecv.errors import ConfigError
from edgecv.registry import Registry

ACTS: Registry[Callable[..., nn.Module]] = Registry("activation")
ACTS.register("relu", nn.ReLU)
ACTS.register("relu6", nn.ReLU6)
ACTS.register("leaky_relu", nn.LeakyReLU)
ACTS.register("prelu", nn.PReLU)
ACTS.register("elu", nn.ELU)
ACTS.register("gelu", nn.GELU)
ACTS.register("silu", nn.SiLU)
ACTS.register("swish", nn.SiLU)
ACTS.register("hardswish", nn.Hardswish)
ACTS.register("hardsigmoid", nn.Hardsigmoid)
ACTS.register("sigmoid", nn.Sigmoid)
ACTS.register("tanh", nn.Tanh)
ACTS.register("mish", nn.Mish)
ACTS.register("identity", nn.Identity)
ACTS.register("none", nn.Identity)

# in-place activations save memory in training but are a rewrite/export hazard; we never build them in place
_NO_INPLACE = {"prelu", "gelu", "sigmoid", "tanh", "identity", "none"}


def create_act(name: str | None, **kwargs: Any) -> nn.Module:
    """Build an activation module by name.

    Args:
        name: one of :data:`ACTS` (``relu``, ``relu6``, ``gelu``, ``silu``, ``hardswish`` …); ``None`` or
            ``"none"`` gives :class:`torch.nn.Identity`.
        **kwargs: passed to the module (e.g. ``negative_slope`` for ``leaky_relu``).

    Raises:
        UnknownNameError: the name is not registered (the message lists the choices).
        ConfigError: the keyword arguments do not fit the activation.
    """
    key = "none" if name is None else name.lower()
    cls = ACTS.get(key)
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"activation '{key}': bad arguments {sorted(kwargs)} ({exc})") from exc
