"""Entry point: builds the Typer app from the command modules and maps errors to one line + exit 2."""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from typing import Any

import typer

from edgecv import __version__

app = typer.Typer(
    name="edgecv",
    help="Take a PyTorch vision model to an edge device, and prove it still works there.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# each module defines register(app); modules import no framework at module level so --help stays fast
_COMMAND_MODULES = [
    "doctor",
    "models",
    "export",
    "compile",
    "validate",
    "bench",
    "benchmark",
    "rewrite",
    "lint",
    "train",
    "data",
    "pipeline",
    "quantize",
    "calib",
    "anchors",
    "run",
    "serve",
    "report",
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"edgecv {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """edgecv: export, compile, validate, benchmark and run vision models on edge hardware."""


for _name in _COMMAND_MODULES:  # a command module that fails to import is an error, never a silently missing command
    importlib.import_module(f"edgecv.cli.{_name}").register(app)


def _show_warning(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, file: Any = None, line: Any = None
) -> None:
    """edgecv's own warnings (e.g. CalibrationWarning) as one clean line on stderr, not Python's
    ``path.py:LINE: Category: text`` plus the source line; other packages' warnings keep Python's format."""
    if category.__module__.split(".")[0] == "edgecv":
        text = " ".join(str(message).split())
        sys.stderr.write(f"warning: {text}\n")
        return
    (file or sys.stderr).write(warnings.formatwarning(message, category, filename, lineno, line))


def main() -> None:
    """Console-script entry: run the app; EdgecvError → one line on stderr, exit 2."""
    from edgecv.errors import EdgecvError

    warnings.showwarning = _show_warning
    try:
        rc = app(standalone_mode=False)
        # standalone_mode=False returns typer.Exit codes instead of exiting
        sys.exit(rc if isinstance(rc, int) else 0)
    except EdgecvError as exc:
        if os.environ.get("EDGECV_DEBUG") == "1":
            raise
        sys.stderr.write(f"error: {exc}\n")
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except SystemExit:
        raise
    except typer.Abort:
        sys.stderr.write("aborted\n")
        sys.exit(130)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)
    except Exception as exc:
        # usage errors (typer >= 0.25 vendors click; older typer uses click itself): both have .show()
        if hasattr(exc, "show") and hasattr(exc, "exit_code"):
            exc.show()
            sys.exit(2)
        if os.environ.get("EDGECV_DEBUG") == "1":
            raise
        if isinstance(exc, OSError) and exc.strerror:
            # a full disk, a read-only folder, a permission: the system's words and the file are the whole story
            import errno

            what = "no space left on the device" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else exc.strerror
            where = f" ('{exc.filename}')" if exc.filename else ""
            sys.stderr.write(f"error: {what}{where}\n")
            sys.exit(2)
        sys.stderr.write(f"error: unexpected {type(exc).__name__}: {exc} (set EDGECV_DEBUG=1 for the traceback)\n")
        sys.exit(2)


if __name__ == "__main__":
    main()
