"""``edgecv lint``: quantization-risk report of a PyTorch model (activation ranges, risky ops, the pass that fixes each)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgecv.cli.options import JsonOpt


def register(app: typer.Typer) -> None:
    app.command("lint")(lint)


def lint(
    model: Annotated[
        str,
        typer.Argument(
            help="Model source: zoo name, torchvision:<name>, file.py:factory, checkpoint...", show_default=False
        ),
    ],
    input_shape: Annotated[str | None, typer.Option("--input-shape", help="NxCxHxW (default: the model's).")] = None,
    weights: Annotated[Path | None, typer.Option("--weights", help="State-dict file to load.")] = None,
    samples: Annotated[int, typer.Option("--samples", help="Number of inputs (skimage photos, else noise).")] = 4,
    all_layers: Annotated[bool, typer.Option("--layers", help="Also print the range of every layer.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Run a few inputs through MODEL, record per-layer activation ranges and flag what quantizes badly."""
    from edgecv.cli._output import console, emit_json, fmt, print_table
    from edgecv.errors import ConfigError
    from edgecv.export.sources import load_model, parse_input_shape
    from edgecv.rewrite import apply_passes
    from edgecv.rewrite.lint import lint_inputs, lint_model

    if samples < 1:
        raise ConfigError(f"--samples: expected an integer >= 1, found {samples}")
    shape = parse_input_shape(input_shape) if input_shape else None
    import torch

    torch.manual_seed(0)  # randomly initialised zoo models: the same weights on every run
    loaded = load_model(model, weights=weights, input_shape=shape, passes=apply_passes)
    full = tuple(loaded.contract.input_shape)
    inputs, source = lint_inputs(full, samples, mean=loaded.contract.mean, std=loaded.contract.std)
    report = lint_model(loaded.module, inputs, source)
    if weights is None and not loaded.source_info.get("weights") and loaded.source_info.get("kind") == "zoo":
        report.notes.append("random-init weights (no --weights): ranges show the architecture, not a trained model")
    if json_out:
        emit_json("lint", {"model": model, **report.to_dict()}, passed=True)
        return
    rows = [[f.layer, f.op, f.severity, f.issue, f.measured, f.fix or "-", f.advice] for f in report.findings]
    if not rows:
        console.print(
            f"No quantization risks found in {loaded.name} ({source}, via {report.method}, "
            f"{len(report.layers)} layers measured). {'; '.join(report.notes)}"
        )
        return
    print_table(
        f"Quantization risks: {loaded.name} ({source}, {'x'.join(map(str, inputs.shape))}, via {report.method})",
        ["layer", "op", "severity", "issue", "measured", "fix pass", "advice"],
        rows,
        caption="; ".join(report.notes) or None,
    )
    counts = {s: sum(f.severity == s for f in report.findings) for s in ("high", "medium", "low")}
    console.print(
        f"{len(report.findings)} findings: {counts['high']} high, {counts['medium']} medium, {counts['low']} low"
    )
    if all_layers:
        print_table(
            "Activation ranges",
            ["layer", "op", "min", "max", "p99.99 |x|", "max/p99.9", "channel ratio"],
            [[s.name, s.op, s.min, s.max, s.p9999_abs, s.outlier_score, fmt(s.channel_ratio)] for s in report.layers],
        )
