"""Numeric validation of backends against the PyTorch reference, and task metrics.

Runtime tier: numpy only at import; backends are opened lazily through an opener.
"""

from __future__ import annotations

from edgecv.validate.compare import TOLERANCES, OutputComparison, Tolerance, compare_outputs, judge, tolerance_for
from edgecv.validate.core import BackendResult, ValidationReport, validate_bundle

__all__ = [
    "TOLERANCES",
    "BackendResult",
    "OutputComparison",
    "Tolerance",
    "ValidationReport",
    "compare_outputs",
    "judge",
    "tolerance_for",
    "validate_bundle",
]
