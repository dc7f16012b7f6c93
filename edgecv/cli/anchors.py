"""``edgecv anchors DATA -k 5``: anchor priors from dimension clusters (k-means, 1 − IoU distance) of a detection
data set (COCO JSON, YOLO txt folder or a synthetic detect root), printed with their mean IoU."""

from __future__ import annotations

from typing import Annotated

import typer

from edgecv.cli.options import DataArg, DataLayoutOpt, JsonOpt, SplitOpt


def register(app: typer.Typer) -> None:
    app.command("anchors")(anchors)


def anchors(
    data: DataArg,
    k: Annotated[int, typer.Option("-k", "--clusters", min=1, help="Number of priors.")] = 5,
    split: SplitOpt = "train",
    fmt: DataLayoutOpt = None,
    input_size: Annotated[
        int | None,
        typer.Option("--input-size", min=8, help="Express priors in pixels of a letterboxed input of this side."),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", min=0, help="k-means seed.")] = 0,
    json_out: JsonOpt = False,
) -> None:
    """Cluster ground-truth box shapes into k anchor priors (YOLOv2 dimension clusters)."""
    from edgecv.zoo.detection.anchors import dataset_box_sizes, kmeans_anchors

    wh = dataset_box_sizes(data, fmt, split=split, input_size=input_size)
    priors, miou = kmeans_anchors(wh, k, seed=seed)
    out = {
        "data": str(data),
        "boxes": len(wh),
        "k": k,
        "mean_iou": round(miou, 4),
        "anchors": [[round(float(w), 1), round(float(h), 1)] for w, h in priors],
    }
    if json_out:
        from edgecv.cli._output import emit_json

        emit_json("anchors", out, passed=True)
        return
    from edgecv.cli._output import emit_json, print_table

    print_table(
        f"anchors of {data} ({len(wh)} boxes, mean IoU {miou:.3f})",
        ["#", "w", "h", "area"],
        [[i, f"{w:.1f}", f"{h:.1f}", f"{w * h:.0f}"] for i, (w, h) in enumerate(priors)],
    )
