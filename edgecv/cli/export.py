"""``edgecv export``: a PyTorch model (zoo name, torchvision, file.py:factory, checkpoint, TorchScript, .pt2) → a
bundle with ``model.onnx``, ``reference.npz`` and ``manifest.json``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from edgecv.cli.options import ForceOpt, JsonOpt, OutOpt


def _floats(text: str | None, field: str) -> list[float] | None:
    if text is None:
        return None
    from edgecv.errors import ConfigError

    try:
        vals = [float(v) for v in text.replace(",", " ").split()]
    except ValueError:
        vals = []
    if not vals:
        raise ConfigError(f"{field}: expected comma-separated numbers like 0.485,0.456,0.406, got '{text}'")
    return vals


def _kwargs(items: list[str] | None) -> dict[str, Any]:
    import yaml

    from edgecv.errors import ConfigError

    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip().isidentifier():
            raise ConfigError(f"kwarg: expected KEY=VALUE (VALUE read as YAML), got '{item}'")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ConfigError(f"kwarg {key}: cannot read '{value}' as YAML ({exc.__class__.__name__})") from exc
    return out


def _class_names(path: Path) -> list[str]:
    from edgecv.errors import ConfigError

    if not path.is_file():
        raise ConfigError(f"class-names: expected a text file with one name per line, found nothing at '{path}'")
    names = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if not names:
        raise ConfigError(f"class-names: '{path}' holds no names")
    return names


def register(app: typer.Typer) -> None:
    app.command("export")(export)


def export(
    source: Annotated[
        str,
        typer.Argument(
            help="Zoo name, torchvision:<name>, ultralytics:<model>.yaml, path/file.py:factory, checkpoint "
            "(.pt/.pth/.ckpt with --arch; an Ultralytics best.pt with --trust-checkpoint), TorchScript archive "
            "or torch.export .pt2.",
            show_default=False,
        ),
    ],
    output: OutOpt,
    weights: Annotated[Path | None, typer.Option("--weights", "-w", help="Local state-dict file to load.")] = None,
    arch: Annotated[
        str | None,
        typer.Option(
            "--arch", help="Architecture for a state-dict checkpoint SOURCE (zoo name, torchvision:…, file.py:fn)."
        ),
    ] = None,
    kwarg: Annotated[
        list[str] | None, typer.Option("--kwarg", help="Model builder keyword KEY=VALUE (YAML value); repeatable.")
    ] = None,
    input_shape: Annotated[
        str | None, typer.Option("--input-shape", help="NxCxHxW, e.g. 1x3x224x224 (default: the model's).")
    ] = None,
    opset: Annotated[int, typer.Option("--opset", help="ONNX opset.")] = 18,
    dynamic_batch: Annotated[
        bool,
        typer.Option("--dynamic-batch/--static-batch", help="Dynamic batch dimension (1..--max-batch) or fixed."),
    ] = True,
    max_batch: Annotated[int, typer.Option("--max-batch", help="Largest batch of a dynamic export.")] = 8,
    no_simplify: Annotated[bool, typer.Option("--no-simplify", help="Skip onnxslim simplification.")] = False,
    num_classes: Annotated[
        int | None, typer.Option("--num-classes", help="Number of classes (passed to the model builder).")
    ] = None,
    class_names: Annotated[
        Path | None, typer.Option("--class-names", help="Text file, one class name per line.")
    ] = None,
    task: Annotated[
        str | None,
        typer.Option("--task", help="classify, segment, detect or generic (default: the model's, else guessed)."),
    ] = None,
    mean: Annotated[str | None, typer.Option("--mean", help="Normalisation mean, e.g. 0.485,0.456,0.406.")] = None,
    std: Annotated[str | None, typer.Option("--std", help="Normalisation std, e.g. 0.229,0.224,0.225.")] = None,
    resize: Annotated[str | None, typer.Option("--resize", help="stretch, letterbox or center_crop.")] = None,
    color: Annotated[str | None, typer.Option("--color", help="RGB, BGR or GRAY.")] = None,
    n_reference: Annotated[int, typer.Option("--n-reference", help="Reference samples saved for validation.")] = 4,
    reference_data: Annotated[
        Path | None,
        typer.Option(
            "--reference-data",
            help="In-domain reference images: an image folder or a data set (COCO JSON, a "
            "folder with val.json or a val/ split); --n-reference of them, spread over "
            "the classes (default: photos shipped with scikit-image). A detector needs "
            "them for validate to compare boxes.",
        ),
    ] = None,
    rewrite: Annotated[
        list[str] | None, typer.Option("--rewrite", help="Model rewrite pass to apply before export; repeatable.")
    ] = None,
    nms: Annotated[
        str | None,
        typer.Option(
            "--nms",
            help="Detectors: 'graph' (ONNX NonMaxSuppression in the model, fixed max detections; "
            "default) or 'host' (raw heads, numpy NMS on the device); set-prediction "
            "detectors (DETR) export with no NMS ('none').",
        ),
    ] = None,
    score_threshold: Annotated[
        float,
        typer.Option(
            "--conf",
            help="Detectors: the score threshold built into the model's post-processing (low, so mAP sees the "
            "whole curve; run and bench filter again with their own --conf).",
        ),
    ] = 0.001,
    iou_threshold: Annotated[float, typer.Option("--iou-threshold", help="Detectors: NMS IoU.")] = 0.5,
    max_det: Annotated[int, typer.Option("--max-det", help="Detectors: detections per image.")] = 100,
    decode: Annotated[
        str | None,
        typer.Option(
            "--decode",
            help="Detectors nobody wrote an adapter for: decode the raw head as yolo-anchor-free, "
            "yolo-anchors or ssd (implies --task detect).",
        ),
    ] = None,
    decode_opt: Annotated[
        list[str] | None,
        typer.Option(
            "--decode-opt",
            help="--decode option KEY=VALUE, e.g. strides=8,16,32, anchors=10,13,16,30/…, "
            "num_classes=80, box=cxcywh, objectness=true, activation=sigmoid; repeatable.",
        ),
    ] = None,
    trust_checkpoint: Annotated[
        bool,
        typer.Option(
            "--trust-checkpoint",
            help="Load an Ultralytics checkpoint (a full pickle: loading it runs code from the "
            "file). Only for files you trust; recorded in the manifest.",
        ),
    ] = False,
    force: ForceOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Export SOURCE to ONNX into the bundle folder OUTPUT and check it against PyTorch with ONNX Runtime."""
    from edgecv.errors import ConfigError
    from edgecv.export.sources import load_model, parse_input_shape
    from edgecv.export.workflow import ExportPrep, check_contract_overrides, export_loaded

    shape = parse_input_shape(input_shape) if input_shape is not None else None
    if max_batch < 1:
        raise ConfigError(f"max-batch: expected at least 1, got {max_batch}")
    names = _class_names(class_names) if class_names is not None else None
    kwargs = _kwargs(kwarg)
    if num_classes is not None:
        if num_classes < 1:
            raise ConfigError(f"num-classes: expected a positive integer, got {num_classes}")
        kwargs["num_classes"] = num_classes
    if names is not None and num_classes is not None and len(names) != num_classes:
        raise ConfigError(f"class-names: '{class_names}' has {len(names)} names but --num-classes is {num_classes}")
    overrides: dict[str, Any] = {}
    for field, val in (("task", task), ("resize", resize), ("color", color)):
        if val is not None:
            overrides[field] = val
    for field, text in (("mean", mean), ("std", std)):
        vals = _floats(text, field)
        if vals is not None:
            overrides[field] = vals
    if names is not None:
        overrides["class_names"] = names
    decode_spec = None
    if decode is not None or decode_opt:
        from edgecv.export.adapters.declarative import parse_decode_spec

        if decode is None:
            raise ConfigError("--decode-opt: expected --decode yolo-anchor-free|yolo-anchors|ssd with it")
        opts: dict[str, str] = {}
        for item in decode_opt or []:
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise ConfigError(f"--decode-opt: expected KEY=VALUE, got '{item}'")
            opts[key.strip()] = value.strip()
        decode_spec = parse_decode_spec(decode, opts)
        if task is not None and task != "detect":
            raise ConfigError(f"--decode: expected --task detect (or none), found --task {task}")
        overrides["task"] = "detect"
    # validate the contract overrides before loading (and possibly building) the model
    check_contract_overrides(overrides)
    from edgecv.rewrite import apply_passes

    loaded = load_model(
        source,
        weights=weights,
        input_shape=shape,
        model_kwargs=kwargs or None,
        arch=arch,
        trust_checkpoint=trust_checkpoint,
        passes=apply_passes,
    )
    prep = ExportPrep(overrides, nms, score_threshold, iou_threshold, max_det, decode_spec)
    result = export_loaded(
        loaded,
        output,
        prep,
        dynamic_batch=dynamic_batch,
        max_batch=max_batch,
        opset=opset,
        simplify=not no_simplify,
        n_reference=n_reference,
        force=force,
        reference_data=reference_data,
        rewrite=rewrite or None,
        passes=apply_passes,
    )
    if json_out:
        from edgecv.cli._output import emit_json

        emit_json("export", result.to_dict(), passed=True)
        return
    _print_summary(result)


