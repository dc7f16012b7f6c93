"""The built-in rewrite passes, one per file (as OnnxSlim keeps its passes): ``<pass name>.py`` holds the
:class:`~edgecv.rewrite.base.Pass` subclass registered under that name and the helpers only it uses.

Importing this package imports every module in it, which registers their passes in
:data:`edgecv.rewrite.base.PASSES`; a new pass is a new file here with an ``@register_pass`` class, and
``tests/test_rewrite.py`` checks it (exact passes for exactness, lossy ones for a reported cost) with no test
written for it.
"""

from __future__ import annotations

import importlib
import pkgutil

#: the modules of this package, each the home of one registered pass
PASS_MODULES = tuple(sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")))

for _name in PASS_MODULES:
    importlib.import_module(f"{__name__}.{_name}")
