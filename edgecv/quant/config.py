"""What one INT8 run is asked to do (:class:`QuantConfig`) and what it gives back (:class:`QuantResult`).

:func:`edgecv.quant.quantize` takes a :class:`QuantConfig`; ``edgecv compile -p int8``, ``edgecv quantize`` and
the recipe pipeline all build one, so every INT8 option has one name, one default and one check.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgecv.errors import ConfigError, UnknownNameError
from edgecv.quant.calib import NO_CALIB, CalibrationSource
from edgecv.quant.ort import check_method

if TYPE_CHECKING:
    from edgecv.backends.base import BuildConfig
    from edgecv.bundle import Artifact, Bundle
    from edgecv.validate.metrics import ValSet

#: the backends INT8 is made for
BACKENDS = ("onnxruntime", "openvino", "tensorrt")
#: the library's calibration method when none is named (the CLI's ``--method`` defaults to ``auto``)
DEFAULT_METHOD = "minmax"


@dataclass(frozen=True)
class QuantConfig:
    """One INT8 run.

    Attributes:
        backend: ``onnxruntime`` (QDQ ONNX), ``openvino`` (NNCF IR) or ``tensorrt`` (engine built from the QDQ
            model by the TensorRT builder).
        calib: calibration data (folder of images, video, ``.npz``) or a :class:`CalibrationSource`; required,
            except for a TensorRT ``emit_only`` script when the bundle already holds a QDQ model.
        method: ``minmax``, ``entropy``, ``percentile`` or ``auto`` (each tried, the best kept on the
            validation metric, or on output cosine vs fp32 without ``val``).
        val: validation data for the task metric (classify: ImageFolder; detect: COCO; segment: images/ +
            masks/), or a :class:`~edgecv.validate.metrics.ValSet`.
        max_drop: accuracy budget in metric points (needs ``val``); layers move to float until it holds.
        device: backend device (OpenVINO ``CPU``/``GPU``…, TensorRT ``cuda:0``).
        limit: use at most this many calibration samples.
        float_head: keep the ops after the last Conv/Gemm of each output path (detector heads) in float.
        build: tensorrt: the :class:`~edgecv.backends.base.BuildConfig` whose target, device (``dla:N``),
            workspace and portability options the engine is built with; ``emit_only`` writes the trtexec
            script (which builds from the QDQ model) instead of building.
        out: write a new bundle here whose ``model.onnx`` is the QDQ model (``edgecv quantize``) instead of
            adding an artifact to the bundle; onnxruntime only (ORT, OpenVINO and TensorRT all read QDQ).
        force: with ``out``, replace an existing bundle there.

    Raises (on construction):
        ConfigError: no calibration data, an unknown method, ``max_drop`` without ``val``, ``out`` with another
            backend than onnxruntime, ``emit_only`` with another backend than tensorrt.
        UnknownNameError: an unknown backend.
    """

    backend: str = "onnxruntime"
    calib: CalibrationSource | str | Path | None = None
    method: str = DEFAULT_METHOD
    val: str | Path | ValSet | None = None
    max_drop: float | None = None
    device: str | None = None
    limit: int | None = None
    float_head: bool = True
    build: BuildConfig | None = field(default=None, compare=False)
    out: Path | None = None
    force: bool = False

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise UnknownNameError(f"INT8 backend '{self.backend}': expected one of {', '.join(BACKENDS)}")
        check_method(self.method)
        if self.calib is None and not self.emit_only:
            raise ConfigError(NO_CALIB)
        if self.max_drop is not None and self.val is None:
            raise ConfigError("--max-drop needs --val DATA to measure the task metric on")
        if self.out is not None and self.backend != "onnxruntime":
            raise ConfigError(
                f"quantize to a new bundle: expected backend onnxruntime (a QDQ model.onnx), found {self.backend}"
            )
        if self.emit_only and self.backend != "tensorrt":
            raise ConfigError(f"emit_only: only for backend tensorrt, found {self.backend}")

    @property
    def emit_only(self) -> bool:
        """TensorRT: write the trtexec script instead of building the engine."""
        return bool(self.build is not None and self.build.emit_only)

    @property
    def val_path(self) -> str | None:
        """``val`` as recorded in the metrics (None for an in-memory ValSet)."""
        return str(self.val) if isinstance(self.val, (str, Path)) else None


@dataclass(frozen=True)
class QuantResult:
    """What :func:`edgecv.quant.quantize` made.

    Attributes:
        bundle: the bundle holding the result (the new one when ``QuantConfig.out`` was given).
        artifact: the INT8 artifact added to ``bundle`` (for ``emit_only``, the script's description); None with
            ``out``, where the new bundle's ``model.onnx`` is the INT8 model.
        info: what was decided and measured (method, samples, kept-float layers, metrics …), as recorded on the
            artifact (``extra``) or in the new bundle's provenance (``quantized``).
    """

    bundle: Bundle
    artifact: Artifact | None
    info: dict[str, Any]
