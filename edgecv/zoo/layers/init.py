"""Weight initialisation by name, on top of :mod:`torch.nn.init`."""

from __future__ import annotations

from torch import nn

from edgecv.errors import ConfigError, UnknownNameError

INITS = ("xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal")
_NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)


def init_weights(
    model: nn.Module,
    name: str = "kaiming_normal",
    gain: float = 1.0,
    a: float = 0.0,
    mode: str = "fan_in",
    nonlinearity: str = "relu",
    zero_bias: bool = True,
) -> nn.Module:
    """Initialise every Conv/ConvTranspose/Linear weight of ``model`` in place; returns ``model``.

    Norm layers get weight 1, bias 0; conv/linear biases are zeroed when ``zero_bias``. Parameters of other
    modules (tokens, position embeddings, attention gammas) are left as their module set them.

    Args:
        model: the module to initialise.
        name: ``xavier_uniform`` | ``xavier_normal`` (use ``gain``) | ``kaiming_uniform`` | ``kaiming_normal``
            (use ``a``, ``mode``, ``nonlinearity``).
        gain: Xavier scaling factor (e.g. ``nn.init.calculate_gain("relu")``).
        a: negative slope of the rectifier after the layer (Kaiming, ``leaky_relu``).
        mode: ``fan_in`` keeps the forward variance, ``fan_out`` the backward one (Kaiming).
        nonlinearity: ``relu``, ``leaky_relu``, ``linear``, ``tanh``, … (Kaiming gain).
        zero_bias: zero conv/linear biases.

    Raises:
        UnknownNameError: unknown init name (the message lists the choices).
        ConfigError: bad ``mode``.
    """
    if name not in INITS:
        raise UnknownNameError(f"unknown init '{name}'; expected one of: {', '.join(INITS)}")
    if mode not in ("fan_in", "fan_out"):
        raise ConfigError(f"init mode: expected 'fan_in' or 'fan_out', got '{mode}'")
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.Linear)):
            w = m.weight
            if name == "xavier_uniform":
                nn.init.xavier_uniform_(w, gain=gain)
            elif name == "xavier_normal":
                nn.init.xavier_normal_(w, gain=gain)
            elif name == "kaiming_uniform":
                nn.init.kaiming_uniform_(w, a=a, mode=mode, nonlinearity=nonlinearity)  # type: ignore[arg-type]
            else:
                nn.init.kaiming_normal_(w, a=a, mode=mode, nonlinearity=nonlinearity)  # type: ignore[arg-type]
            if zero_bias and m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, _NORM_TYPES) and getattr(m, "weight", None) is not None:
            nn.init.ones_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return model
