"""Model outputs of a torch module (or any nest of arrays) laid out for :mod:`edgecv.validate.compare`.

The one place that flattens a model's output (a tensor, a tuple/list, a dict, nested) and compares two of them, for
export (reference outputs and their names), the zoo check (torch vs ONNX Runtime / OpenVINO) and the rewrite
certificate (model before vs after a pass). Nothing here imports torch: leaves are recognised by their ``shape``
and ``dtype`` and turned into numpy with ``detach().cpu().numpy()`` when they have it, so this module stays in the
runtime tier.

Dict order: **insertion order**, the order in which ``torch.onnx.export`` (both exporters, through torch's pytree)
lays a dict output out as graph outputs. Comparing a torch output with an ONNX runtime's outputs by position only
works in that order; sorting the keys (as the rewrite certificate once did) pairs the wrong tensors as soon as the
keys are not already sorted.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgecv.errors import ExportError
from edgecv.validate.compare import OutputComparison, compare_output


def is_array(x: Any) -> bool:
    """A tensor or array leaf (torch.Tensor, numpy array), told by its attributes rather than by importing torch."""
    return hasattr(x, "shape") and hasattr(x, "dtype") and not isinstance(x, type)


def named_outputs(out: Any, prefix: str = "", *, skip_other: bool = False) -> list[tuple[str, Any]]:
    """Every array in a (nested) model output with the name export gives it, in graph-output order.

    Names: ``output`` for a lone tensor, the key for a dict entry (``parent_key`` when nested), ``output0``,
    ``output1`` … for tuple/list items (``parent0`` … when nested).

    Raises:
        ExportError: a leaf that is not an array (``None``, a number, an object), unless ``skip_other``.
    """
    if is_array(out):
        return [(prefix or "output", out)]
    if isinstance(out, dict):
        items: list[tuple[str, Any]] = []
        for k, v in out.items():
            items += named_outputs(v, f"{prefix}_{k}" if prefix else str(k), skip_other=skip_other)
        return items
    if isinstance(out, (list, tuple)):  # namedtuples too
        items = []
        for i, v in enumerate(out):
            items += named_outputs(v, f"{prefix}{i}" if prefix else f"output{i}", skip_other=skip_other)
        return items
    if skip_other:
        return []
    raise ExportError(f"the model returned {type(out).__name__}; expected tensors (alone, in a tuple/list or dict)")


def flatten_outputs(out: Any, *, skip_other: bool = False) -> list[Any]:
    """The arrays of :func:`named_outputs`, without their names."""
    return [t for _, t in named_outputs(out, skip_other=skip_other)]


def to_numpy(x: Any) -> np.ndarray:
    """A torch tensor (any device, with or without grad) or array as a numpy array."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def output_arrays(out: Any, *, skip_other: bool = False) -> list[np.ndarray]:
    """:func:`flatten_outputs` as numpy arrays."""
    return [to_numpy(t) for t in flatten_outputs(out, skip_other=skip_other)]


def compare_all(ref: list[np.ndarray], got: list[np.ndarray], name: str = "outputs") -> OutputComparison:
    """Every output of two models judged as one: :func:`edgecv.validate.compare.compare_output` over the
    concatenation of all arrays (float64), so ``max_abs``/``scale``/``cosine`` span the whole output; with a single
    2-D score output, ``top1_agreement`` is the fraction of rows whose argmax agrees.

    The caller checks that both have the same number of arrays with the same shapes.
    """
    fa = np.concatenate([np.asarray(a, np.float64).ravel() for a in ref]) if ref else np.zeros(0)
    fb = np.concatenate([np.asarray(b, np.float64).ravel() for b in got]) if got else np.zeros(0)
    cmp = compare_output(name, fa, fb)
    if len(ref) == 1 and ref[0].ndim == 2 and ref[0].shape[1] > 1:
        cmp.top1_agreement = float(np.mean(np.argmax(ref[0], axis=1) == np.argmax(got[0], axis=1)))
    return cmp
