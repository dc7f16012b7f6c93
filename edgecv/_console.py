"""Printing helpers: rich tables for people, JSON for machines."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

# piped output (CI logs, `| tee`) would otherwise be cut to 80 columns and the tables to "…"
console = Console(width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=_default) + "\n")


#: version of a command's JSON envelope (docs/json.md): bump a command's number when one of its keys changes
JSON_SCHEMA_VERSION = 1
#: commands whose keys changed since version 1 (docs/json.md says what changed): the list of rows is ``rows`` and
#: latency statistics are one nested ``latency`` object in every row
JSON_SCHEMA_VERSIONS = {"bench": 2, "benchmark": 2, "pipeline": 2, "validate": 2}


def json_schema(command: str) -> str:
    """The schema name a command's ``--json`` document carries, e.g. ``edgecv/validate/2``."""
    return f"edgecv/{command}/{JSON_SCHEMA_VERSIONS.get(command, JSON_SCHEMA_VERSION)}"


def emit_json(command: str, payload: dict[str, Any], *, passed: bool) -> None:
    """A command's ``--json`` output: ``{"schema": "edgecv/<command>/<version>", "passed": …, **payload}``.
    ``passed`` is what the exit code will say (true exactly when the command exits 0), so a script reading the
    JSON and one reading the exit code never disagree."""
    body = {k: v for k, v in payload.items() if k not in ("schema", "passed")}
    print_json({"schema": json_schema(command), "passed": bool(passed), **body})


@contextlib.contextmanager
def chatter_to_stderr() -> Iterator[None]:
    """Send stdout writes made inside the block to stderr: Python ``print`` (``sys.stdout``) and native writes to
    file descriptor 1 alike, so a third-party library's progress lines never mix into ``--json`` output."""
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no real stdout (closed descriptor): redirect the Python level only
        saved = -1
    try:
        if saved >= 0:
            sys.stderr.flush()
            os.dup2(2, 1)
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()  # anything written through a stdout object captured before the block
        sys.stderr.flush()
        if saved >= 0:
            os.dup2(saved, 1)
            os.close(saved)


def _default(o: Any) -> Any:
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    return str(o)


def fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if v != 0 and (abs(v) < 10**-digits or abs(v) >= 1e6):
            return f"{v:.2e}"
        return f"{v:.{digits}f}"
    return str(v)


def table(
    title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], digits: int = 3, caption: str | None = None
) -> Table:
    t = Table(title=title, caption=caption, title_justify="left")
    for c in columns:
        t.add_column(c, justify="left" if c in columns[:1] else "right")
    for r in rows:
        t.add_row(*[fmt(v, digits) for v in r])
    return t


def print_table(
    title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], digits: int = 3, caption: str | None = None
) -> None:
    console.print(table(title, columns, rows, digits, caption))
