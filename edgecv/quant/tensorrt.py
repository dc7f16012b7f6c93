"""TensorRT INT8 from the QDQ ONNX model (explicit quantization).

TensorRT reads the Q/DQ scales ORT computed, so no TensorRT calibrator runs: the engine is built by
``edgecv.backends.tensorrt``'s builder from the QDQ file as a *strongly typed* network (precision follows the
Q/DQ nodes, not builder flags), with the layers chosen to stay float listed in ``BuildConfig.keep_float``.
Only this code path exists here; TensorRT needs a CUDA machine.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgecv._lazy import lazy_import

if TYPE_CHECKING:
    from edgecv.bundle import Artifact, Bundle


def int8_build_config(qdq_path: Path, keep_float: list[str], device: str | None = None, base: Any = None) -> Any:
    """The :class:`~edgecv.backends.base.BuildConfig` for an explicit-quantization INT8 engine (``base``'s
    target, workspace and portability options kept)."""
    from edgecv.backends.base import BuildConfig

    if base is not None:
        cfg = dataclasses.replace(
            base,
            precision="int8",
            device=device or base.device or "cuda:0",
            onnx_path=Path(qdq_path),
            keep_float=list(keep_float),
            emit_only=False,
        )
    else:
        cfg = BuildConfig(
            precision="int8", device=device or "cuda:0", onnx_path=Path(qdq_path), keep_float=list(keep_float)
        )
    # strongly typed networks take precision from the Q/DQ graph; set it where BuildConfig has the field
    if any(f.name == "strongly_typed" for f in dataclasses.fields(cfg)):
        cfg.strongly_typed = True  # type: ignore[attr-defined]
    return cfg


def build_int8_engine(
    bundle: Bundle,
    qdq_path: Path,
    keep_float: list[str],
    device: str | None = None,
    extra: dict[str, Any] | None = None,
    base: Any = None,
) -> Artifact:
    """Build a TensorRT INT8 engine from ``qdq_path`` with the TensorRT builder and record it in ``bundle``.

    Args:
        bundle: the bundle to add the engine to.
        qdq_path: the QDQ ONNX model (``onnxruntime/int8/model.qdq.onnx``).
        keep_float: ONNX node names kept in floating point (same names as in the QDQ model).
        device: CUDA device, default ``cuda:0``.
        extra: INT8 decisions and metrics to record on the artifact (method, samples, kept_float …).
        base: the caller's BuildConfig (target, DLA core, workspace, portability options).

    Raises:
        MissingDependencyError: TensorRT is not installed.
    """
    lazy_import("tensorrt")
    from edgecv.backends import BUILDERS

    builder = BUILDERS.get("tensorrt")()
    art = builder.build(bundle, int8_build_config(qdq_path, keep_float, device, base))
    if extra:
        art.extra.update({k: v for k, v in extra.items() if k not in art.extra})
        art.extra["qdq_onnx"] = (
            str(Path(qdq_path).relative_to(bundle.root))
            if Path(qdq_path).is_relative_to(bundle.root)
            else str(qdq_path)
        )
        with bundle.update() as manifest:
            manifest.artifacts[art.key] = art
    return art


def emit_int8_script(bundle: Bundle, config: Any, qdq: Artifact, note: str) -> Artifact:
    """Write the INT8 ``trtexec.sh`` so that it builds from the QDQ model ``qdq`` (an ``onnxruntime:int8``
    artifact of ``bundle``), never from the float graph. :func:`edgecv.quant.quantize` makes or finds ``qdq``.

    Args:
        bundle: the bundle.
        config: the TensorRT :class:`~edgecv.backends.base.BuildConfig` (precision int8, target, device, …).
        qdq: the QDQ artifact whose kept-float layers stay float in the engine too.
        note: where the QDQ model came from, written into the script.

    Returns:
        The script's :class:`Artifact` description (recorded as a file, not as an engine).
    """
    from edgecv.backends.tensorrt import is_qdq, trtexec_command, write_trtexec_script
    from edgecv.bundle import Artifact
    from edgecv.errors import ConfigError

    path = bundle.path(qdq.path)
    if not is_qdq(path):
        raise ConfigError(f"tensorrt int8 --emit-trtexec: expected Q/DQ nodes in '{qdq.path}', found none")
    keep = list(qdq.extra.get("kept_float", [])) + list(qdq.extra.get("float_head", []))
    cfg = dataclasses.replace(config, precision="int8", onnx_path=path, keep_float=keep, emit_only=True)
    script = write_trtexec_script(bundle, cfg, source_note=note)
    return Artifact(
        backend="tensorrt",
        precision="int8",
        path=str(script.relative_to(bundle.root)),
        device=cfg.device,
        build_flags={"emit_only": True, "qdq_onnx": qdq.path},
        extra={"command": trtexec_command(bundle, cfg), "qdq_onnx": qdq.path},
    )
