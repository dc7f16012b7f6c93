"""``edgecv validate``: compare every backend's outputs with the PyTorch reference; exit 1 when a check fails."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Optional

import typer

from edgecv.cli.options import BackendsOpt, BundleArg, DeviceOpt, JsonOpt, PrecisionOpt, ThreadsOpt

if TYPE_CHECKING:
    from rich.console import Console


def wide_console() -> Console:
    """The shared console on a terminal; a 200-column one when piped, so wide tables are not cut to 80."""
    from rich.console import Console

    from edgecv.cli._output import console

    return console if console.is_terminal else Console(width=200)


def register(app: typer.Typer) -> None:
    @app.command("validate")
    def validate(
        bundle: BundleArg,
        backend: BackendsOpt = None,
        precision: PrecisionOpt = "fp32",
        reference: Annotated[str, typer.Option(
            "--reference", help="auto (live torch if it loads, else reference.npz), live or npz.")] = "auto",
        batch: Annotated[Optional[int], typer.Option(
            "--batch", help="Samples to compare (the saved inputs are sliced or repeated).")] = None,
        device: DeviceOpt = None,
        threads: ThreadsOpt = None,
        atol: Annotated[Optional[float], typer.Option(
            "--atol", help="Absolute max-error allowance, added to rtol x output scale.")] = None,
        rtol: Annotated[Optional[float], typer.Option(
            "--rtol", help="Max error allowed as a fraction of the output scale max|ref| (overrides the "
                           "precision's default).")] = None,
        min_cosine: Annotated[Optional[float], typer.Option("--min-cosine", help="Lowest cosine allowed.")] = None,
        min_top1: Annotated[Optional[float], typer.Option(
            "--min-top1", help="Lowest top-1 agreement allowed (classify).")] = None,
        json_out: JsonOpt = False,
    ) -> None:
        """Run BUNDLE on each backend and compare its outputs with PyTorch's.

        --backend takes NAME or NAME:PRECISION (e.g. openvino:bf16) and repeats; --precision is the default
        precision. Without --backend every installed engine is checked. Exit code: 0 all pass, 1 a check failed,
        2 bad input.
        """
        from edgecv.bundle import Bundle
        from edgecv.cli._output import print_json, table
        from edgecv.pipeline import open_runner
        from edgecv.validate.core import ValidationFailed, validate_bundle
        from edgecv.validate.runs import installed_backends, parse_backend_specs

        b = Bundle.open(bundle)
        specs = parse_backend_specs(backend or [], precision) if backend else \
            [(n, precision) for n in installed_backends(include_torch=False)]
        rep = validate_bundle(b, specs, device=device, reference=reference, batch=batch,  # type: ignore[arg-type]
                              threads=threads, opener=open_runner,
                              overrides={"atol": atol, "rtol": rtol, "min_cosine": min_cosine, "min_top1": min_top1})
        if json_out:
            print_json(rep.to_dict())
        else:
            console = wide_console()
            def g(v: float | None) -> str:
                return "-" if v is None else f"{v:.3g}"

            def frac(v: float | None) -> str:
                return "-" if v is None else f"{v:.3f}"

            rows = []
            for r in rep.results:
                if r.error is not None:
                    rows.append([r.backend, r.precision, r.precision_ran, "-", "-", "-", "-", "-", "-",
                                 r.tolerance.describe(), "[red]FAIL[/]"])
                    continue
                for o in r.outputs:
                    rows.append([r.backend, r.precision, r.precision_ran, o.name, g(o.max_abs), g(o.max_rel),
                                 f"{o.cosine:.6f}",
                                 frac(o.top1_agreement if o.pixel_agreement is None else o.pixel_agreement),
                                 frac(o.top5_agreement), r.tolerance.describe(),
                                 "[green]PASS[/]" if o.passed else "[red]FAIL[/]"])
            top1 = "pixel agree" if rep.task == "segment" else "top-1 agree"
            caption = f"reference: {rep.reference_note}; {rep.batch} samples {rep.input_shapes}"
            console.print(table(f"validate {rep.bundle} ({rep.task})",
                                ["backend", "asked", "ran", "output", "max abs", "max rel", "cosine", top1,
                                 "top-5 agree", "tolerance", "result"], rows, caption=caption),
                          )
            for r in rep.results:
                if r.error is not None:
                    console.print(f"[red]{r.backend}:{r.precision} failed to run:[/] {r.error}", highlight=False)
                for o in r.outputs:
                    for f in o.failures:
                        console.print(f"[red]{r.backend}:{r.precision} {o.name}:[/] {f}", highlight=False)
                if r.precision_ran and r.precision_ran != r.precision:
                    console.print(f"[yellow]{r.backend}: asked {r.precision}, the engine reports it ran "
                                  f"{r.precision_ran}[/]", highlight=False)
            console.print("[green]all checks passed[/]" if rep.passed else "[red]validation FAILED[/]")
        if not rep.passed:
            raise ValidationFailed(_failure_line(rep))


def _failure_line(rep: object) -> str:
    results = getattr(rep, "results", [])
    bad = [f"{r.backend}:{r.precision}" for r in results if not r.passed]
    return f"validation failed for {', '.join(bad) or 'every backend'} (see the table above)"
