"""Small shared value types."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, cast

import numpy as np

#: the precision vocabulary, the one definition every command, backend, config and bundle uses
Precision = Literal["fp32", "fp16", "bf16", "int8"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "fp16", "bf16", "int8")
#: the precisions the eager torch reference can run (autocast); int8 is an artifact, never a torch mode
TORCH_PRECISIONS: tuple[Precision, ...] = ("fp32", "fp16", "bf16")


def parse_precision(value: str, what: str = "--precision", allowed: tuple[str, ...] = PRECISIONS) -> Precision:
    """``'INT8 '`` → ``'int8'``: the one parser of a precision name (case-insensitive), one line when unknown.

    Raises:
        ConfigError: ``value`` is not in ``allowed``.
    """
    from edgecv.errors import ConfigError

    name = str(value).strip().lower()
    if name not in allowed:
        raise ConfigError(f"{what}: expected one of {', '.join(allowed)}, found '{value}'")
    return cast(Precision, name)


def parse_backend_spec(spec: str, default_precision: str = "fp32", what: str = "--backend") -> tuple[str, Precision]:
    """``'OpenVINO:INT8'`` → ``('openvino', 'int8')``; ``'onnxruntime'`` → ``('onnxruntime', default)``. The one
    syntax of ``-b NAME[:PRECISION]`` (case-insensitive); the name is not checked against a registry here.

    Raises:
        ConfigError: an empty name or an unknown precision.
    """
    from edgecv.errors import ConfigError

    name, _, prec = str(spec).strip().partition(":")
    name = name.strip().lower()
    if not name:
        raise ConfigError(f"{what}: expected NAME or NAME:PRECISION, found '{spec}'")
    return name, parse_precision(prec.strip() or default_precision, f"{what} {spec}")


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape and dtype of a model input or output. ``None`` in ``shape`` marks a dynamic dimension."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str = "float32"

    def matches(self, arr: np.ndarray) -> str | None:
        """None when ``arr`` fits this spec, else a one-line reason (expected vs found)."""
        if arr.ndim != len(self.shape):
            return (
                f"input '{self.name}': expected {len(self.shape)} dims {self.shape_str}, found shape {tuple(arr.shape)}"
            )
        for want, got in zip(self.shape, arr.shape):
            if want is not None and want != got:
                return f"input '{self.name}': expected shape {self.shape_str}, found {tuple(arr.shape)}"
        if np.dtype(self.dtype) != arr.dtype:
            return f"input '{self.name}': expected dtype {self.dtype}, found {arr.dtype}"
        return None

    @property
    def shape_str(self) -> str:
        return "x".join("?" if d is None else str(d) for d in self.shape)
