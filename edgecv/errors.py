"""Error hierarchy. The CLI maps every :class:`EdgecvError` to one line on stderr and exit code 2."""

from __future__ import annotations


class EdgecvError(Exception):
    """Base class of every error edgecv raises on purpose (bad input, missing dependency, failed check)."""

    exit_code = 2


class ConfigError(EdgecvError):
    """A recipe, flag or option has a bad value. The message names the dotted field."""


class UnknownNameError(EdgecvError, KeyError):
    """A registry lookup failed. The message lists the valid names."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0]) if self.args else ""


class MissingDependencyError(EdgecvError, ImportError):
    """An optional framework is not installed. The message names the extra to install."""


class BackendError(EdgecvError):
    """A backend failed to load, build or run a model."""


class ExportError(EdgecvError):
    """torch → ONNX export failed."""


class ModelSourceError(EdgecvError):
    """A model could not be loaded from the given source (zoo name, file, checkpoint)."""


class BundleError(EdgecvError):
    """A bundle folder is missing, incomplete or corrupt."""


class InputError(EdgecvError, ValueError):
    """An input tensor has the wrong name, shape or dtype."""


class AccuracyError(EdgecvError):
    """A model failed its accuracy check or budget."""


class SourceError(EdgecvError):
    """A video / camera / stream source failed to open or read."""


class SinkError(EdgecvError):
    """An output (annotated video, results file) could not be written; nothing is left under its final name."""


class DataError(EdgecvError):
    """A data set is malformed; the message names the file and line."""


def one_line(exc: BaseException, limit: int = 300, *, with_type: bool = True) -> str:
    """``exc`` as one line for an error message: terminal colours dropped (torch.export colours its messages),
    white space (newlines too) folded, at most ``limit`` characters (``…`` marks a cut), led by the exception's type
    name unless ``with_type`` is False; an exception with no text gives its type name."""
    import re

    text = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).split())
    if not text:
        return type(exc).__name__
    if len(text) > limit:
        text = text[:limit] + "…"
    return f"{type(exc).__name__}: {text}" if with_type else text
