"""Export a loaded model the one way every caller does: apply contract overrides, prepare a detector's
post-processing, then :func:`edgecv.export.onnx.export_model`.

``edgecv export`` (``cli/export.py``), ``edgecv pipeline`` (:mod:`edgecv.pipeline`) and the shipped-detector
release script (``scripts/shipped_detector.py``) all go through :func:`prepare_export`, so a contract override or
a detector wrapper means the same thing in each.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgecv.errors import ConfigError

if TYPE_CHECKING:
    from edgecv.export.loaded import LoadedModel
    from edgecv.export.onnx import ExportResult


def check_contract_overrides(overrides: Mapping[str, Any]) -> None:
    """Fail with one line before any model is loaded when ``overrides`` do not make a valid contract."""
    from pydantic import ValidationError

    from edgecv.bundle import Contract

    try:
        Contract(**dict(overrides))
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ConfigError(f"{'.'.join(map(str, err['loc']))}: {err['msg']}") from exc


def apply_contract_overrides(loaded: LoadedModel, overrides: Mapping[str, Any]) -> LoadedModel:
    """Replace contract fields of ``loaded`` (validated). Naming the task stops the exporter guessing it, and a
    changed task drops the old task's output decoding for the new task's default."""
    from edgecv.bundle import Contract
    from edgecv.export.sources import default_decode

    if not overrides:
        return loaded
    before = loaded.contract.task
    check_contract_overrides(overrides)
    loaded.contract = Contract(**{**loaded.contract.model_dump(), **dict(overrides)})
    if "task" in overrides:
        loaded.guess_task = False
        if loaded.contract.task != before:
            loaded.contract.decode = default_decode(loaded.contract.task)
    return loaded


@dataclass
class ExportPrep:
    """What is done to a loaded model before export: contract ``overrides`` (field → value) and, for a detector,
    the post-processing wrapper (``nms`` ``graph``/``host``/``none``, thresholds, a declarative ``decode_spec`` for
    a foreign head, ``class_names``)."""

    overrides: Mapping[str, Any] = field(default_factory=dict)
    nms: str | None = None
    score_threshold: float = 0.001
    iou_threshold: float = 0.5
    max_det: int = 100
    decode_spec: Any = None
    class_names: Sequence[str] | None = None


def prepare_export(loaded: LoadedModel, prep: ExportPrep | None = None) -> LoadedModel:
    """Contract overrides, then (task ``detect``, a foreign detector whose task was only guessed, or ``nms``
    given) the detector's post-processing wrapper (:func:`edgecv.export.detection.prepare_detection_export`)."""
    prep = prep or ExportPrep()
    loaded = apply_contract_overrides(loaded, prep.overrides)
    if loaded.guess_task and "task" not in prep.overrides:
        from edgecv.export.adapters import find_adapter

        if find_adapter(loaded.module) is not None:  # a foreign detector from a file.py:factory
            loaded.contract.task = "detect"
    if loaded.contract.task == "detect" or prep.nms is not None:
        from edgecv.export.detection import prepare_detection_export

        loaded = prepare_detection_export(
            loaded,
            nms=prep.nms or "graph",
            score_threshold=prep.score_threshold,
            iou_threshold=prep.iou_threshold,
            max_det=prep.max_det,
            class_names=list(prep.class_names) if prep.class_names is not None else None,
            decode_spec=prep.decode_spec,
        )
    return loaded


def export_loaded(
    loaded: LoadedModel,
    out: str | Path,
    prep: ExportPrep | None = None,
    *,
    dynamic_batch: bool = True,
    max_batch: int | None = None,
    **export_kwargs: Any,
) -> ExportResult:
    """:func:`prepare_export`, then :func:`edgecv.export.onnx.export_model` into the bundle folder ``out``.

    A detector whose graph holds its own NMS and RPN (``exports_graph_nms``, Faster R-CNN) exports at a fixed
    batch. ``max_batch`` sets the dynamic batch range to ``(1, min(N, max_batch), max_batch)`` for the contract's
    batch N; other keywords (``opset``, ``rewrite`` with ``passes``, ``force`` ...) go to ``export_model``.
    """
    from edgecv.export.onnx import export_model

    loaded = prepare_export(loaded, prep)
    if getattr(loaded.module, "exports_graph_nms", False):
        dynamic_batch = False  # Faster R-CNN's RPN/RoI graph exports at batch 1 only
    if max_batch is not None:
        if max_batch < 1:
            raise ConfigError(f"max-batch: expected at least 1, got {max_batch}")
        b = loaded.contract.input_shape[0]
        export_kwargs["batch_range"] = (1, min(max(b, 1), max_batch), max_batch)
    return export_model(loaded, out, dynamic_batch=dynamic_batch, **export_kwargs)
