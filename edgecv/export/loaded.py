"""What every model source produces and the exporter, the detection wrappers and the adapters consume:
:class:`LoadedModel`, and the :data:`PassRunner` hook that rebuilds rewritten models.

It is the bottom of :mod:`edgecv.export`: :mod:`edgecv.export.sources` builds these, :mod:`edgecv.export.detection`
and :mod:`edgecv.export.adapters` wrap them, :mod:`edgecv.export.onnx` exports them; none of those is imported here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from edgecv.bundle import Contract

if TYPE_CHECKING:
    from torch import nn

#: what rebuilds a rewritten model: ``runner(module, names, sample, inplace=..., options=...) -> (module, report)``.
#: :func:`edgecv.rewrite.apply_passes` is one. Export sits below rewrite (rewrite imports export, never the other
#: way), so whoever wants rewritten models rebuilt (the CLI, :mod:`edgecv.pipeline`) hands it in.
PassRunner = Callable[..., tuple[Any, Any]]


@dataclass
class LoadedModel:
    """A model ready to export.

    Attributes:
        module: the ``nn.Module`` in eval mode.
        contract: contract defaults for this model (zoo config, torchvision transforms, or generic defaults);
            the caller may replace fields before exporting.
        source_info: provenance for the manifest: ``kind``, ``spec`` (absolute path for files), ``kwargs``,
            ``weights`` (absolute path or None), ``weights_sha256``, ``source_sha256``, ``arch``.
        name: a short name for the bundle (``resnet18``, the factory name, the file stem).
        guess_task: True when the contract's task is a generic default (no zoo/torchvision config said it);
            the exporter then infers classify/segment from the output shapes.
    """

    module: nn.Module
    contract: Contract
    source_info: dict[str, Any]
    name: str = "model"
    guess_task: bool = False
    notes: list[str] = field(default_factory=list)
    # in-domain reference images the source knows (a shipped model's validation split): n -> (BGR images, label)
    reference: Callable[[int], tuple[list[Any], str]] | None = None
