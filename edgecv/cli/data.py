"""``edgecv data``: synthetic data sets (``synth``) and data set checks (``check``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgecv.cli.options import DataArg, DataLayoutOpt, JsonOpt, SplitOpt


def register(app: typer.Typer) -> None:
    data_app = typer.Typer(help="Synthetic data sets and data set checks.", no_args_is_help=True)
    data_app.command("synth")(synth)
    data_app.command("check")(check)
    app.add_typer(data_app, name="data")


def synth(
    task: Annotated[str, typer.Option("--task", help="classify, detect or segment.")],
    output: Annotated[
        Path,
        typer.Option(
            "--output",
            "-o",
            help="Output folder (new or empty; a data set this command wrote is replaced with --force).",
        ),
    ],
    n_train: Annotated[int, typer.Option("--n-train", min=0, help="Train images.")] = 2000,
    n_val: Annotated[int, typer.Option("--n-val", min=0, help="Val images.")] = 400,
    size: Annotated[int, typer.Option("--size", min=16, help="Image side in pixels.")] = 96,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Same seed, byte-identical files.")] = 0,
    force: Annotated[bool, typer.Option("--force", help="Replace a data set this command wrote before.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Generate shapes on real photo backgrounds (ImageFolder / COCO + YOLO / image+mask folders)."""
    from edgecv.data.synth import generate

    meta = generate(task, output, n_train=n_train, n_val=n_val, size=size, seed=seed, force=force)
    meta["output"] = str(output)
    if json_out:
        from edgecv.cli._output import emit_json

        emit_json("data-synth", meta, passed=True)
        return
    from edgecv.cli._output import print_table

    print_table(
        f"synthetic {task} data → {output}",
        ["split", "images", "size", "seed", "classes"],
        [[s, n, size, seed, len(meta["classes"])] for s, n in meta["splits"].items()],
    )


def check(
    path: DataArg,
    task: Annotated[str, typer.Option("--task", help="classify, detect or segment.")],
    fmt: DataLayoutOpt = None,
    split: SplitOpt = "train",
    json_out: JsonOpt = False,
) -> None:
    """Read every annotation and image once; the first problem is reported with its file and line."""
    from edgecv.data.datasets import open_dataset

    ds = open_dataset(task, path, fmt, split=split, what="PATH")
    for i in range(len(ds)):
        ds[i]
    lay = ds.layout
    res = {
        "path": str(path),
        "task": task,
        "layout": lay.kind if lay else fmt,
        "data": str(lay.path) if lay else str(path),
        "images": len(ds),
        "classes": list(ds.classes),
        "ok": True,
    }
    if json_out:
        from edgecv.cli._output import emit_json

        emit_json("data-check", res, passed=True)
        return
    from edgecv.cli._output import print_table

    print_table(
        f"data check {path}",
        ["task", "layout", "data", "images", "classes", "ok"],
        [[task, res["layout"], res["data"], len(ds), len(ds.classes), True]],
    )
