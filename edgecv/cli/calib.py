"""``edgecv calib sample``: pick a small, diverse calibration set from a video or an image folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgecv.cli.options import JsonOpt


def register(app: typer.Typer) -> None:
    calib_app = typer.Typer(help="Calibration data for INT8 quantization.", no_args_is_help=True)
    calib_app.command("sample")(sample)
    app.add_typer(calib_app, name="calib")


def sample(
    source: Annotated[Path, typer.Argument(help="Video file or image folder.", show_default=False)],
    output: Annotated[
        Path,
        typer.Option(
            "--output",
            "-o",
            help="Folder to write the frames to (new or empty; a sample this command wrote is replaced with --force).",
        ),
    ],
    n: Annotated[int, typer.Option("-n", "--num", min=1, help="Frames to keep at most.")] = 300,
    min_distance: Annotated[
        float, typer.Option("--min-distance", min=0.0, help="Closer than this to a kept frame = near-duplicate.")
    ] = 0.02,
    fmt: Annotated[
        str, typer.Option("--image-format", help="png or jpg: the file format of the frames written.")
    ] = "png",
    force: Annotated[bool, typer.Option("--force", help="Replace a sample this command wrote before.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Choose diverse frames (k-center greedy on thumbnails + colour histograms), skipping near-duplicates."""
    from edgecv.data.calib import sample_diverse

    res = sample_diverse(
        source, n=n, out=output, min_distance=min_distance, ext="." + fmt.lower().lstrip("."), force=force
    )
    if json_out:
        from edgecv.cli._output import emit_json

        emit_json("calib", res, passed=True)
        return
    from edgecv.cli._output import emit_json, print_table

    print_table(
        f"calibration sample → {output}",
        ["source", "kind", "candidates", "selected"],
        [[res["source"], res["kind"], res["candidates"], res["selected"]]],
    )
