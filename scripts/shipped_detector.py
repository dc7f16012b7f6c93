"""Release script (not part of the library): train, evaluate and ship the default detector (``shapes_detector``)
from ``recipes/detector.yaml``.

The synthetic detection images are tiny (96 px PNGs), so the whole train split is decoded once into a uint8 tensor
and batches are cut from memory: on a shared 2-core CPU the step is then all model compute (no loader process
competing for the cores). Training batches go through the model's own box-preserving augmentation
(:func:`~edgecv.train.detection.augment.augment_batch`), the optimizer / schedule / seed come from the recipe, and the
activations run channels-last (about 1.2× faster convolutions on CPU; the saved state dict is contiguous).

``python scripts/shipped_detector.py recipes/detector.yaml runs/detector`` trains, then writes
``edgecv/zoo/weights/yolov3_tiny_synth.{pt,json}`` with mAP@0.5 and mAP@[.5:.95] on the regenerated val split for
PyTorch, ONNX Runtime and OpenVINO (fp32), measured through the exported bundle and
:func:`edgecv.validate.detection.runner_map`.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgecv import _io
from edgecv.errors import ConfigError

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "edgecv" / "zoo" / "weights"  # where the package ships them
SHIPPED_STEM = "yolov3_tiny_synth"
# the first images of the val split, used by tests/test_defaults_detector.py (regenerated deterministically)
TEST_SUBSET = 100

Split = tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]


def load_split(root: str | Path, split: str, limit: int | None = None) -> Split:
    """(RGB uint8 images [N,3,H,W], boxes xyxy per image, labels per image) of a synth detect root."""
    from edgecv.validate.detection import load_coco_samples

    samples = load_coco_samples(str(root), split, limit)
    if not samples:
        raise ConfigError(f"{root}: expected images in the '{split}' split, found none")
    sizes = {s[0].shape for s in samples}
    if len(sizes) != 1:
        raise ConfigError(f"{root}/{split}: expected images of one size, found {sorted(sizes)}")
    imgs = torch.from_numpy(np.stack([im[:, :, ::-1].transpose(2, 0, 1) for im, _, _ in samples]).copy())
    return imgs, [torch.from_numpy(b) for _, b, _ in samples], [torch.from_numpy(lab) for _, _, lab in samples]


@torch.no_grad()
def evaluate_map(model: torch.nn.Module, data: Split, batch_size: int = 100) -> dict[str, float]:
    """COCO mAP (faster-coco-eval) of a zoo detector on in-memory images already at its input size."""
    from edgecv.validate.detection import coco_map

    imgs, boxes, labels = data
    was = model.training
    model.eval()
    dets = []
    try:
        for i in range(0, len(imgs), batch_size):
            for b, s, c in model.postprocess(model(imgs[i : i + batch_size].float() / 255.0)):  # type: ignore
                dets.append((b.numpy(), s.numpy(), c.numpy()))
    finally:
        model.train(was)
    return coco_map(dets, [(b.numpy(), lab.numpy()) for b, lab in zip(boxes, labels)], int(model.num_classes))  # type: ignore[arg-type]


def train_detector(
    recipe_path: str | Path, run_dir: str | Path, *, threads: int | None = None, log: Any = None
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Train the recipe's zoo detector on its synthetic data from memory.

    Args:
        recipe_path: a detection recipe with a zoo model name and ``data.synth``.
        run_dir: where the synthetic data is generated (``run_dir/data``) and ``metrics.jsonl`` is written.
        threads: torch intra-op threads (default: the recipe's ``train.threads``).
        log: called with one line per epoch (default: print it).

    Returns:
        (the trained model in eval mode, a record: epochs, history, train_time_s, threads).
    """
    from edgecv.config import load_recipe
    from edgecv.train.detection.augment import augment_batch
    from edgecv.train.optim import build_optimizer, build_scheduler
    from edgecv.train.recipe import resolve_data
    from edgecv.train.trainer import seed_everything
    from edgecv.zoo import create_model

    recipe = load_recipe(recipe_path)
    data, tr = recipe.data, recipe.train
    if recipe.model.name is None or data is None or data.synth is None or data.task != "detect":
        raise ConfigError(f"{recipe_path}: expected a detect recipe with a zoo model name and data.synth")
    run_dir = Path(run_dir)
    n_threads = threads or tr.threads
    if n_threads:
        torch.set_num_threads(int(n_threads))
    seed_everything(tr.seed)
    root, _ = resolve_data(data, run_dir)
    train = load_split(root, "train")
    val = load_split(root, "val")
    model = create_model(recipe.model.name, **recipe.model.kwargs)
    size = int(model.input_size)  # type: ignore[arg-type]
    if tuple(train[0].shape[-2:]) != (size, size):
        raise ConfigError(
            f"{recipe_path}: expected data.synth.size == the model input ({size}), found {tuple(train[0].shape[-2:])}"
        )
    model = model.to(memory_format=torch.channels_last)
    aug = model.train_aug  # type: ignore[attr-defined]
    bs = int(data.batch_size)
    n = len(train[0])
    spe = n // bs
    opt = build_optimizer(model, tr.optimizer)
    sched = build_scheduler(opt, tr.schedule, tr.epochs, spe)
    history: list[dict[str, Any]] = []
    run_dir.mkdir(parents=True, exist_ok=True)
    metrics_file = run_dir / "metrics.jsonl"
    metrics_file.write_text("")  # one run per file
    t0 = time.perf_counter()
    for ep in range(tr.epochs):
        torch.manual_seed(tr.seed * 1000 + ep)  # the batch order and augmentation of an epoch depend on (seed, epoch)
        model.train()
        perm = torch.randperm(n)
        sums: dict[str, float] = {}
        te = time.perf_counter()
        for s in range(spe):
            idx = perm[s * bs : (s + 1) * bs]
            x = train[0][idx].float() / 255.0
            tg = [{"boxes": train[1][i], "labels": train[2][i]} for i in idx.tolist()]
            if aug.active:
                x, tg = augment_batch(x, tg, aug)
            parts = model.compute_loss(model(x.contiguous(memory_format=torch.channels_last)), tg)  # type: ignore
            opt.zero_grad(set_to_none=True)
            parts["loss"].backward()
            if tr.clip_grad:
                torch.nn.utils.clip_grad_norm_(model.parameters(), tr.clip_grad)
            opt.step()
            sched.step()
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
        rec: dict[str, Any] = {
            "epoch": ep + 1,
            **{k: round(v / spe, 5) for k, v in sums.items()},
            "lr": opt.param_groups[0]["lr"],
            "img_per_s": round(spe * bs / (time.perf_counter() - te), 1),
        }
        if (ep + 1) % 5 == 0 or ep + 1 == tr.epochs:
            m = evaluate_map(model, val)
            rec.update(map50=round(m["map50"], 4), map=round(m["map"], 4))
        rec["time_s"] = round(time.perf_counter() - t0, 1)
        history.append(rec)
        with open(metrics_file, "a", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")
        state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
        with _io.atomic_path(run_dir / "last_state.pt") as tmp:  # a crash later (export, eval) keeps the weights
            torch.save(state, tmp)
        line = " ".join(f"{k} {v}" for k, v in rec.items())
        if log is None:
            print(line, flush=True)
        else:
            log(line)
    train_time = time.perf_counter() - t0
    model = model.to(memory_format=torch.contiguous_format).eval()
    rec = {
        "epochs": tr.epochs,
        "history": history,
        "train_time_s": round(train_time, 1),
        "threads": int(n_threads or torch.get_num_threads()),
        "data_root": str(root),
    }
    _io.write_json(run_dir / "train_record.json", rec)
    return model, rec


def backend_maps(
    weights: str | Path,
    kwargs: dict[str, Any],
    class_names: list[str],
    samples: list[Any],
    backends: tuple[str, ...] = ("onnxruntime", "openvino"),
    out_dir: str | Path | None = None,
    threads: int = 1,
    arch: str = "yolov3_tiny",
) -> tuple[dict[str, dict[str, float]], list[dict[str, Any]]]:
    """mAP of PyTorch (eager, the export wrapper) and of each backend on ``samples`` (from ``load_coco_samples``),
    through one graph-NMS fp32 bundle; returns (maps by backend, box-agreement rows against PyTorch)."""
    from edgecv.backends import open_runner
    from edgecv.bundle import Bundle
    from edgecv.export.onnx import export_model
    from edgecv.export.sources import load_model
    from edgecv.export.workflow import ExportPrep, prepare_export
    from edgecv.validate.detection import compare_backends, runner_map

    loaded = prepare_export(
        load_model(arch, weights=str(weights), model_kwargs=kwargs), ExportPrep(nms="graph", class_names=class_names)
    )
    wrapped = loaded.module

    class _TorchRunner:
        def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            with torch.no_grad():
                out = wrapped(torch.from_numpy(next(iter(feed.values()))))
            return {k: v.numpy() for k, v in out.items()}

    with tempfile.TemporaryDirectory(prefix="edgecv-det-") as tmp:
        bdir = Path(out_dir) if out_dir is not None else Path(tmp) / "bundle"
        res = export_model(loaded, bdir, opset=17, force=True, dynamic_batch=True)
        contract = res.contract
        maps, dets = {}, {}
        maps["torch"], dets["torch"] = runner_map(_TorchRunner(), contract, samples)
        bundle = Bundle.open(bdir)
        for be in backends:
            with open_runner(bundle, be, threads=threads) as r:
                maps[be], dets[be] = runner_map(r, contract, samples)
    rows = compare_backends(dets["torch"], {k: v for k, v in dets.items() if k != "torch"}, maps["torch"], maps)
    return maps, rows


def ship(
    recipe_path: str | Path, run_dir: str | Path, weights_dir: str | Path = WEIGHTS_DIR, threads: int | None = None
) -> dict[str, Any]:
    """Train, save ``<weights_dir>/yolov3_tiny_synth.pt`` (fp32 state dict) and its JSON record."""
    model, rec = train_detector(recipe_path, run_dir, threads=threads)
    weights_dir = Path(weights_dir)
    wpt = weights_dir / f"{SHIPPED_STEM}.pt"
    state = {k: v.detach().float().contiguous().clone() for k, v in model.state_dict().items()}
    with _io.atomic_path(wpt) as tmp:
        torch.save(state, tmp)
    return write_record(recipe_path, run_dir, rec, weights_dir)


def _runtime_versions() -> dict[str, str]:
    """Versions of the engines and the mAP evaluator the record was measured with."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in ("torchvision", "onnx", "onnxruntime", "openvino", "faster-coco-eval"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            pass
    return out


def write_record(
    recipe_path: str | Path, run_dir: str | Path, rec: dict[str, Any], weights_dir: str | Path = WEIGHTS_DIR
) -> dict[str, Any]:
    """Measure the saved ``<weights_dir>/yolov3_tiny_synth.pt`` on the val split (torch / ONNX Runtime / OpenVINO,
    full split and the test subset) and write the JSON record beside it; ``rec`` is :func:`train_detector`'s."""
    from edgecv.config import load_recipe
    from edgecv.data.synth import class_names
    from edgecv.export.stats import count_params
    from edgecv.train.recipe import versions
    from edgecv.validate.detection import load_coco_samples
    from edgecv.zoo import create_model

    recipe = load_recipe(recipe_path)
    weights_dir = Path(weights_dir)
    wpt = weights_dir / f"{SHIPPED_STEM}.pt"
    kw = {k: v for k, v in recipe.model.kwargs.items() if k != "train_aug"}
    model = create_model(str(recipe.model.name), **kw)
    model.load_state_dict(torch.load(wpt, map_location="cpu", weights_only=True))
    classes = class_names("detect")
    samples = load_coco_samples(rec["data_root"], "val", class_names=classes)
    maps, rows = backend_maps(wpt, kw, classes, samples)
    sub_maps, _ = backend_maps(wpt, kw, classes, samples[:TEST_SUBSET], backends=("onnxruntime",))
    s = recipe.data.synth if recipe.data is not None else None
    if s is None:
        raise ConfigError(f"{recipe_path}: expected data.synth (the record names the val split's generator)")
    info = {
        "model": "shapes_detector",
        "arch": str(recipe.model.name),
        "task": "detect",
        "kwargs": kw,
        "weights": wpt.name,
        "format": "state_dict (float32)",
        "params": count_params(model),
        "classes": classes,
        "num_classes": len(classes),
        "input_size": [3, model.input_size, model.input_size],
        "anchors": [[list(a) for a in g] for g in model.anchors],  # type: ignore[attr-defined]
        "preprocessing": {
            "input_size": [3, model.input_size, model.input_size],
            "resize": "letterbox",
            "color": "RGB",
            "mean": [0.0, 0.0, 0.0],
            "std": [1.0, 1.0, 1.0],
            "scale": 1 / 255.0,
        },
        "data": {
            "generator": "edgecv.data.synth",
            "task": "detect",
            "seed": s.seed,
            "size": s.size,
            "n_train": s.n_train,
            "n_val": s.n_val,
        },
        "split": "val",
        "metric": "map50",
        "value": round(maps["torch"]["map50"], 4),
        "map": {k: {"map50": round(v["map50"], 4), "map": round(v["map"], 4)} for k, v in maps.items()},
        "subset": {
            "images": min(TEST_SUBSET, len(samples)),
            **{k: {"map50": round(v["map50"], 4), "map": round(v["map"], 4)} for k, v in sub_maps.items()},
            "note": "the first images of the val split (what tests/test_defaults_detector.py re-measures)",
        },
        "postprocess": {"score_threshold": 0.001, "iou_threshold": 0.5, "max_det": 100},
        "box_agreement": rows,
        "recipe": recipe.to_dict(),
        "recipe_file": str(recipe_path),
        "command": f"python scripts/shipped_detector.py {recipe_path} {run_dir}",
        "train": {k: rec[k] for k in ("epochs", "train_time_s", "threads")},
        "history": rec["history"],
        "versions": {**versions(), **_runtime_versions()},
        "evaluated_with": "faster-coco-eval via edgecv.validate.detection.runner_map (full val split)",
    }
    _io.write_json(weights_dir / f"{SHIPPED_STEM}.json", info)
    return info


def main(argv: list[str] | None = None) -> None:
    """``python scripts/shipped_detector.py RECIPE RUN_DIR``: train and ship the default detector."""
    import argparse

    ap = argparse.ArgumentParser(prog="scripts/shipped_detector.py", description=main.__doc__)
    ap.add_argument("recipe")
    ap.add_argument("run_dir")
    ap.add_argument("--weights-dir", default=str(WEIGHTS_DIR))
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument(
        "--record-only",
        action="store_true",
        help="re-measure the saved weights and rewrite the JSON (training record from RUN_DIR)",
    )
    a = ap.parse_args(argv)
    if a.record_only:
        info = write_record(
            a.recipe, a.run_dir, json.loads((Path(a.run_dir) / "train_record.json").read_text()), a.weights_dir
        )
    else:
        info = ship(a.recipe, a.run_dir, a.weights_dir, a.threads)
    print(json.dumps({"map": info["map"], "subset": info["subset"], "train": info["train"]}, indent=1))


if __name__ == "__main__":
    main()