def _print_summary(result: Any) -> None:
    from edgecv.cli._output import console, table

    c = result.contract
    rows = [
        ["exporter", result.exporter],
        ["opset", result.opset],
        [
            "nodes",
            f"{result.nodes_exported} → {result.nodes_final}"
            if result.simplified
            else f"{result.nodes_exported} (not simplified)",
        ],
        ["file size", _size(result.file_size)],
        ["input", f"{c.input_name} {'x'.join(map(str, c.input_shape))} {c.dtype} {c.layout}"],
        ["batch", f"dynamic {c.batch_range[0]}..{c.batch_range[2]}" if c.dynamic_batch else "static"],
        ["outputs", ", ".join(c.output_names)],
        ["task", c.task + (f" ({len(c.class_names)} class names)" if c.class_names else "")],
        [
            "reference",
            f"{result.reference.get('kind')} ({len(result.parity) and result.parity[0]['shape'][0]} samples)",
        ],
        ["export time", f"{result.timings.get('export', 0):.2f} s (total {result.timings.get('total', 0):.2f} s)"],
    ]
    console.print(table(f"export → {result.path}", ["", "value"], rows))
    if result.parity:
        prow = [
            [
                p["name"],
                p["max_abs"],
                p["max_rel"],
                "—" if p["cosine"] is None else f"{p['cosine']:.7f}",
                "[green]PASS[/]" if p["passed"] else "[red]FAIL[/]",
            ]
            for p in result.parity
        ]
        console.print(
            table(
                "parity: ONNX Runtime vs PyTorch (fp32 tolerance)",
                ["output", "max abs", "max rel", "cosine", "result"],
                prow,
            )
        )
    for n in result.notices:
        console.print(f"[yellow]note:[/] {n}", highlight=False)
    for p in result.parity:
        for f in p.get("failures") or []:
            console.print(f"[red]parity {p['name']}:[/] {f}", highlight=False)
    console.print(f"bundle written to [bold]{result.path}[/]", highlight=False)


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"
