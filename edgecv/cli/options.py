"""Shared CLI options as ``Annotated`` aliases (huggingface_hub style), so every command spells them alike."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of tables.")]
BundleArg = Annotated[Path, typer.Argument(help="Bundle folder written by 'edgecv export'.", show_default=False)]
BackendsOpt = Annotated[
    Optional[list[str]],
    typer.Option("--backend", "-b", help="Backend (repeatable): torch, onnxruntime, openvino, tensorrt."),
]
BackendOpt = Annotated[str, typer.Option("--backend", "-b", help="Backend: onnxruntime, openvino, tensorrt.")]
PrecisionOpt = Annotated[str, typer.Option("--precision", "-p", help="fp32, fp16, bf16 or int8.")]
DeviceOpt = Annotated[Optional[str], typer.Option("--device", help="Backend device (CPU, GPU, NPU, cuda:0…).")]
ThreadsOpt = Annotated[Optional[int], typer.Option("--threads", help="CPU threads for the backend.")]
OutOpt = Annotated[Path, typer.Option("--output", "-o", help="Output folder.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace an existing output.")]
RecordOpt = Annotated[bool, typer.Option(
    "--record/--no-record", help="Keep the JSON result under results/ in the bundle (hash-listed in the manifest; "
                                 "'edgecv report' draws it).")]
