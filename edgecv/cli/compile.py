"""``edgecv compile``: build a backend artifact (OpenVINO IR, ONNX Runtime fp16/int8, TensorRT engine) into a bundle."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from edgecv.cli.options import (
    METHOD_DEFAULT,
    BackendsBuildOpt,
    BundleArg,
    CalibLimitOpt,
    CalibOpt,
    DeviceOpt,
    JsonOpt,
    MaxDropOpt,
    MethodOpt,
    PrecisionOpt,
    QuantizeHeadOpt,
    ValOpt,
    quant_config,
)

if TYPE_CHECKING:
    from edgecv.backends.base import BuildConfig
    from edgecv.quant.config import QuantConfig


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
    method: MethodOpt = METHOD_DEFAULT,
    val: ValOpt = None,
    max_drop: MaxDropOpt = None,
    calib_limit: CalibLimitOpt = None,
    quantize_head: QuantizeHeadOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Build backend artifacts into BUNDLE and record them in the manifest.

    --backend takes NAME or NAME:PRECISION and repeats (e.g. -b openvino -b onnxruntime:int8); --precision is the
    precision of every --backend given without one.
    """
    from edgecv.backends import BUILDERS
    from edgecv.backends.base import BuildConfig
    from edgecv.bundle import Bundle
    from edgecv.errors import ConfigError
    from edgecv.quant.ort import check_method
    from edgecv.types import parse_backend_spec, parse_precision

    default = parse_precision(precision)
    targets: list[tuple[str, str]] = []
    for spec in backend or ["openvino"]:
        t = parse_backend_spec(spec, default)
        if t not in targets:
            targets.append(t)
    check_method(method)
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
    jobs: list[tuple[str, str, BuildConfig, QuantConfig | None]] = []
    for name, prec in targets:
        BUILDERS.get(name)  # unknown backend → one line listing the choices, before any work
        config = BuildConfig(
            precision=prec,  # type: ignore[arg-type]
            device=device or _default_device(name),
            workspace_mb=workspace_mb,
            emit_only=emit_trtexec,
            target=target,
            hardware_compat=hardware_compat,
            version_compatible=version_compatible,
        )
        # every INT8 target's options are checked (calibration data, method, budget) before any work
        qc = (
            quant_config(
                calib=calib,
                method=method,
                val=val,
                max_drop=max_drop,
                calib_limit=calib_limit,
                quantize_head=quantize_head,
                backend=name,
                device=config.device,
                build=config if name == "tensorrt" else None,
            )
            if prec == "int8"
            else None
        )
        jobs.append((name, prec, config, qc))
    b = Bundle.open(bundle)
    rows = [_build_one(b, name, config, qc) for name, _, config, qc in jobs]
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


def _build_one(b: Any, backend: str, config: BuildConfig, qc: QuantConfig | None) -> dict[str, Any]:
    """Build one artifact (INT8 through :func:`edgecv.quant.quantize`, the rest by the backend's builder); its row
    for the table and the JSON."""
    from edgecv.backends import BUILDERS

    t0 = time.perf_counter()
    if qc is not None:
        from edgecv.quant.api import quantize

        artifact = quantize(b, qc).artifact
        assert artifact is not None  # quantize adds an artifact unless QuantConfig.out is given
    else:
        artifact = BUILDERS.get(backend)().build(b, config)
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
        "emitted_only": config.emit_only,
    }
    if config.emit_only:
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
