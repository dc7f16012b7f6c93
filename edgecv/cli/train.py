"""``edgecv train RECIPE``: train the recipe's model on its data (checkpoints, metrics.jsonl, resume, DDP via
torchrun: ``torchrun --nproc-per-node 2 -m edgecv train RECIPE``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgecv.cli.options import JsonOpt


def register(app: typer.Typer) -> None:
    app.command("train")(train)


def train(
    recipe: Annotated[Path, typer.Argument(help="Recipe YAML (see recipes/).", show_default=False)],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Run folder (default runs/<recipe name>).")
    ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from OUT/last.pt.")] = False,
    epochs: Annotated[int | None, typer.Option("--epochs", min=1, help="Override train.epochs.")] = None,
    device: Annotated[str | None, typer.Option("--device", help="torch device (default cuda if any).")] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Train into a run folder that holds an earlier run (its checkpoints are replaced)."
        ),
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Train a model from a recipe; writes last.pt, best.pt, metrics.jsonl and run.json into the run folder."""
    from edgecv.config import load_recipe

    rec = load_recipe(recipe)  # validated before torch is imported
    out = output or Path("runs") / recipe.stem
    from edgecv.train import train_recipe
    from edgecv.train.distributed import current

    _, result = train_recipe(rec, out, resume=resume, epochs=epochs, progress=not json_out, device=device, force=force)
    if not current().is_main:
        return
    from edgecv.cli._output import emit_json, print_table

    summary = {k: v for k, v in result.to_dict().items() if k != "history"}
    if json_out:
        emit_json("train", {**summary, "history": result.history}, passed=True)
        return
    rows = [
        [
            h["epoch"],
            h["train_loss"],
            h.get("val_loss"),
            h.get(result.metric_name, h["train_loss"]),
            h["img_per_s"],
            h["time_s"],
        ]
        for h in result.history
    ]
    print_table(
        f"train {recipe.name} → {out}",
        ["epoch", "train loss", "val loss", result.metric_name, "img/s", "time s"],
        rows,
    )
    print_table(
        "result",
        ["metric", "best", "best epoch", "last", "train time s", "device"],
        [
            [
                result.metric_name,
                result.best_metric,
                result.best_epoch,
                result.last_metric,
                result.train_time_s,
                result.device,
            ]
        ],
    )
