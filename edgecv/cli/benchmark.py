"""``edgecv benchmark MODEL``: from a model to one table — every engine × precision this machine runs, with
parity against PyTorch, the task metric and latency (in the spirit of Ultralytics' ``benchmark``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from edgecv.cli.options import CalibOpt, ForceOpt, JsonOpt, MaxDropOpt, ThreadsOpt, ValOpt


def register(app: typer.Typer) -> None:
    app.command("benchmark")(benchmark_cmd)


def benchmark_cmd(
    model: Annotated[
        str,
        typer.Argument(
            help="Zoo name, torchvision:<name>, path/file.py:factory or a checkpoint (with --weights).",
            show_default=False,
        ),
    ],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Output folder (default out/benchmark/<model>); re-running resumes it."),
    ] = None,
    weights: Annotated[Path | None, typer.Option("--weights", "-w", help="Local state-dict file.")] = None,
    calib: CalibOpt = None,
    val: ValOpt = None,
    val_limit: Annotated[int | None, typer.Option("--val-limit", help="Use at most N val images.")] = None,
    max_drop: MaxDropOpt = None,
    min_time: Annotated[float, typer.Option("--min-time", help="Bench seconds per backend and batch.")] = 1.0,
    batch: Annotated[list[int] | None, typer.Option("--batch", help="Batch size (repeatable).")] = None,
    threads: ThreadsOpt = None,
    csv_out: Annotated[Path | None, typer.Option("--csv", help="Also write the table as CSV.")] = None,
    md_out: Annotated[Path | None, typer.Option("--md", help="Also write the table as Markdown.")] = None,
    allow_unchecked: Annotated[
        bool,
        typer.Option(
            "--allow-unchecked",
            help="Accept a comparison that had nothing to compare (e.g. a random-weight model whose "
            "reference photos all give one class); without it that row does not agree.",
        ),
    ] = False,
    force: ForceOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Export MODEL, build every engine x precision this machine runs (INT8 with --calib), validate each against
    PyTorch (the task metric with --val) and benchmark it: one table, also as CSV/Markdown."""
    from edgecv.cli._output import console, emit_json, err_console, print_table
    from edgecv.pipeline import benchmark_model, check_benchmark_inputs

    check_benchmark_inputs(model, calib, val)  # one line, exit 2, before anything is written
    name = model.rpartition(":")[2] or Path(model).stem
    out = output or Path("out") / "benchmark" / Path(name).stem
    say = (lambda m: err_console.print(m, markup=False)) if json_out else (lambda m: console.print(m, markup=False))
    res, skipped = benchmark_model(
        model,
        out,
        weights=weights,
        calib=calib,
        val=val,
        val_limit=val_limit,
        max_drop=max_drop,
        bench_min_time=min_time,
        batches=batch,
        threads=threads,
        force=force,
        allow_unchecked=allow_unchecked,
        log=say,
    )
    header = [
        "backend",
        "precision",
        "ran",
        res.metric_name or "metric",
        "delta vs torch",
        "agrees with torch",
        "batch",
        "p50 ms",
        "p99 ms",
        "speedup vs torch",
        "size MB",
        "error",
    ]
    rows = [
        [
            r["backend"],
            r["precision"],
            r["precision_ran"],
            _r(r["metric"]),
            _r(r["delta"]),
            r["agrees_with_torch"],
            r["batch"],
            _r((r["latency"] or {}).get("p50_ms"), 3),
            _r((r["latency"] or {}).get("p99_ms"), 3),
            _r(r["speedup_vs_torch"]),
            _size(res.bundle, r["backend"], r["precision"]),
            r["error"],
        ]
        for r in res.rows
    ]
    if csv_out is not None:
        import csv

        with open(csv_out, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            w.writerows(rows)
    if md_out is not None:
        md = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        md += ["| " + " | ".join("" if c is None else str(c) for c in row) + " |" for row in rows]
        Path(md_out).write_text("\n".join(md) + "\n")
    failed = [f"{r['backend']}:{r['precision']}" for r in res.rows if r["error"] or r["agrees_with_torch"] is False]
    if json_out:
        emit_json("benchmark", {**res.to_dict(), "skipped": skipped, "failed": failed}, passed=not failed)
    else:
        print_table(
            f"benchmark {model} → {res.bundle}",
            header,
            rows,
            digits=3,
            caption="agrees with torch: validate's output comparison at the precision's tolerance; "
            "speedup: ratio of medians against torch eager in the same run",
        )
        for line in skipped:
            console.print(f"skipped {line}", highlight=False)
    if failed:
        from edgecv.validate.core import ValidationFailed

        raise ValidationFailed(f"{', '.join(failed)} did not agree with torch or failed to run (see the table)")


def _r(v: Any, nd: int = 2) -> Any:
    return round(v, nd) if isinstance(v, float) else v


def _size(bundle: Path | None, backend: str, precision: str) -> float | None:
    """Megabytes of every file of the artifact (``model.onnx`` for ONNX Runtime fp32; none for torch)."""
    if bundle is None or backend == "torch":
        return None
    from edgecv.bundle import Bundle
    from edgecv.cli.compile import artifact_size

    b = Bundle.open(bundle, verify=False)
    art = b.artifact(backend, precision)
    if art is None:
        return round(b.onnx_path.stat().st_size / 2**20, 3) if precision == "fp32" else None
    return round(artifact_size(b, art.path) / 2**20, 3)
