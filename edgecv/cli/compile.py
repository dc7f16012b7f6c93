"""``edgecv compile``: build a backend artifact (OpenVINO IR, ONNX Runtime fp16/int8, TensorRT engine) into a bundle."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from edgecv.cli.options import (
    BackendsBuildOpt,
    BundleArg,
    CalibOpt,
    DeviceOpt,
    JsonOpt,
    MaxDropOpt,
    MethodOpt,
    PrecisionOpt,
    ValOpt,
)

_METHODS = ("minmax", "entropy", "percentile", "auto")


def register(app: typer.Typer) -> None:
    app.command("compile")(compile_cmd)


def compile_cmd(
    bundle: BundleArg,
    backend: BackendsBuildOpt = None,
    precision: PrecisionOpt = "fp32",
    device: DeviceOpt = None,
    emit_trtexec: Annotated[
        bool,
        typer.Option(
            "--emit-trtexec",
            help="TensorRT: write tensorrt/<precision>/trtexec.sh into the bundle instead of building.",
        ),
    ] = False,
    workspace_mb: Annotated[
        int | None,
        typer.Option(
            "--workspace-mb", help="TensorRT builder workspace limit (MiB); default: the target's (1024 on Jetson)."
        ),
    ] = None,
    target: Annotated[
        str | None, typer.Option("--target", help="TensorRT: orin-nano, orin-nx, agx-orin, thor or x86 (default).")
    ] = None,
    hardware_compat: Annotated[
        str | None,
        typer.Option("--hardware-compat", help="TensorRT: 'ampere+' for an engine any Ampere+ discrete GPU loads."),
    ] = None,
    version_compatible: Annotated[
        bool, typer.Option("--version-compatible", help="TensorRT: a plan newer TensorRT versions can load.")
    ] = False,
    calib: CalibOpt = None,
    method: MethodOpt = "auto",
    val: ValOpt = None,
    max_drop: MaxDropOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Build backend artifacts into BUNDLE and record them in the manifest.

    --backend takes NAME or NAME:PRECISION and repeats (e.g. -b openvino -b onnxruntime:int8); --precision is the
    precision of every --backend given without one.
    """
    from edgecv.backends import BUILDERS
    from edgecv.bundle import Bundle
    from edgecv.errors import ConfigError
    from edgecv.types import parse_backend_spec, parse_precision

    default = parse_precision(precision)
    targets: list[tuple[str, str]] = []
    for spec in backend or ["openvino"]:
        t = parse_backend_spec(spec, default)
        if t not in targets:
            targets.append(t)
    if method not in _METHODS:
        raise ConfigError(f"--method: expected one of {', '.join(_METHODS)}, found '{method}'")
    if workspace_mb is not None and workspace_mb < 1:
        raise ConfigError(f"--workspace-mb: expected a positive number, found {workspace_mb}")
    names = {n for n, _ in targets}
    if emit_trtexec and names != {"tensorrt"}:
        raise ConfigError(f"--emit-trtexec: only for --backend tensorrt, found --backend {', '.join(sorted(names))}")
    trt_only = {"--target": target, "--hardware-compat": hardware_compat, "--version-compatible": version_compatible}
    for opt, value in trt_only.items():
        if value and names != {"tensorrt"}:
            raise ConfigError(f"{opt}: only for --backend tensorrt, found --backend {', '.join(sorted(names))}")
    if "tensorrt" in names:
        from edgecv.backends.tensorrt_plan import get_target

        get_target(target)  # unknown target → one line listing the choices
    for name, prec in targets:
        BUILDERS.get(name)  # unknown backend → one line listing the choices, before any work
        if prec == "int8" and calib is None and not (emit_trtexec and name == "tensorrt"):
            raise ConfigError(
                f"--calib: {name}:int8 needs calibration data (a folder of images or a list file); found none"
            )
    b = Bundle.open(bundle)
    rows = [
        _build_one(
            b,
            name,
            prec,
            device=device,
            emit_trtexec=emit_trtexec,
            workspace_mb=workspace_mb,
            target=target,
            hardware_compat=hardware_compat,
            version_compatible=version_compatible,
            calib=calib,
            method=method,
            val=val,
            max_drop=max_drop,
        )
        for name, prec in targets
    ]
    if json_out:
        from edgecv.cli._output import emit_json

        emit_json("compile", {"bundle": str(b.root), "artifacts": rows}, passed=True)
        return
    from edgecv.cli._output import print_table

    for row in rows:
        if row["emitted_only"]:
            typer.echo(row["command"])
    print_table(
        f"compiled {b.root}",
        ["backend", "precision", "device", "file", "size (MB)", "build (s)"],
        [
            [
                row["backend"],
                row["precision"],
                row["device"],
                _rel(Path(row["file"]), b.root),
                row["size_mb"],
                row["build_time_s"],
            ]
            for row in rows
        ],
        caption="size: every file of the artifact (an OpenVINO IR is model.xml + model.bin)",
    )
    for row in rows:
        for note in row.get("notes", []):
            typer.echo(f"note: {row['backend']}:{row['precision']}: {note}")
        if row.get("dla_gpu_fallback_layers"):
            layers = row["dla_gpu_fallback_layers"]
            typer.echo(
                f"DLA: {len(layers)} layer(s) fell back to the GPU: {', '.join(layers[:12])}"
                + (" …" if len(layers) > 12 else "")
            )


