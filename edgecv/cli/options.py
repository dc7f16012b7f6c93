"""Shared CLI options as ``Annotated`` aliases (huggingface_hub style), so every command spells them alike."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer


def resolve_val(bundle: Path, val: Path) -> Path:
    """``--val`` in any accepted layout (the data set root or its val split) → the path the bundle's task reader
    takes; a wrong or empty layout raises here, one line, before any work (the one rule for every ``--val``)."""
    from edgecv.bundle import Bundle
    from edgecv.data.layout import find_layout

    contract = Bundle.open(bundle, verify=False).contract
    return find_layout(contract.task, val, split="val", what="--val", classes=contract.class_names).path


def _val_callback(ctx: typer.Context, value: Path | None) -> Path | None:
    # the bundle names the task; when --val comes first on the command line, the bundle's callback resolves it
    bundle = ctx.params.get("bundle")
    if value is None or bundle is None:
        return value
    return resolve_val(bundle, value)


def _bundle_callback(ctx: typer.Context, value: Path) -> Path:
    val = ctx.params.get("val")
    if isinstance(val, Path) and value is not None:
        ctx.params["val"] = resolve_val(value, val)
    return value


JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of tables.")]
BundleArg = Annotated[
    Path,
    typer.Argument(help="Bundle folder written by 'edgecv export'.", show_default=False, callback=_bundle_callback),
]
BackendsOpt = Annotated[
    list[str] | None,
    typer.Option("--backend", "-b", help="Backend (repeatable): torch, onnxruntime, openvino, tensorrt, remote."),
]
BackendOpt = Annotated[str, typer.Option("--backend", "-b", help="Backend: onnxruntime, openvino, tensorrt, remote.")]
PrecisionOpt = Annotated[str, typer.Option("--precision", "-p", help="fp32, fp16, bf16 or int8.")]
# validate / bench / run: no -p means "what the bundle has" (every artifact, or the best one for run)
SomePrecisionOpt = Annotated[
    str | None,
    typer.Option(
        "--precision",
        "-p",
        help="fp32, fp16, bf16 or int8: the precision of every --backend without one; without "
        "--backend, the bundle's targets at this precision (default: all of them).",
    ),
]
BackendsBuildOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--backend",
        "-b",
        help="NAME or NAME:PRECISION (repeatable): openvino, onnxruntime, tensorrt (default openvino).",
    ),
]
RunBackendOpt = Annotated[
    str | None,
    typer.Option(
        "--backend",
        "-b",
        help="NAME or NAME:PRECISION: onnxruntime, openvino, tensorrt, remote (default: the best "
        "artifact the bundle holds for this machine).",
    ),
]
DeviceOpt = Annotated[str | None, typer.Option("--device", help="Backend device (CPU, GPU, NPU, cuda:0…).")]
ThreadsOpt = Annotated[int | None, typer.Option("--threads", help="CPU threads for the backend.")]
OutOpt = Annotated[Path, typer.Option("--output", "-o", help="Output folder.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace an existing output.")]
# the torch reference: a bundle is data, so a model file is imported only when the user names it here
ModelSourceOpt = Annotated[
    str | None,
    typer.Option(
        "--model-source",
        help="The model the bundle came from (path/to/file.py:factory, a checkpoint, …), to rebuild the "
        "live torch reference; needed when the bundle was exported from a file, since edgecv never "
        "runs a file a bundle names. Runs that file, as any Python import does.",
    ),
]
ModelWeightsOpt = Annotated[
    Path | None,
    typer.Option(
        "--weights", help="Local state dict for the live torch reference, when the bundle was exported with one."
    ),
]
RebuildOpt = Annotated[
    bool,
    typer.Option(
        "--rebuild",
        help="TensorRT: rebuild an engine built for another GPU or TensorRT version from the bundle's ONNX "
        "(instead of refusing it).",
    ),
]
EndpointOpt = Annotated[
    str | None,
    typer.Option(
        "--endpoint",
        help="-b remote: the server, http://HOST:PORT or grpc://HOST:PORT (or EDGECV_ENDPOINT); "
        "token from EDGECV_TOKEN.",
    ),
]
RemoteModelOpt = Annotated[
    str | None, typer.Option("--model-name", help="-b remote: served model name (default: the bundle's name).")
]


def with_remote(opener: Any, endpoint: str | None, model: str | None) -> Any:
    """``opener`` that also passes ``--endpoint`` / ``--model-name`` to the remote backend (and nothing to others)."""
    if not endpoint and not model:
        return opener

    def _open(bundle: Any, backend: str, precision: str = "fp32", **kw: Any) -> Any:
        if backend == "remote":
            kw.update(endpoint=endpoint, model=model)
        return opener(bundle, backend, precision, **kw)

    return _open


RecordOpt = Annotated[
    bool,
    typer.Option(
        "--record/--no-record",
        help="Keep the JSON result under results/ in the bundle (hash-listed in the manifest; "
        "'edgecv report' draws it).",
    ),
]

# INT8 options, shared by compile and quantize (one name, one default, one help each)
CalibOpt = Annotated[
    Path | None,
    typer.Option("--calib", help="int8: calibration data, a folder of images, a video or an .npz of inputs."),
]
MethodOpt = Annotated[
    str,
    typer.Option(
        "--method",
        help="int8 calibration: minmax, entropy, percentile, or auto (each tried on a held-out part of "
        "the data, the best kept).",
    ),
]
ValOpt = Annotated[
    Path | None,
    typer.Option(
        "--val",
        help="int8: validation data for the task metric, the data set root or its val split (classify: "
        "ImageFolder; detect: COCO or YOLO; segment: images/ + masks/; see the README's layout table).",
        callback=_val_callback,
    ),
]
# validate: the same data and the same layout rule, another use
ValidateValOpt = Annotated[
    Path | None,
    typer.Option(
        "--val",
        help="Validation data, the data set root or its val split (classify: ImageFolder; detect: COCO or "
        "YOLO; segment: images/ + masks/): report the task metric (top-1, mIoU, mAP) of torch and every backend.",
        callback=_val_callback,
    ),
]
MaxDropOpt = Annotated[
    float | None,
    typer.Option(
        "--max-drop", help="int8: accuracy budget in task-metric points (needs --val); sensitive layers stay float."
    ),
]
CalibLimitOpt = Annotated[
    int | None, typer.Option("--calib-limit", help="int8: use at most this many calibration samples.")
]

# data sets: one argument, one --split, one --layout wherever a command reads a training/validation data set
DataArg = Annotated[
    Path,
    typer.Argument(
        help="Data set, its root or a split folder: ImageFolder (classify), COCO JSON or YOLO folders (detect), "
        "images/ + masks/ (segment); see the README's layout table.",
        show_default=False,
    ),
]
SplitOpt = Annotated[str, typer.Option("--split", help="The split a data set root is read at (train, val, test).")]
DataLayoutOpt = Annotated[
    str | None,
    typer.Option(
        "--layout", help="Data set layout: imagefolder, coco, yolo or masks (default: found from the folder)."
    ),
]
QuantizeHeadOpt = Annotated[
    bool,
    typer.Option(
        "--quantize-head", help="Also quantize the ops after the last Conv/Gemm (detector heads stay float by default)."
    ),
]
#: --method's default for every command that quantizes (the library's own default is QuantConfig's, minmax)
METHOD_DEFAULT = "auto"


def quant_config(
    *,
    calib: Path | None,
    method: str,
    val: Path | None,
    max_drop: float | None,
    calib_limit: int | None,
    quantize_head: bool,
    **kw: Any,
) -> Any:
    """The :class:`edgecv.quant.QuantConfig` the shared INT8 options above describe (``kw``: backend, device,
    build, out, force); its checks raise the one-line errors."""
    from edgecv.quant.config import QuantConfig

    return QuantConfig(
        calib=calib,
        method=method,
        val=val,
        max_drop=max_drop,
        limit=calib_limit,
        float_head=not quantize_head,
        **kw,
    )
