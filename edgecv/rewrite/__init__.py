"""Quantization-friendly model rewrites (build tier).

Exact passes (``fold_bn``, ``fuse``, ``remove_dropout``, ``remove_identity``, ``reparam``) certify on a sample
input that the outputs did not move beyond float rounding and refuse to return a model that fails;
lossy passes (``dw_conv``, ``group_conv``, ``act_relu``, ``act_relu6``, ``norm_to_bn``, ``hard_sigmoid``,
``stack_3x3``) report the drift they cause. Run them with :func:`apply_passes` (:mod:`edgecv.rewrite.apply`).

Each built-in pass is one file in :mod:`edgecv.rewrite.passes`, registered in :data:`PASSES`
(:mod:`edgecv.rewrite.base`). Importing this package does not import torch; running a pass does.
"""

from edgecv.export.stats import count_flops, count_params
from edgecv.rewrite.apply import apply_passes, get_pass, list_passes
from edgecv.rewrite.base import (
    PASSES,
    NotExactError,
    Pass,
    PassReport,
    PassResult,
    RewriteError,
    RewriteReport,
    compare_outputs,
    register_pass,
)

__all__ = [
    "PASSES",
    "NotExactError",
    "Pass",
    "PassReport",
    "PassResult",
    "RewriteError",
    "RewriteReport",
    "apply_passes",
    "compare_outputs",
    "count_flops",
    "count_params",
    "get_pass",
    "list_passes",
    "register_pass",
]
