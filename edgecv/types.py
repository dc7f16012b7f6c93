"""Small shared value types."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape and dtype of a model input or output. ``None`` in ``shape`` marks a dynamic dimension."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str = "float32"

    def matches(self, arr: np.ndarray) -> str | None:
        """None when ``arr`` fits this spec, else a one-line reason (expected vs found)."""
        if arr.ndim != len(self.shape):
            return f"input '{self.name}': expected {len(self.shape)} dims {self.shape_str}, found shape {tuple(arr.shape)}"
        for want, got in zip(self.shape, arr.shape):
            if want is not None and want != got:
                return f"input '{self.name}': expected shape {self.shape_str}, found {tuple(arr.shape)}"
        if np.dtype(self.dtype) != arr.dtype:
            return f"input '{self.name}': expected dtype {self.dtype}, found {arr.dtype}"
        return None

    @property
    def shape_str(self) -> str:
        return "x".join("?" if d is None else str(d) for d in self.shape)
