"""``edgecv validate``: compare every backend's outputs with the PyTorch reference; exit 1 when a check fails."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from edgecv.cli.options import (
    BackendsOpt,
    BundleArg,
    DeviceOpt,
    EndpointOpt,
    JsonOpt,
    ModelSourceOpt,
    ModelWeightsOpt,
    RebuildOpt,
    RecordOpt,
    RemoteModelOpt,
    SomePrecisionOpt,
    ThreadsOpt,
    ValidateValOpt,
    with_remote,
)

if TYPE_CHECKING:
    from rich.console import Console


def wide_console() -> Console:
    """The shared console on a terminal; a 200-column one when piped, so wide tables are not cut to 80."""
    from rich.console import Console

    from edgecv.cli._output import console

    return console if console.is_terminal else Console(width=200)


def register(app: typer.Typer) -> None:
    app.command("validate")(validate)


def validate(
    bundle: BundleArg,
    backend: BackendsOpt = None,
    precision: SomePrecisionOpt = None,
    reference: Annotated[
        str, typer.Option("--reference", help="auto (live torch if it loads, else reference.npz), live or npz.")
    ] = "auto",
    batch: Annotated[
        int | None, typer.Option("--batch", help="Samples to compare (the saved inputs are sliced or repeated).")
    ] = None,
    device: DeviceOpt = None,
    threads: ThreadsOpt = None,
    atol: Annotated[
        float | None, typer.Option("--atol", help="Absolute max-error allowance, added to rtol x output scale.")
    ] = None,
    rtol: Annotated[
        float | None,
        typer.Option(
            "--rtol",
            help="Max error allowed as a fraction of the output scale max|ref| (overrides the precision's default).",
        ),
    ] = None,
    min_cosine: Annotated[float | None, typer.Option("--min-cosine", help="Lowest cosine allowed.")] = None,
    min_top1: Annotated[
        float | None, typer.Option("--min-top1", help="Lowest top-1 agreement allowed (classify).")
    ] = None,
    val: ValidateValOpt = None,
    val_limit: Annotated[int | None, typer.Option("--val-limit", help="Use at most N val images.")] = None,
    max_drop: Annotated[
        float | None,
        typer.Option(
            "--max-drop",
            help="With --val: fail when a backend's metric is more than this many points below "
            "torch's (or the fp32 ONNX Runtime one without torch).",
        ),
    ] = None,
    layers: Annotated[
        bool, typer.Option("--layers", help="For INT8: list the first layers whose outputs diverge from fp32.")
    ] = False,
    allow_unchecked: Annotated[
        bool,
        typer.Option(
            "--allow-unchecked",
            help="Accept checks that had nothing to compare (no confident reference box, "
            "every reference sample of one class, an empty mask); without it they fail "
            "validation. Better: re-export with --reference-data.",
        ),
    ] = False,
    source: ModelSourceOpt = None,
    weights: ModelWeightsOpt = None,
    rebuild: RebuildOpt = False,
    endpoint: EndpointOpt = None,
    model: RemoteModelOpt = None,
    record: RecordOpt = True,
    json_out: JsonOpt = False,
) -> None:
    """Run BUNDLE on each backend and compare its outputs with PyTorch's.

    --backend takes NAME or NAME:PRECISION (e.g. openvino:bf16) and repeats; --precision is the default
    precision. Without --backend: every engine installed here on model.onnx at fp32 and every artifact the
    bundle records that this machine can run (with --precision, those at that precision). Exit code: 0 all pass, 1 a check failed,
    2 bad input.
    """
    from edgecv.backends.runs import bundle_targets, parse_backend_specs, require_artifacts
    from edgecv.backends.tensorrt_guard import REBUILD
    from edgecv.bundle import Bundle
    from edgecv.cli._output import emit_json, table
    from edgecv.pipeline import runner_opener
    from edgecv.types import parse_precision
    from edgecv.validate.core import ValidationFailed, validate_bundle

    REBUILD.set(rebuild)
    if layers:
        _check_layers(backend, precision)
    b = Bundle.open(bundle)
    if layers:
        _check_layers_bundle(b)
    open_runner = with_remote(runner_opener(source, weights), endpoint, model)
    specs = (
        parse_backend_specs(backend, precision or "fp32")
        if backend
        else bundle_targets(b, parse_precision(precision) if precision else None, include_torch=False)
    )
    require_artifacts(b, specs)
    rep = validate_bundle(
        b,
        specs,
        device=device,
        reference=reference,  # type: ignore[arg-type]
        batch=batch,
        threads=threads,
        opener=open_runner,
        allow_unchecked=allow_unchecked,
        overrides={"atol": atol, "rtol": rtol, "min_cosine": min_cosine, "min_top1": min_top1},
    )
    metrics = _task_metrics(b, specs, val, val_limit, device, threads, open_runner, details=record) if val else None
    layer_rows = None
    if layers:
        from edgecv.quant.layers import layer_divergence

        layer_rows = layer_divergence(b, precision="int8", backend="onnxruntime")
    metric_failures = _metric_failures(metrics, max_drop) if metrics else []
    d = rep.to_dict()
    if metrics is not None:
        d["task_metric"] = metrics
    if layer_rows is not None:
        from edgecv.quant.layers import first_diverged

        d["layers"] = [r.to_dict() for r in layer_rows]
        d["first_diverged"] = [r.node for r in first_diverged(layer_rows)]
    if record:
        from edgecv.results import record_result
        from edgecv.validate.details import gallery

        kept = dict(
            d,
            gallery=gallery(
                rep.raw_reference,
                {f"{r.backend}:{r.precision}": r.raw for r in rep.results if r.raw is not None},
                b.contract,
            ),
            max_drop=max_drop,
        )
        record_result(b, "validate", kept)
    broken = [r for r in rep.results if r.error is not None]
    ok = rep.passed and not metric_failures and not broken
    if json_out:
        emit_json("validate", {**d, "failures": metric_failures}, passed=ok)
    else:
        console = wide_console()

        def g(v: float | None) -> str:
            return "-" if v is None else f"{v:.3g}"

        def frac(v: float | None) -> str:
            return "-" if v is None else f"{v:.3f}"

        rows = []
        for r in rep.results:
            if r.error is not None:
                rows.append(
                    [
                        r.backend,
                        r.precision,
                        r.precision_ran,
                        "-",
                        "-",
                        "-",
                        "-",
                        "-",
                        "-",
                        r.tolerance.describe(),
                        "[red]FAIL[/]",
                    ]
                )
                continue
            for o in r.outputs:
                if not o.passed:
                    verdict = "[red]FAIL[/]"
                elif o.not_checked:
                    verdict = "[yellow]UNCHECKED (accepted)[/]" if allow_unchecked else "[red]NOT CHECKED[/]"
                else:
                    verdict = "[green]PASS[/]"
                rows.append(
                    [
                        r.backend,
                        r.precision,
                        r.precision_ran,
                        o.name,
                        g(o.max_abs),
                        g(o.max_rel),
                        f"{o.cosine:.6f}" if math.isfinite(o.cosine) else "n/a",
                        "n/a"
                        if o.boxes_ref == 0
                        else frac(
                            o.box_recall
                            if o.box_recall is not None
                            else o.top1_agreement
                            if o.pixel_agreement is None
                            else o.pixel_agreement
                        ),
                        frac(o.top5_agreement),
                        r.tolerance.describe_for(o),
                        verdict,
                    ]
                )
        top1 = {"segment": "pixel agree", "detect": "box recall"}.get(rep.task, "top-1 agree")
        shapes = ", ".join(f"{k} {'x'.join(map(str, v))}" for k, v in (rep.input_shapes or {}).items())
        caption = f"reference: {rep.reference_note}; {rep.batch} samples ({shapes})"
        console.print(
            table(
                f"validate {rep.bundle} ({rep.task})",
                [
                    "backend",
                    "asked",
                    "ran",
                    "output",
                    "max abs",
                    "max rel",
                    "cosine",
                    top1,
                    "top-5 agree",
                    "tolerance",
                    "result",
                ],
                rows,
                caption=caption,
            ),
        )
        pc = rep.preprocess_check
        if pc is not None:
            console.print(
                f"preprocessing (contract re-run on the reference images): "
                f"{'[green]PASS[/]' if pc.passed else '[red]FAIL[/]'} (max abs {pc.max_abs:.3g})",
                highlight=False,
            )
            for f in pc.failures:
                console.print(f"[red]preprocessing:[/] {f}", highlight=False)
        for r in rep.results:
            if r.error is not None:
                console.print(f"[red]{r.backend}:{r.precision} failed to run:[/] {r.error}", highlight=False)
            for o in r.outputs:
                for f in o.failures:
                    console.print(f"[red]{r.backend}:{r.precision} {o.name}:[/] {f}", highlight=False)
                for f in o.not_checked:
                    console.print(
                        f"[{'yellow' if allow_unchecked else 'red'}]{r.backend}:{r.precision} "
                        f"{o.name} not checked:[/] {f}",
                        highlight=False,
                    )
            if r.precision_ran and r.precision_ran != r.precision:
                console.print(
                    f"[yellow]{r.backend}: asked {r.precision}, the engine reports it ran {r.precision_ran}[/]",
                    highlight=False,
                )
        if metrics is not None:
            ref = metrics["reference"]
            console.print(
                table(
                    f"task metric on {val} ({metrics['n']} images)",
                    ["backend", "precision", "ran", metrics["name"], f"Δ vs {ref or '-'}", "result"],
                    [
                        [
                            m["backend"],
                            m["precision"],
                            m["precision_ran"],
                            m["metric"],
                            m["delta"],
                            "[red]FAIL[/]" if m.get("failed") else "ok",
                        ]
                        for m in metrics["rows"]
                    ],
                    digits=2,
                )
            )
        if layer_rows is not None:
            from edgecv.quant.layers import print_layer_report

            print_layer_report(layer_rows, top=25)
        unchecked = any(r.not_checked for r in rep.results)
        console.print(
            "[red]validation FAILED[/]"
            if not ok
            else "[yellow]checks passed; some had nothing to compare (accepted with --allow-unchecked)[/]"
            if unchecked
            else "[green]all checks passed[/]"
        )
    if broken:  # could not load or run: an error in the input, not a numeric verdict
        from edgecv.errors import BackendError

        raise BackendError(f"{broken[0].backend}:{broken[0].precision}: {broken[0].error}")
    if not rep.passed:
        raise ValidationFailed(_failure_line(rep))
    if metric_failures:
        raise ValidationFailed("; ".join(metric_failures))


def _check_layers(backend: list[str] | None, precision: str | None) -> None:
    """--layers reads intermediate tensors through ONNX Runtime on the INT8 QDQ model: a -b list without ONNX
    Runtime fails here, before any backend loads (without -b, every target is validated and the layers listed)."""
    from edgecv.errors import ConfigError
    from edgecv.types import parse_backend_spec

    if not backend:
        return
    specs = [parse_backend_spec(spec, precision or "fp32") for spec in backend]
    if not any(name == "onnxruntime" for name, _ in specs):
        raise ConfigError(
            "--layers: expected -b onnxruntime among the backends (layer outputs are read through ONNX Runtime from "
            f"the INT8 QDQ model), found -b {', '.join(f'{n}:{p}' for n, p in specs)}"
        )


def _check_layers_bundle(b: Any) -> None:
    from edgecv.errors import BundleError

    quant = b.manifest.provenance.get("quantized")
    if b.artifact("onnxruntime", "int8") is None and not (isinstance(quant, dict) and quant.get("fp32_onnx")):
        raise BundleError(
            f"--layers: expected an INT8 ONNX model in '{b.root}', found none; build one with 'edgecv compile "
            f"{b.root} -b onnxruntime:int8 --calib DATA' or 'edgecv quantize'"
        )


def _failure_line(rep: object) -> str:
    results = getattr(rep, "results", [])
    bad = [f"{r.backend}:{r.precision}" for r in results if not r.passed]
    pc = getattr(rep, "preprocess_check", None)
    if pc is not None and not pc.passed and not bad:
        return f"validation failed: {pc.failures[-1]}"
    line = f"validation failed for {', '.join(bad) or 'every backend'} (see the table above)"
    unchecked = [r for r in results if r.verdict == "not checked"]
    if unchecked:
        line += (
            f"; not checked: {unchecked[0].not_checked[0]} (re-export with --reference-data, or accept with "
            "--allow-unchecked)"
        )
    return line


def _task_metrics(
    bundle: Any,
    specs: list[tuple[str, str]],
    val: Path,
    limit: int | None,
    device: str | None,
    threads: int | None,
    opener: Any,
    details: bool = False,
) -> dict[str, Any]:
    """The task metric of torch (when it loads) and every backend on the same validation images; with
    ``details`` also each one's per-class view (confusion matrix, PR curves, IoU per class) for the report."""
    from edgecv._lazy import is_available
    from edgecv.validate.metrics import TASK_METRICS, metric_for, open_val

    vset = open_val(val, bundle.contract, limit=limit).materialize()
    fn = metric_for(bundle.contract.task)
    unit = (
        TASK_METRICS.meta(bundle.contract.task).get("unit", "metric")
        if bundle.contract.task in TASK_METRICS
        else "metric"
    )
    combos = list(specs)
    if is_available("torch") and ("torch", "fp32") not in combos:
        combos.insert(0, ("torch", "fp32"))
    rows: list[dict[str, Any]] = []
    for backend, precision in combos:
        try:
            with opener(bundle, backend, precision, device=device, threads=threads) as r:
                from edgecv.validate.details import Replay, task_details

                run = Replay(r) if details else r  # the details replay the metric's outputs: one pass, not two
                value = fn(run, vset)  # type: ignore[arg-type]
                rows.append({"backend": backend, "precision": precision, "precision_ran": r.precision, "metric": value})
                if details:
                    rows[-1]["details"] = task_details(run, vset)
        except Exception as exc:
            if backend != "torch":
                raise
            rows.append(
                {
                    "backend": backend,
                    "precision": precision,
                    "precision_ran": None,
                    "metric": None,
                    "error": str(exc).splitlines()[0],
                }
            )
    ref_row = next((r for r in rows if r["backend"] == "torch" and r["metric"] is not None), None) or next(
        (r for r in rows if r["precision"] == "fp32" and r["metric"] is not None), None
    )
    for r in rows:
        r["delta"] = None if (ref_row is None or r["metric"] is None) else r["metric"] - ref_row["metric"]
    return {
        "name": unit,
        "n": len(vset),
        "reference": f"{ref_row['backend']}:{ref_row['precision']}" if ref_row else None,
        "rows": rows,
    }


def _metric_failures(metrics: dict[str, Any], max_drop: float | None) -> list[str]:
    if max_drop is None:
        return []
    out = []
    for r in metrics["rows"]:
        if r["delta"] is not None and -r["delta"] > max_drop:
            r["failed"] = True
            out.append(
                f"{r['backend']}:{r['precision']} {metrics['name']} is {-r['delta']:.2f} points below "
                f"{metrics['reference']} (allowed {max_drop})"
            )
    return out
