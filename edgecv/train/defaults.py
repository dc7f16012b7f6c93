"""The shipped default weights: train them from their recipes, and re-check them against their recorded metric.

``edgecv/zoo/weights/<name>.pt`` is an fp32 state dict; ``<name>.json`` beside it records the metric on the held-out
val split, and that split's generator seed/size/count, so anyone can regenerate it and check the number.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from edgecv import _io
from edgecv.config import load_recipe
from edgecv.errors import ConfigError

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "zoo" / "weights"


def evaluate_on_synth_val(
    model: torch.nn.Module,
    task: str,
    seed: int,
    size: int,
    n_val: int,
    preprocessing: dict[str, Any],
    batch_size: int = 64,
) -> float:
    """Regenerate the synthetic val split (seed, size, n_val) and return the task metric (top-1 % or mIoU %)."""
    from edgecv.config.schema import TrainConfig
    from edgecv.data.datasets import ImageTransform, TransformedDataset, open_dataset
    from edgecv.data.synth import generate
    from edgecv.train.tasks import task_for
    from edgecv.train.trainer import Trainer

    with tempfile.TemporaryDirectory(prefix="edgecv-val-") as tmp:
        root = Path(tmp) / "data"
        generate(task, root, n_train=0, n_val=n_val, size=size, seed=seed)
        raw = open_dataset(task, root, split="val")
        hw = tuple(preprocessing["input_size"][1:])
        tf = ImageTransform(hw, preprocessing["mean"], preprocessing["std"], preprocessing.get("color", "RGB"), task)
        val = TransformedDataset(raw, tf)
        t = task_for(task, model, num_classes=len(raw.classes), preprocessing=preprocessing)
        tr = Trainer(
            model,
            t,
            val,
            val,
            TrainConfig.model_validate({"epochs": 1, "amp": False}),
            None,
            batch_size=batch_size,
            device="cpu",
            progress=False,
        )
        return float(tr.evaluate()[t.metric_name])


def make_default(
    recipe_path: str | Path,
    run_dir: str | Path,
    name: str | None = None,
    weights_dir: str | Path = WEIGHTS_DIR,
    progress: bool = True,
) -> dict[str, Any]:
    """Train the recipe's model into ``run_dir`` and ship its final weights as ``weights_dir/<name>.pt``.

    Args:
        recipe_path: a recipe with a zoo model name and synthetic data.
        run_dir: the training run folder (checkpoints, metrics, the generated data).
        name: the shipped name (``shapes_classifier``); default the recipe's model name.
        weights_dir: where ``<name>.pt`` and ``<name>.json`` are written.
        progress: show the trainer's progress bar.

    The metric written to the JSON is measured on the regenerated val split with the saved state dict, so it is
    exactly what :func:`check_default` reproduces.
    """
    from edgecv.train.recipe import train_recipe, versions

    recipe = load_recipe(recipe_path)
    if recipe.model.name is None or recipe.data is None or recipe.data.synth is None:
        raise ConfigError(f"{recipe_path}: a default needs a zoo model name and synth data")
    t0 = time.perf_counter()
    model, result = train_recipe(recipe, run_dir, progress=progress, force=True)
    train_time = time.perf_counter() - t0
    arch = recipe.model.name
    name = name or arch
    model = model.float().cpu().eval()
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    import json

    run = json.loads((Path(run_dir) / "run.json").read_text())
    s = recipe.data.synth
    metric = evaluate_on_synth_val(model, recipe.data.task, s.seed, s.size, s.n_val, run["preprocessing"])
    weights_dir = Path(weights_dir)
    with _io.atomic_path(weights_dir / f"{name}.pt") as tmp:
        torch.save(state, tmp)
    info = {
        "model": name,
        "arch": arch,
        "task": recipe.data.task,
        "metric": result.metric_name,
        "value": round(metric, 4),
        "split": "val",
        "data": {
            "generator": "edgecv.data.synth",
            "seed": s.seed,
            "size": s.size,
            "n_train": s.n_train,
            "n_val": s.n_val,
        },
        # the held-out split in the form scripts/demo.sh reads (edgecv data synth --seed --size --n-val)
        "val": {"seed": s.seed, "size": s.size, "count": s.n_val},
        "classes": run["classes"],
        "preprocessing": run["preprocessing"],
        "num_classes": len(run["classes"]),
        "epochs": result.epochs,
        "training_time_s": round(train_time, 1),
        "train_threads": recipe.train.threads,
        "recipe": recipe.to_dict(),
        "recipe_file": str(recipe_path),
        "versions": versions(),
        "history": result.history,
    }
    _io.write_json(weights_dir / f"{name}.json", info)
    return info


def check_default(name: str, weights_dir: str | Path = WEIGHTS_DIR) -> tuple[float, float]:
    """(recorded metric, metric measured now) for a shipped default, on its regenerated val split."""
    import json

    from edgecv.zoo import create_model

    weights_dir = Path(weights_dir)
    info = json.loads((weights_dir / f"{name}.json").read_text())
    # the bare architecture (random init), so the weights checked are the ones in weights_dir
    model = create_model(info.get("arch", name), num_classes=info["num_classes"])
    sd = torch.load(weights_dir / f"{name}.pt", map_location="cpu", weights_only=True)
    model.load_state_dict(sd)
    d = info["data"]
    got = evaluate_on_synth_val(model.eval(), info["task"], d["seed"], d["size"], d["n_val"], info["preprocessing"])
    return float(info["value"]), got


def main(argv: list[str] | None = None) -> None:
    """``python -m edgecv.train.defaults RECIPE NAME RUN_DIR``: train and ship one default model."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m edgecv.train.defaults", description=main.__doc__)
    ap.add_argument("recipe")
    ap.add_argument("name")
    ap.add_argument("run_dir")
    ap.add_argument("--weights-dir", default=str(WEIGHTS_DIR))
    a = ap.parse_args(argv)
    info = make_default(a.recipe, a.run_dir, a.name, a.weights_dir)
    print(
        f"{info['model']}: {info['metric']} {info['value']:.2f} on val (seed {info['data']['seed']}, "
        f"n={info['data']['n_val']}) after {info['training_time_s']:.0f} s"
    )


if __name__ == "__main__":
    main()
