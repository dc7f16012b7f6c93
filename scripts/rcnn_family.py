"""The R-CNN family comparison on this machine: R-CNN, Fast R-CNN and Faster R-CNN on the same synthetic shapes data
with the same backbone (the recipes': the shipped shapes classifier cut at stride 16), beside the published figures.

Per model: selective search time per image (R-CNN and Fast R-CNN share the proposals; Faster R-CNN's RPN is part of
its network), test time per image without and with the proposals, training time per epoch (from the recipe runs'
``metrics.jsonl``: the first epoch includes selective search on every training image, later ones read the
proposal cache) and mAP@0.5 on the shapes validation split (the run's last epoch).

Train the three first (recipes/rcnn.yaml, recipes/fast_rcnn.yaml, recipes/rcnn_faster.yaml), then::

    python scripts/rcnn_family.py --run rcnn=runs/rcnn --run fast_rcnn=runs/fast_rcnn \
        --run faster_rcnn=runs/rcnn_faster [--images 20] [--json out.json]

Without ``--run`` a model is timed with random weights (no mAP, no training time). Timing: one thread, torch eval
mode, ``--images`` validation images rendered exactly as the recipes' val split.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgecv.data.synth import image_rng, render_objects
from edgecv.tasks.proposals import selective_search

MODELS = {"rcnn": "rcnn_mobile", "fast_rcnn": "fast_rcnn_mobile", "faster_rcnn": "fasterrcnn_mobile"}
LABELS = {"rcnn": "R-CNN", "fast_rcnn": "Fast R-CNN", "faster_rcnn": "Faster R-CNN"}
#: the papers' figures (VGG16, PASCAL VOC 2007, one K40 GPU; selective search "fast mode" on a CPU)
PUBLISHED = {
    "rcnn": {"test_s": 47.0, "train_h": 84.0, "proposal_s": 2.0, "map": 66.0},
    "fast_rcnn": {"test_s": 0.32, "train_h": 9.5, "proposal_s": 2.0, "map": 66.9},
    "faster_rcnn": {"test_s": 0.198, "train_h": None, "proposal_s": 0.010, "map": 69.9},
}


def val_images(n: int, size: int, seed: int) -> list[np.ndarray]:
    """The first ``n`` images of the recipes' synthetic val split, RGB uint8 (the trainer's channel order)."""
    return [np.ascontiguousarray(render_objects(image_rng(seed, "val", i), size)[0][:, :, ::-1]) for i in range(n)]


def run_metrics(run: Path | None) -> dict[str, Any]:
    """Training time per epoch and the last epoch's val mAP@0.5 from a recipe run's metrics.jsonl."""
    if run is None or not (run / "metrics.jsonl").exists():
        return {"epochs": 0, "epoch1_s": None, "epoch_s": None, "map50": None}
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    times = [float(r["time_s"]) for r in rows]
    return {
        "epochs": len(rows),
        "epoch1_s": times[0],
        "epoch_s": statistics.median(times[1:]) if len(times) > 1 else times[0],
        "map50": float(rows[-1]["map50"]),
    }


def load(key: str, run: Path | None) -> Any:
    """The zoo model with the run's weights and the model kwargs of its recipe (``run.json``)."""
    from edgecv.export.sources import load_model

    weights, kwargs = None, None
    if run is not None:
        weights = next((str(run / n) for n in ("best.pt", "last.pt") if (run / n).exists()), None)
        if (run / "run.json").exists():
            kwargs = json.loads((run / "run.json").read_text())["recipe"]["model"].get("kwargs") or None
    torch.manual_seed(0)
    return load_model(MODELS[key], weights=weights, model_kwargs=kwargs).module.eval()


def time_model(key: str, model: Any, images: list[np.ndarray]) -> dict[str, Any]:
    """Seconds per image: selective search, the network given the proposals, and the two together."""
    ss, net, n_props = [], [], []
    with torch.inference_mode():
        for img in images:
            x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255.0
            if key == "faster_rcnn":
                model(x)  # one untimed pass per image, as for the other two
                t = time.perf_counter()
                model(x)
                net.append(time.perf_counter() - t)
                continue
            t = time.perf_counter()
            boxes = selective_search(img, model.max_proposals, model.ss_mode, model.min_proposal)
            ss.append(time.perf_counter() - t)
            n_props.append(len(boxes))
            rois = torch.cat([torch.zeros(len(boxes), 1), torch.from_numpy(boxes)], 1)
            model(x, rois)
            t = time.perf_counter()
            model(x, rois)
            net.append(time.perf_counter() - t)
    proposal_s = statistics.median(ss) if ss else 0.0
    test_s = statistics.median(net)
    return {
        "proposals_per_image": statistics.mean(n_props) if n_props else None,
        "proposal_s": proposal_s if ss else None,
        "test_s": test_s,
        "total_s": test_s + proposal_s,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", action="append", default=[], help="NAME=DIR: a recipe run (rcnn, fast_rcnn, faster_rcnn)")
    ap.add_argument("--images", type=int, default=20, help="val images to time (default 20)")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    args = ap.parse_args()
    runs: dict[str, Path] = {}
    for spec in args.run:
        name, _, path = spec.partition("=")
        if name not in MODELS or not path:
            raise SystemExit(f"--run: expected NAME=DIR with NAME one of {', '.join(MODELS)}, found '{spec}'")
        runs[name] = Path(path)
    torch.set_num_threads(1)
    images = val_images(args.images, args.size, args.seed)
    rows = []
    for key in MODELS:
        model = load(key, runs.get(key))
        rows.append({"model": key, **time_model(key, model, images), **run_metrics(runs.get(key))})
    by = {r["model"]: r for r in rows}
    test_ratio = by["rcnn"]["test_s"] / by["fast_rcnn"]["test_s"]
    train_ratio = (
        by["rcnn"]["epoch_s"] / by["fast_rcnn"]["epoch_s"]
        if by["rcnn"]["epoch_s"] and by["fast_rcnn"]["epoch_s"]
        else None
    )
    print(f"{args.images} val images, {args.size} px, 1 thread, torch {torch.__version__}")
    hdr = "| model | proposals/img | proposal s/img | test s/img (net) | test s/img (+proposals) | train s/epoch (1st / later) | mAP@0.5 | paper: test s/img | paper: mAP VOC07 |"
    print(hdr)
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        pub = PUBLISHED[r["model"]]
        ep = f"{r['epoch1_s']:.0f} / {r['epoch_s']:.0f}" if r["epoch_s"] else "n/a"
        mp = f"{r['map50']:.3f}" if r["map50"] is not None else "n/a"
        props = f"{r['proposals_per_image']:.0f}" if r["proposals_per_image"] else "RPN"
        ps = f"{r['proposal_s']:.3f}" if r["proposal_s"] is not None else "(in net)"
        print(
            f"| {LABELS[r['model']]} | {props} | {ps} | {r['test_s']:.4f} | {r['total_s']:.4f} | {ep} | {mp} | "
            f"{pub['test_s']} | {pub['map']} |"
        )
    print(f"Fast R-CNN vs R-CNN test time (net only): {test_ratio:.1f}x (paper: 213x with truncated SVD, 146x without)")
    if train_ratio:
        print(f"Fast R-CNN vs R-CNN training time per epoch (cached proposals): {train_ratio:.1f}x (paper: 9x)")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "test_ratio": test_ratio, "train_ratio": train_ratio}, indent=2))


if __name__ == "__main__":
    main()
