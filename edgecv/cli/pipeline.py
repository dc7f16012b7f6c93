"""``edgecv pipeline RECIPE -o OUT``: train-or-load → rewrite → export → compile → validate → bench."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgecv.cli.options import JsonOpt


def register(app: typer.Typer) -> None:
    app.command("pipeline")(pipeline_cmd)


def pipeline_cmd(
    recipe: Annotated[Path, typer.Argument(help="Recipe YAML (see recipes/).", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder.")] = Path("out/pipeline"),
    weights: Annotated[Path | None, typer.Option("--weights", help="Use this checkpoint; skip training.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Re-run every step, even those up to date.")] = False,
    min_time: Annotated[float, typer.Option("--min-time", help="Bench seconds per backend and batch.")] = 1.0,
    val_limit: Annotated[int | None, typer.Option("--val-limit", help="Evaluate at most N val images.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Run a recipe end to end into one bundle, skipping steps that are up to date, and print a summary."""
    from edgecv.cli._output import console, emit_json, err_console, print_table
    from edgecv.pipeline import run_recipe

    res = run_recipe(
        recipe,
        output,
        weights=weights,
        force=force,
        bench_min_time=min_time,
        val_limit=val_limit,
        log=(lambda m: err_console.print(m, markup=False)) if json_out else (lambda m: console.print(m, markup=False)),
    )
    if json_out:
        emit_json("pipeline", res.to_dict(), passed=True)
        return
    print_table(
        "steps",
        ["step", "status", "seconds", "detail"],
        [[s.step, s.status, round(s.seconds, 1), s.detail] for s in res.steps],
        digits=1,
    )
    print_table(
        f"summary: {recipe} → {res.bundle}",
        [
            "backend",
            "precision",
            "ran",
            res.metric_name,
            "Δ vs torch",
            "agrees w/ torch",
            "batch",
            "p50 ms",
            "p99 ms",
            "speedup vs torch",
        ],
        [
            [
                r["backend"],
                r["precision"],
                r["precision_ran"],
                r["metric"],
                r["delta"],
                r["agrees_with_torch"],
                r["batch"],
                (r["latency"] or {}).get("p50_ms"),
                (r["latency"] or {}).get("p99_ms"),
                f"{r['speedup_vs_torch']:.2f}x" if r["speedup_vs_torch"] else None,
            ]
            for r in res.rows
        ],
        digits=2,
    )
