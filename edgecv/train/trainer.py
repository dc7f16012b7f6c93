"""The trainer: one loop for every task (the task supplies loss, metric and collate), seeded, resumable,
mixed-precision on CUDA, DDP under torchrun, with a rich progress bar, ``metrics.jsonl`` and atomic checkpoints.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Sized
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, RandomSampler, SequentialSampler, Subset
from torch.utils.data.distributed import DistributedSampler

from edgecv import _io
from edgecv.config.schema import TrainConfig
from edgecv.errors import ConfigError, ModelSourceError
from edgecv.train import distributed as D
from edgecv.train.base import Task, primary_output
from edgecv.train.optim import build_optimizer, build_scheduler

CHECKPOINT_FORMAT = "edgecv.checkpoint/1"


@dataclass
class TrainResult:
    """What a run reached. ``history`` holds one dict per epoch (the lines of ``metrics.jsonl``)."""

    metric_name: str
    best_metric: float | None
    best_epoch: int | None
    last_metric: float | None
    epochs: int
    train_time_s: float
    device: str
    out_dir: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    # numpy's state holds an ndarray; store it as a tensor so torch.load(weights_only=True) accepts it
    st = np.random.get_state(legacy=True)  # the default; numpy's stubs type the no-argument call as the dict form
    if not isinstance(st, tuple):
        raise TypeError(f"numpy's global RNG state: expected the legacy MT19937 tuple, found {type(st).__name__}")
    kind, keys, pos, has_gauss, cached = st
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, obj: dict[str, Any]) -> Path:
    """torch.save through a temp file + rename (a crash never leaves a half-written checkpoint)."""
    with _io.atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """torch.load(weights_only=True) with a one-line error for a missing or foreign file."""
    p = Path(path)
    if not p.is_file():
        raise ModelSourceError(f"checkpoint not found: {p}")
    try:
        obj = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad file
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        why = next((ln for ln in lines if "Unsupported global" in ln), lines[0] if lines else "")
        raise ModelSourceError(
            f"{p}: not a loadable state dict / checkpoint with torch.load(weights_only=True) "
            f"({type(exc).__name__}: {why[:200]})"
        ) from None
    if not isinstance(obj, dict):
        raise ModelSourceError(f"{p}: expected a state dict or checkpoint dict, found {type(obj).__name__}")
    return obj


def state_dict_of(obj: dict[str, Any]) -> dict[str, Any]:
    """The model state dict inside a trainer checkpoint, or ``obj`` itself when it already is one."""
    if obj.get("format") == CHECKPOINT_FORMAT or ("model" in obj and isinstance(obj["model"], dict)):
        return obj["model"]  # type: ignore[no-any-return]
    return obj


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


class Trainer:
    """Trains ``model`` on ``train_set`` for a :class:`Task`, evaluating on ``val_set`` after each epoch.

    Args:
        model: the network (its outputs go to ``task.loss``).
        task: loss / metric / collate provider (see :mod:`edgecv.train.tasks`).
        train_set: a Dataset of ``(input tensor, target)``; if it has ``set_epoch`` it is called per epoch.
        val_set: optional Dataset for the metric; without it the best checkpoint follows the train loss.
        cfg: the recipe's ``train`` section (optimizer, schedule, clip_grad, amp, seed, ...).
        out_dir: where ``last.pt``, ``best.pt`` and ``metrics.jsonl`` go (None: nothing is written).
        batch_size: per-process batch size.
        workers: DataLoader worker processes.
        device: default CUDA when available (the local rank's GPU under torchrun), else CPU.
        teacher: optional teacher model for distillation (``cfg.distill`` gives temperature and alpha).
        progress: show a rich progress bar (rank 0 only).
        meta: JSON-able data stored in every checkpoint (recipe, classes, preprocessing).
    """

    def __init__(
        self,
        model: nn.Module,
        task: Task,
        train_set: Dataset,
        val_set: Dataset | None,  # type: ignore[type-arg]
        cfg: TrainConfig,
        out_dir: str | Path | None = None,
        *,
        batch_size: int = 32,
        workers: int = 0,
        device: str | torch.device | None = None,
        teacher: nn.Module | None = None,
        temperature: float = 4.0,
        alpha: float = 0.5,
        progress: bool = True,
        meta: dict[str, Any] | None = None,
    ) -> None:
        self.dist = D.init_from_env()
        if device is None:
            device = (
                torch.device("cuda", self.dist.local_rank)
                if torch.cuda.is_available() and self.dist.enabled
                else _default_device()
            )
        self.device = torch.device(device)
        self.cfg = cfg
        self.task = task
        self.train_set, self.val_set = train_set, val_set
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.batch_size, self.workers = int(batch_size), int(workers)
        self.model = model.to(self.device)
        self.teacher = teacher.to(self.device).eval() if teacher is not None else None
        if self.teacher is not None:
            for p in self.teacher.parameters():
                p.requires_grad_(False)
        if cfg.distill is not None:
            temperature, alpha = cfg.distill.temperature, cfg.distill.alpha
        self.temperature, self.alpha = float(temperature), float(alpha)
        self.progress = progress and self.dist.is_main
        self.meta = meta or {}
        self.use_amp = bool(cfg.amp) and self.device.type == "cuda"
        if len(train_set) == 0:  # type: ignore[arg-type]
            raise ConfigError("data.train: the training set is empty")

    # ------------------------------------------------------------------------------------------- loaders

    def _train_loader(self, epoch: int) -> DataLoader:  # type: ignore[type-arg]
        ds = self.train_set
        if not isinstance(ds, Sized):  # checked in __init__ already (len(train_set)); narrows for RandomSampler
            raise TypeError(f"train_set: expected a map-style Dataset with a length, found {type(ds).__name__}")
        n = len(ds)
        per_step = self.batch_size * self.dist.world_size
        drop_last = n >= per_step * 2  # a lone tiny last batch upsets batch norm
        if self.dist.enabled:
            sampler: Any = DistributedSampler(
                ds,
                num_replicas=self.dist.world_size,
                rank=self.dist.rank,
                shuffle=True,
                seed=self.cfg.seed,
                drop_last=drop_last,
            )
            sampler.set_epoch(epoch)
        else:
            g = torch.Generator()
            g.manual_seed(self.cfg.seed * 100_003 + epoch)  # the order depends on (seed, epoch) only: exact resume
            sampler = RandomSampler(ds, generator=g)
        if hasattr(ds, "set_epoch"):
            ds.set_epoch(epoch)
        g2 = torch.Generator()
        g2.manual_seed(self.cfg.seed + epoch)
        return DataLoader(
            ds,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.workers,
            collate_fn=self.task.collate,
            drop_last=drop_last,
            generator=g2,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
        )

    def _val_loader(self) -> DataLoader | None:  # type: ignore[type-arg]
        if self.val_set is None:
            return None
        ds: Any = self.val_set
        if self.dist.enabled:  # exact sharding (no padding duplicates): metric sums are all-reduced after
            ds = Subset(ds, list(range(self.dist.rank, len(ds), self.dist.world_size)))
        return DataLoader(
            ds,
            batch_size=self.batch_size,
            sampler=SequentialSampler(ds),
            num_workers=self.workers,
            collate_fn=self.task.collate,
        )

    def steps_per_epoch(self) -> int:
        n = len(self.train_set)  # type: ignore[arg-type]
        per_step = self.batch_size * self.dist.world_size
        drop_last = n >= per_step * 2
        shard = math.ceil(n / self.dist.world_size) if self.dist.enabled else n
        if self.dist.enabled and drop_last:
            shard = n // self.dist.world_size
        return max(1, shard // self.batch_size if drop_last else math.ceil(shard / self.batch_size))

    # ------------------------------------------------------------------------------------------- loop

    def fit(self, epochs: int | None = None, resume: bool = False, stop_after: int | None = None) -> TrainResult:
        """Train to ``epochs`` (default ``cfg.epochs``), optionally resuming from ``out_dir/last.pt``.

        Args:
            epochs: total epochs of the schedule.
            resume: continue from ``last.pt`` (model, optimizer, scheduler, scaler, epoch, RNG state).
            stop_after: stop after this many completed epochs (as if interrupted) while keeping the schedule of
                ``epochs`` — what a resumed run needs to match an uninterrupted one.
        """
        epochs = int(epochs or self.cfg.epochs)
        cfg = self.cfg
        model = self.model
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        opt = build_optimizer(_unwrap(model), cfg.optimizer)
        sched = build_scheduler(opt, cfg.schedule, epochs, self.steps_per_epoch())
        scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        start, best, best_epoch = 0, None, None
        history: list[dict[str, Any]] = []
        metrics_path = self.out_dir / "metrics.jsonl" if self.out_dir is not None else None
        if resume:
            if self.out_dir is None or not (self.out_dir / "last.pt").is_file():
                raise ConfigError(f"--resume: no last.pt in {self.out_dir} to resume from")
            ck = load_checkpoint(self.out_dir / "last.pt", map_location=self.device)
            _unwrap(model).load_state_dict(ck["model"])
            opt.load_state_dict(ck["optimizer"])
            sched.load_state_dict(ck["scheduler"])
            if ck.get("scaler"):
                scaler.load_state_dict(ck["scaler"])
            start, best, best_epoch = int(ck["epoch"]), ck.get("best_metric"), ck.get("best_epoch")
            _set_rng_state(ck["rng"])
            if metrics_path is not None and metrics_path.is_file():
                history = [json.loads(ln) for ln in metrics_path.read_text().splitlines() if ln.strip()]
                history = [h for h in history if h["epoch"] <= start]
        elif self.out_dir is not None and self.dist.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        metric_name = self.task.metric_name if self.val_set is not None else "train_loss"
        higher = self.task.higher_is_better if self.val_set is not None else False
        last_metric = history[-1].get(metric_name) if history else None
        t_total = 0.0
        end = min(epochs, stop_after) if stop_after is not None else epochs
        bar = self._progress()
        try:
            for epoch in range(start, end):
                t0 = time.perf_counter()
                train_loss, ips, lr = self._train_epoch(model, opt, sched, scaler, epoch, epochs, bar)
                D.broadcast_buffers(_unwrap(model))
                row: dict[str, Any] = {"epoch": epoch + 1, "train_loss": train_loss, "lr": lr, "img_per_s": ips}
                if self.val_set is not None:
                    val = self.evaluate(_unwrap(model))
                    row.update(val)
                    metric = val[self.task.metric_name]
                else:
                    metric = train_loss
                dt = time.perf_counter() - t0
                t_total += dt
                row["time_s"] = round(dt, 3)
                history.append(row)
                last_metric = metric
                improved = (
                    best is None
                    or (metric > best if higher else metric < best)
                    or (isinstance(best, float) and math.isnan(best))
                )
                if improved:
                    best, best_epoch = metric, epoch + 1
                if bar is not None:
                    bar.console.print(
                        f"epoch {epoch + 1}/{epochs}  loss {train_loss:.4f}  {metric_name} "
                        f"{metric:.3f}  {ips:.0f} img/s  lr {lr:.2e}"
                    )
                if self.out_dir is not None and self.dist.is_main:
                    ck = {
                        "format": CHECKPOINT_FORMAT,
                        "model": _unwrap(model).state_dict(),
                        "optimizer": opt.state_dict(),
                        "scheduler": sched.state_dict(),
                        "scaler": scaler.state_dict() if self.use_amp else {},
                        "epoch": epoch + 1,
                        "epochs": epochs,
                        "best_metric": best,
                        "best_epoch": best_epoch,
                        "metric_name": metric_name,
                        "rng": _rng_state(),
                        "meta": self.meta,
                    }
                    save_checkpoint(self.out_dir / "last.pt", ck)
                    if improved:
                        save_checkpoint(self.out_dir / "best.pt", ck)
                    _io.write_text(
                        metrics_path,  # type: ignore[arg-type]
                        "".join(json.dumps(h) + "\n" for h in history),
                    )
                D.barrier()
        finally:
            if bar is not None:
                bar.stop()
        self.model = _unwrap(model)
        return TrainResult(
            metric_name=metric_name,
            best_metric=best,
            best_epoch=best_epoch,
            last_metric=last_metric,
            epochs=len(history),
            train_time_s=round(t_total, 3),
            device=str(self.device),
            out_dir=str(self.out_dir) if self.out_dir else None,
            history=history,
        )

    def _progress(self) -> Any:
        if not self.progress:
            return None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        bar = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}"),
            TextColumn("{task.fields[ips]:.0f} img/s"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        bar.start()
        return bar

    def _train_epoch(
        self, model: nn.Module, opt: torch.optim.Optimizer, sched: Any, scaler: Any, epoch: int, epochs: int, bar: Any
    ) -> tuple[float, float, float]:
        # reseed per epoch: dropout & co. depend on (seed, epoch) only, so a resumed run matches a straight one
        torch.manual_seed(self.cfg.seed * 1_000_003 + epoch)
        model.train()
        loader = self._train_loader(epoch)
        task_id = (
            bar.add_task("train", total=len(loader), epoch=f"{epoch + 1}/{epochs}", loss=float("nan"), ips=0.0)
            if bar is not None
            else None
        )
        tot_loss, n_seen, t0 = 0.0, 0, time.perf_counter()
        for x, y in loader:
            x = x.to(self.device, non_blocking=True)
            y = self.task.to_device(y, self.device)
            with torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=self.use_amp):
                out = model(x)
                loss = self._loss(out, x, y)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if self.cfg.clip_grad is not None:
                scaler.unscale_(opt)
                nn.utils.clip_grad_norm_(model.parameters(), self.cfg.clip_grad)
            scaler.step(opt)
            scaler.update()
            sched.step()
            bs = x.shape[0]
            tot_loss += float(loss.detach()) * bs
            n_seen += bs
            if bar is not None:
                bar.update(
                    task_id,
                    advance=1,
                    loss=tot_loss / n_seen,
                    ips=n_seen * self.dist.world_size / max(time.perf_counter() - t0, 1e-9),
                )
        stats = D.all_reduce_sum(torch.tensor([tot_loss, float(n_seen)], dtype=torch.float64))
        dt = max(time.perf_counter() - t0, 1e-9)
        if bar is not None:
            bar.remove_task(task_id)
        return float(stats[0]) / max(float(stats[1]), 1.0), float(stats[1]) / dt, float(opt.param_groups[0]["lr"])

    def _loss(self, out: Any, x: torch.Tensor, y: Any) -> torch.Tensor:
        labelled = self.task.has_labels(y)
        if self.teacher is None:
            return self.task.loss(out, y)
        with torch.no_grad():
            t_out = self.teacher(x)
        kd = self.task.distill_loss(out, t_out, self.temperature)
        if not labelled:
            return kd
        return self.alpha * kd + (1.0 - self.alpha) * self.task.loss(out, y)

    @torch.no_grad()
    def evaluate(self, model: nn.Module | None = None) -> dict[str, float]:
        """Validation loss and the task metric over ``val_set`` (summed over ranks when distributed)."""
        model = model if model is not None else _unwrap(self.model)
        loader = self._val_loader()
        if loader is None:
            return {}
        was_training = model.training
        model.eval()
        metric = self.task.new_metric()
        loss_sum, n = 0.0, 0
        for x, y in loader:
            x = x.to(self.device)
            y = self.task.to_device(y, self.device)
            with torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=self.use_amp):
                out = model(x)
            if self.task.has_labels(y):
                loss_sum += float(self.task.loss(out, y)) * x.shape[0]
            metric.update(out, y)
            n += x.shape[0]
        model.train(was_training)
        metric.state = D.all_reduce_sum(metric.state)
        sums = D.all_reduce_sum(torch.tensor([loss_sum, float(n)], dtype=torch.float64))
        return {"val_loss": float(sums[0]) / max(float(sums[1]), 1.0), self.task.metric_name: metric.compute()}


def predict_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Eval-mode logits of one batch (helper for tests and distillation checks)."""
    model.eval()
    with torch.no_grad():
        return primary_output(model(x))
