"""``edgecv rewrite``: apply rewrite passes to a model and compare before/after (params, GFLOPs, drift, latency)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from edgecv.cli.options import JsonOpt


def register(app: typer.Typer) -> None:
    app.command("rewrite")(rewrite)


def rewrite(
    model: Annotated[
        str | None,
        typer.Argument(
            help="Model source: zoo name, torchvision:<name>, file.py:factory, checkpoint...", show_default=False
        ),
    ] = None,
    passes: Annotated[list[str] | None, typer.Option("--pass", help="Pass name (repeatable, in order).")] = None,
    input_shape: Annotated[str | None, typer.Option("--input-shape", help="NxCxHxW (default: the model's).")] = None,
    weights: Annotated[Path | None, typer.Option("--weights", help="State-dict file to load.")] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the rewritten model (.pt: state dict + arch + passes).")
    ] = None,
    groups: Annotated[int, typer.Option("--groups", help="G for the group_conv pass.")] = 2,
    finetune: Annotated[
        Path | None, typer.Option("--finetune", help="Data folder: distil the rewritten model from the original.")
    ] = None,
    epochs: Annotated[int, typer.Option("--epochs", help="Fine-tuning epochs.")] = 1,
    bench: Annotated[bool, typer.Option("--bench/--no-bench", help="Measure ONNX Runtime / OpenVINO latency.")] = True,
    bench_time: Annotated[float, typer.Option("--bench-time", help="Seconds of timing per model and backend.")] = 1.0,
    list_only: Annotated[bool, typer.Option("--list", help="List the passes and exit.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing --output file.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Rewrite MODEL with the given passes; exact passes certify themselves, lossy ones report their drift."""
    from edgecv.cli._output import console, emit_json, print_table
    from edgecv.errors import ConfigError
    from edgecv.rewrite import list_passes

    if list_only:
        listed = list_passes()
        if json_out:
            emit_json("rewrite", {"passes": listed}, passed=True)
        else:
            print_table(
                "Rewrite passes",
                ["pass", "exact", "what it does"],
                [[r["name"], r["exact"], r["description"]] for r in listed],
            )
        return
    if model is None:
        raise ConfigError(
            "MODEL: expected a model source (zoo name, torchvision:<name>, file.py:factory...), found none"
        )
    if not passes:
        raise ConfigError("--pass: expected at least one pass (see 'edgecv rewrite --list'), found none")
    if output is not None and output.suffix not in (".pt", ".pth"):
        raise ConfigError(f"--output: expected a .pt/.pth file, found '{output}'")
    from edgecv._io import check_output_files

    # the model file (a checkpoint, or the .py of file.py:factory) and the weights are inputs: never overwritten
    candidates = [model, model.rpartition(":")[0], weights]
    inputs = [Path(str(p)) for p in candidates if p and Path(str(p)).expanduser().is_file()]
    check_output_files(inputs, {"--output": output}, force=force)

    from edgecv.export.sources import load_model, parse_input_shape
    from edgecv.rewrite import apply_passes, get_pass
    from edgecv.rewrite.compare import run_rewrite

    # check every flag before the (slow) model load and passes
    options = {"group_conv": {"groups": groups}} if "group_conv" in passes else {}
    for name in passes:
        get_pass(name, **options.get(name, {}))
    if finetune is not None and not finetune.exists():
        raise ConfigError(f"--finetune: expected an existing data folder, found no '{finetune}'")
    if epochs < 1:
        raise ConfigError(f"--epochs: expected an integer >= 1, found {epochs}")
    shape = parse_input_shape(input_shape) if input_shape else None
    import torch

    torch.manual_seed(0)  # randomly initialised zoo models: the same weights on every run
    loaded = load_model(model, weights=weights, input_shape=shape, passes=apply_passes)
    result = run_rewrite(
        loaded,
        model,
        list(passes),
        options,
        bench=bench,
        bench_time=bench_time,
        output=output,
        finetune=finetune,
        epochs=epochs,
    )
    if json_out:
        emit_json("rewrite", result, passed=True)
        return
    rep = result["report"]
    print_table(
        f"Passes on {loaded.name} (drift on {result['sample']})",
        ["pass", "exact", "method", "changes", "max abs diff", "cosine", "top-1 agree", "params"],
        [
            [
                p["name"],
                p["exact"],
                p["method"],
                p["changes"],
                p["max_abs"],
                p["cosine"],
                p["top1_agreement"],
                f"{p['params_before']} -> {p['params_after']}",
            ]
            for p in rep["passes"]
        ],
        digits=6,
    )
    for p in rep["passes"]:
        for note in p["notes"]:
            console.print(f"  {p['name']}: {note}")
    b, a = result["before"], result["after"]
    rows: list[list[Any]] = [
        ["params", b["params"], a["params"]],
        ["GFLOPs", b["gflops"], a["gflops"]],
        ["max abs output diff", 0.0, rep["max_abs"]],
        ["cosine", 1.0, rep["cosine"]],
        ["top-1 agreement", 1.0, rep["top1_agreement"]],
    ]
    for key, label in (("onnxruntime", "ONNX Runtime fp32 p50 ms"), ("openvino", "OpenVINO fp32 p50 ms")):
        if key in b or key in a:
            rows.append([label, b.get(key), a.get(key)])
    print_table(
        f"Before / after: {loaded.name} with {', '.join(passes)}",
        ["", "before", "after"],
        rows,
        digits=4,
        caption="latency: median p50 of 3 alternating rounds, CPU, measured in this run" if bench else None,
    )
    for line in result["messages"]:
        console.print(line)
