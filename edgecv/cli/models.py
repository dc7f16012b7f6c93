"""``edgecv models``: list the zoo with parameters and FLOPs, and (``--check``) prove each model exports to ONNX
and runs on ONNX Runtime and OpenVINO with torch's numbers."""

from __future__ import annotations

import fnmatch
from typing import Annotated, Any

import typer

from edgecv.cli.options import JsonOpt

FLOPS_NOTE = (
    "GFLOPs = FLOPs / 1e9 at the default input, batch 1, counted by torch FlopCounterMode: "
    "1 multiply-add = 2 FLOPs (conv, linear, matmul); element-wise ops not counted"
)


def _cell(res: dict[str, Any]) -> str:
    if res.get("ok"):
        return f"ok {res['max_abs']:.1e}"
    return str(res.get("error") or "failed")


def register(app: typer.Typer) -> None:
    app.command("models")(models)


def models(
    pattern: Annotated[str | None, typer.Argument(help="Only names matching this glob, e.g. 'resnet*'.")] = None,
    task: Annotated[
        str | None, typer.Option("--task", "-t", help="Only this task (classify, segment, detect).")
    ] = None,
    tiny: Annotated[bool, typer.Option("--tiny", help="Only the tiny test variants.")] = False,
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Export each model to ONNX and run it on ONNX Runtime and OpenVINO (fp32), comparing with torch.",
        ),
    ] = False,
    exporter: Annotated[
        str,
        typer.Option(
            "--exporter",
            help="torch.onnx exporter for --check: auto (dynamo, "
            "TorchScript when dynamo fails, as 'edgecv "
            "export' does), dynamo or torchscript.",
        ),
    ] = "auto",
    opset: Annotated[int, typer.Option("--opset", help="ONNX opset for --check.")] = 18,
    json_out: JsonOpt = False,
) -> None:
    """List the model zoo: family, task, default input, parameters, GFLOPs; --check measures export.

    With --check, the exit code is 1 when any listed model fails to export or to match torch.
    """
    from edgecv.errors import ConfigError
    from edgecv.export.check import EXPORTERS, RTOL, check_model, model_stats
    from edgecv.zoo import list_models, model_cfg

    if exporter not in (*EXPORTERS, "auto"):
        raise ConfigError(f"--exporter: expected auto or one of {', '.join(EXPORTERS)}, got '{exporter}'")
    names = [
        n
        for n in list_models(task=task)
        if (not tiny or model_cfg(n)["tiny"]) and (pattern is None or fnmatch.fnmatchcase(n, pattern))
    ]
    if not names:
        known = sorted({model_cfg(n)["task"] for n in list_models()})
        raise ConfigError(
            f"no model matches (task={task!r}, pattern={pattern!r}, tiny={tiny}); tasks in the zoo: {', '.join(known)}"
        )

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from edgecv.cli._output import console, emit_json, err_console, table

    rows: list[dict[str, Any]] = []
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    ) as bar:
        job = bar.add_task("models", total=len(names))
        for name in names:
            bar.update(job, description=f"{'checking' if check else 'measuring'} {name}")
            row = model_stats(name)
            if check:
                res = check_model(name, exporter=exporter, opset=opset)
                row["check"] = {k: res[k] for k in ("export", "onnxruntime", "openvino")}
                row["check"]["exporter"] = res["exporter"]
                row["check_ok"] = all(res[k]["ok"] for k in ("export", "onnxruntime", "openvino"))
            rows.append(row)
            bar.advance(job)

    failed = [r["name"] for r in rows if check and not r["check_ok"]]
    if json_out:
        out: dict[str, Any] = {"flops_note": FLOPS_NOTE, "models": rows}
        if check:
            out["check"] = {
                "exporter": exporter,
                "opset": opset,
                "precision": "fp32",
                "tolerance": f"max abs <= {RTOL:g} * max(1, max|torch|)",
                "failed": failed,
            }
        emit_json("models", out, passed=not failed)
    else:
        cols = ["name", "family", "task", "input", "params (M)", "GFLOPs", "tiny"]
        if check:
            cols += ["exporter", "onnx", "openvino"]
        table_rows = []
        for r in rows:
            cells: list[Any] = [
                r["name"],
                r["family"],
                r["task"],
                "x".join(map(str, r["input_size"])),
                "-" if r["params_m"] is None else f"{r['params_m']:.3f}",
                "-" if r["gflops"] is None else f"{r['gflops']:.3f}",
                "tiny" if r["tiny"] else "",
            ]
            if check:
                c = r["check"]
                if not c["export"]["ok"]:
                    cells += [c["exporter"], c["export"]["error"], "export failed"]
                else:
                    cells += [c["exporter"], _cell(c["onnxruntime"]), _cell(c["openvino"])]
            table_rows.append(cells)
        caption = FLOPS_NOTE
        if check:
            caption += (
                f". onnx = ONNX Runtime CPU, openvino = OpenVINO CPU f32; exporter {exporter}, "
                f"opset {opset}; ok = max abs error <= {RTOL:g} x max(1, max|torch|), value shown"
            )
        t = table("edgecv model zoo", cols, table_rows, caption=caption)
        t.columns[0].no_wrap = True  # names are what people copy; let other columns wrap instead
        # piped output (logs, CI) gets rich's 80-column default; give it room instead of wrapping every cell
        out_console = console if console.is_terminal else Console(width=max(console.width, 160))
        out_console.print(t)
        for r in rows:
            if r["flops_error"]:
                console.print(f"{r['name']}: {r['flops_error']}", markup=False, highlight=False)
        if failed:
            console.print(f"[red]{len(failed)} model(s) failed the check: {', '.join(failed)}[/red]")
    if failed:
        raise typer.Exit(1)
