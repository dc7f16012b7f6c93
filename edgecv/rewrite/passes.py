"""Importing this module registers every built-in pass in :data:`edgecv.rewrite.base.PASSES`."""

from __future__ import annotations

from edgecv.rewrite import cleanup, fold, lossy, reparam  # noqa: F401
