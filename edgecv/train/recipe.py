"""Train from a :class:`~edgecv.config.Recipe`: build the model and data the recipe names, then run the Trainer."""

from __future__ import annotations

import importlib
import json
import platform
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgecv import __version__, _io
from edgecv.config.schema import DataConfig, ModelConfig, Recipe
from edgecv.errors import ConfigError, DataError, ModelSourceError
from edgecv.train.tasks import task_for
from edgecv.train.trainer import Trainer, TrainResult, load_checkpoint, seed_everything, state_dict_of

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _zoo_cfg(name: str) -> dict[str, Any]:
    from edgecv.zoo import model_cfg

    return dict(model_cfg(name))


def build_model(mcfg: ModelConfig, num_classes: int | None = None) -> nn.Module:
    """Build the recipe's model: zoo ``name`` or ``source`` "module:factory", then ``init``, then ``weights``."""
    kwargs = dict(mcfg.kwargs)
    if num_classes is not None:
        if "num_classes" in kwargs and int(kwargs["num_classes"]) != num_classes:
            raise ConfigError(
                f"model.kwargs.num_classes: the data has {num_classes} classes, found {kwargs['num_classes']}"
            )
        kwargs["num_classes"] = num_classes
    if mcfg.name is not None:
        from edgecv.zoo import create_model

        try:
            model = create_model(mcfg.name, **kwargs)
        except TypeError as exc:
            raise ConfigError(f"model.kwargs: {mcfg.name} rejected {sorted(kwargs)} ({exc})") from None
    else:
        src = str(mcfg.source)
        if ":" not in src:
            raise ConfigError(f"model.source: expected 'package.module:factory', found '{src}'")
        mod_name, attr = src.split(":", 1)
        try:
            factory = getattr(importlib.import_module(mod_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ModelSourceError(f"model.source: cannot import '{src}' ({exc})") from None
        model = factory(**kwargs)
    if not isinstance(model, nn.Module):
        raise ModelSourceError(f"model: expected a torch.nn.Module, found {type(model).__name__}")
    if mcfg.init is not None:
        try:
            from edgecv.zoo.layers import init_weights
        except ImportError as exc:
            raise ConfigError(f"model.init: weight init by name needs edgecv.zoo.layers.init_weights ({exc})") from None
        init_weights(model, mcfg.init)
    if mcfg.weights is not None:
        sd = state_dict_of(load_checkpoint(mcfg.weights))
        try:
            model.load_state_dict(sd)
        except RuntimeError as exc:
            raise ModelSourceError(
                f"model.weights: {mcfg.weights} does not fit the model ({str(exc).splitlines()[0]})"
            ) from None
    return model


def preprocessing(recipe: Recipe) -> dict[str, Any]:
    """Input size, mean/std and colour order the model is trained with (what the export contract must say)."""
    data = recipe.data
    mean, std, hw = IMAGENET_MEAN, IMAGENET_STD, None
    if recipe.model.name is not None:
        cfg = _zoo_cfg(recipe.model.name)
        mean, std = tuple(cfg.get("mean", mean)), tuple(cfg.get("std", std))
        size = cfg.get("input_size")
        if size:
            hw = (int(size[1]), int(size[2]))
    if data is not None and data.image_size is not None:
        hw = (data.image_size, data.image_size)
    elif data is not None and data.synth is not None:
        hw = (data.synth.size, data.synth.size)
    if hw is None:
        raise ConfigError("data.image_size: needed for a model without a zoo default input size")
    return {
        "input_size": [3, hw[0], hw[1]],
        "mean": list(mean),
        "std": list(std),
        "color": "RGB",
        "resize": "stretch",
        "scale": 1.0 / 255.0,
    }


def resolve_data(data: DataConfig, out_dir: Path | None) -> tuple[Path, Path | None]:
    """The train/val paths, generating the synthetic set (cached by its parameters) when the recipe asks for it."""
    if data.train is not None:
        return Path(data.train), Path(data.val) if data.val else None
    from edgecv.data.synth import GENERATOR_VERSION, generate

    s = data.synth
    assert s is not None  # guaranteed by DataConfig's validator
    root = (out_dir if out_dir is not None else Path("runs") / "synth") / "data"
    want = {
        "task": data.task,
        "seed": s.seed,
        "size": s.size,
        "splits": {"train": s.n_train, "val": s.n_val},
        "version": GENERATOR_VERSION,
    }
    meta_file = root / "synth.json"
    have = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    if {k: have.get(k) for k in want} != want:
        generate(data.task, root, n_train=s.n_train, n_val=s.n_val, size=s.size, seed=s.seed, force=True)
    return root, root


def build_datasets(recipe: Recipe, out_dir: Path | None, seed: int) -> tuple[Any, Any, list[str], dict[str, Any]]:
    """(train set, val set or None, class names, preprocessing) with transforms and augmentation applied."""
    from edgecv.data.datasets import ImageTransform, TransformedDataset, open_dataset

    data = recipe.data
    if data is None:
        raise ConfigError("data: the recipe has no data section; training needs one")
    pre = preprocessing(recipe)
    train_path, val_path = resolve_data(data, out_dir)
    train_raw = open_dataset(data.task, train_path, data.format, split="train")
    val_raw = (
        open_dataset(data.task, val_path, data.format, split="val", classes=train_raw.classes)
        if val_path is not None
        else None
    )
    if val_raw is not None and list(val_raw.classes) != list(train_raw.classes):
        raise DataError(f"{val_path}: val classes {val_raw.classes} differ from train classes {train_raw.classes}")
    hw = tuple(pre["input_size"][1:])
    tf_train = ImageTransform(hw, pre["mean"], pre["std"], pre["color"], data.task, data.augment)
    tf_val = ImageTransform(hw, pre["mean"], pre["std"], pre["color"], data.task, None)
    train = TransformedDataset(train_raw, tf_train, seed=seed, train=True)
    val = TransformedDataset(val_raw, tf_val, seed=seed) if val_raw is not None else None
    return train, val, list(train_raw.classes), pre


def versions() -> dict[str, str]:
    import numpy

    out = {
        "edgecv": __version__,
        "torch": str(torch.__version__),
        "numpy": str(numpy.__version__),
        "python": platform.python_version(),
    }
    try:
        import cv2

        out["opencv"] = str(cv2.__version__)
    except ImportError:  # pragma: no cover
        pass
    return out


def is_run_dir(path: Path) -> bool:
    """A folder 'edgecv train' wrote (a run record, checkpoints or the synthetic data it made): what --force may
    replace files in."""
    return any((path / n).exists() for n in ("run.json", "last.pt", "best.pt", "metrics.jsonl", "data/synth.json"))


def train_recipe(
    recipe: Recipe,
    out_dir: str | Path,
    *,
    resume: bool = False,
    epochs: int | None = None,
    progress: bool = True,
    device: str | None = None,
    force: bool = False,
) -> tuple[nn.Module, TrainResult]:
    """Train the recipe's model on its data into ``out_dir`` (``last.pt``, ``best.pt``, ``metrics.jsonl``,
    ``run.json``).

    Args:
        recipe: a validated recipe (see :func:`edgecv.config.load_recipe`).
        out_dir: run folder.
        resume: continue from ``out_dir/last.pt``.
        epochs: override ``train.epochs``.
        progress: show the rich progress bar.
        device: torch device (default CUDA when available).
        force: train into a folder that holds an earlier run (its checkpoints are replaced); a folder of other files
            is refused either way.

    Returns:
        (trained model, :class:`TrainResult`).
    """
    out = Path(out_dir)
    if not resume:
        from edgecv._io import check_output_dir

        check_output_dir(out, force, is_run_dir, "training run", "a run 'edgecv train' wrote")
    cfg = recipe.train
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    train, val, classes, pre = build_datasets(recipe, out, cfg.seed)
    task_name = recipe.data.task if recipe.data is not None else "classify"
    seed_everything(cfg.seed)  # model init must not depend on how much data loading consumed
    model = build_model(recipe.model, num_classes=len(classes))
    task = task_for(task_name, model, num_classes=len(classes), label_smoothing=cfg.label_smoothing, preprocessing=pre)
    teacher = None
    if cfg.distill is not None:
        from edgecv.config.schema import ModelConfig as _MC

        t = cfg.distill.teacher
        tcfg = _MC(
            name=None if ":" in t else t,
            source=t if ":" in t else None,
            weights=cfg.distill.teacher_weights,
            kwargs=cfg.distill.teacher_kwargs,
        )
        teacher = build_model(tcfg, num_classes=len(classes))
    meta = {
        "recipe": recipe.to_dict(),
        "task": task_name,
        "classes": classes,
        "preprocessing": pre,
        "versions": versions(),
    }
    data = recipe.data
    assert data is not None
    trainer = Trainer(
        model,
        task,
        train,
        val,
        cfg,
        out,
        batch_size=data.batch_size,
        workers=data.workers,
        device=device,
        teacher=teacher,
        progress=progress,
        meta=meta,
    )
    t0 = time.time()
    result = trainer.fit(epochs=epochs, resume=resume)
    if trainer.dist.is_main:
        _io.write_json(
            out / "run.json",
            {
                **meta,
                "result": {k: v for k, v in result.to_dict().items() if k != "history"},
                "wall_time_s": round(time.time() - t0, 3),
            },
        )
    return trainer.model, result