def _build_one(
    b: Any,
    backend: str,
    precision: str,
    *,
    device: str | None,
    emit_trtexec: bool,
    workspace_mb: int | None,
    target: str | None,
    hardware_compat: str | None,
    version_compatible: bool,
    calib: Path | None,
    method: str,
    val: Path | None,
    max_drop: float | None,
) -> dict[str, Any]:
    """Build one artifact; its row for the table and the JSON."""
    from edgecv.backends import BUILDERS
    from edgecv.backends.base import BuildConfig

    builder_cls = BUILDERS.get(backend)
    config = BuildConfig(
        precision=precision,  # type: ignore[arg-type]
        device=device or _default_device(backend),
        workspace_mb=workspace_mb,
        emit_only=emit_trtexec,
        target=target,
        hardware_compat=hardware_compat,
        version_compatible=version_compatible,
    )
    t0 = time.perf_counter()
    if precision == "int8" and emit_trtexec:
        # the script must build from the QDQ model (quantized here first when --calib is given), never model.onnx
        from edgecv.quant.tensorrt import emit_int8_script

        artifact = emit_int8_script(b, config, calib=calib, method=method, val=val, max_drop=max_drop)
    elif precision == "int8":
        from edgecv.quant.api import compile_int8

        artifact = compile_int8(
            b,
            backend=backend,
            calib=calib,
            method=method,
            val=val,
            max_drop=max_drop,
            device=config.device,
            build_config=config if backend == "tensorrt" else None,
        )
    else:
        artifact = builder_cls().build(b, config)
    elapsed = time.perf_counter() - t0
    path = b.root / artifact.path
    row: dict[str, Any] = {
        "backend": artifact.backend,
        "precision": artifact.precision,
        "device": artifact.device,
        "file": str(path),
        "size_mb": round(artifact_size(b, artifact.path) / 2**20, 3),
        "build_time_s": round(float(artifact.build_flags.get("build_time_s", elapsed)), 3),
        "sha256": artifact.sha256,
        "emitted_only": emit_trtexec,
    }
    if emit_trtexec:
        row["command"] = artifact.extra.get("command", "")
        if "qdq_onnx" in artifact.extra:
            row["qdq_onnx"] = artifact.extra["qdq_onnx"]
    for key in ("notes", "dla_gpu_fallback_layers", "provenance"):
        if artifact.extra.get(key):
            row[key] = artifact.extra[key]
    return row


def artifact_size(b: Any, rel: str) -> int:
    """Bytes of every file an artifact is made of: the recorded folder holding it (an OpenVINO IR's .xml and .bin,
    a TensorRT engine and its sidecar), else the file itself."""
    folder = Path(rel).parent
    root = b.root / folder if str(folder) not in ("", ".") else b.root / rel
    return _size(root)


def _default_device(backend: str) -> str:
    return "cuda:0" if backend == "tensorrt" else "CPU"


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return 0


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)
