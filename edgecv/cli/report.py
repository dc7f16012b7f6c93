"""``edgecv report``: one HTML file (images inline, opens offline) from the results kept in bundles."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgecv.cli.options import JsonOpt


def register(app: typer.Typer) -> None:
    app.command("report")(report)


def report(
    bundles: Annotated[list[Path], typer.Argument(help="Bundle folders (one or more).", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="The HTML file to write.")] = Path("report.html"),
    title: Annotated[str | None, typer.Option("--title", help="Page title.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Draw what validate, bench, run and quantize recorded in BUNDLES into one self-contained HTML page.

    Sections: summary table, speed against accuracy (Pareto frontier), latency distributions, roofline,
    INT8 per-layer divergence, per-class results, a gallery of PyTorch vs each backend, the stream timeline
    and provenance. A section without data says which command fills it. Only this host's results are drawn.
    """
    from edgecv.cli._output import console, emit_json, table
    from edgecv.report import build_report

    info = build_report(list(bundles), output, title=title)
    if json_out:
        emit_json("report", info.to_dict(), passed=True)
        return
    import sys

    for b in info.bundles:
        for line in b.skipped:  # one plain line each, never wrapped
            sys.stderr.write(f"warning: {b.root}: {line}\n")
    rows = [
        [
            b.name,
            ", ".join(k for k in b.sections if k != "provenance") or "-",
            ", ".join(b.missing) or "-",
            b.other_hosts,
        ]
        for b in info.bundles
    ]
    console.print(
        table(
            f"report {info.path} ({info.images} figures)",
            ["bundle", "sections drawn", "sections waiting for a result", "other hosts' results"],
            rows,
        )
    )
