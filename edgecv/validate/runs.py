"""Moved to :mod:`edgecv.backends.runs` (issue 13: validate and bench both import it from the lower package).

Only ``edgecv/cli/run.py`` (another work branch of issue 13) still imports ``best_target`` from here; switch
that import to ``edgecv.backends.runs`` and delete this module.
"""

from __future__ import annotations

from edgecv.backends.runs import best_target

__all__ = ["best_target"]
