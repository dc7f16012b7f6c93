"""Trainer: optimizers, schedules, reproducibility, resume, checkpoints, metrics, distillation, CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

pytestmark = pytest.mark.torch

torch = pytest.importorskip("torch")
from torch import nn
from torch.utils.data import TensorDataset

from edgecv.config import OptimizerConfig, ScheduleConfig, TrainConfig
from edgecv.errors import ConfigError, ModelSourceError
from edgecv.train import (
    ClassifyTask,
    SegmentTask,
    Trainer,
    build_optimizer,
    build_scheduler,
    distill,
    kd_loss,
    load_checkpoint,
)


def tiny_net(num_classes: int = 3, dropout: float = 0.2) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Dropout(dropout),
        nn.Linear(32, num_classes),
    )


def colour_data(n: int, seed: int, size: int = 8) -> TensorDataset:
    """Class = which channel is bright, plus noise: easy enough to learn in a few epochs."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    x = torch.randn(n, 3, size, size, generator=g) * 0.5
    x[torch.arange(n), y] += 1.0
    return TensorDataset(x, y)


def _cfg(**kw) -> TrainConfig:
    base = {
        "epochs": 3,
        "seed": 0,
        "optimizer": OptimizerConfig(name="momentum", lr=0.05),
        "schedule": ScheduleConfig(name="cosine", warmup_epochs=0.5),
    }
    base.update(kw)
    return TrainConfig(**base)


def _fit(out: Path | None, seed: int = 0, **kw) -> tuple[nn.Module, object]:
    torch.manual_seed(seed)
    model = tiny_net()
    tr = Trainer(
        model,
        ClassifyTask(3),
        colour_data(96, 1),
        colour_data(48, 2),
        _cfg(seed=seed),
        out,
        batch_size=16,
        progress=False,
    )
    res = tr.fit(**kw)
    return tr.model, res


def _same(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ------------------------------------------------------------------------------------------ optimizers


@pytest.mark.parametrize(
    "name, cls, check",
    [
        ("sgd", torch.optim.SGD, lambda g: g["momentum"] == 0),
        ("momentum", torch.optim.SGD, lambda g: g["momentum"] == 0.8 and not g["nesterov"]),
        ("nesterov", torch.optim.SGD, lambda g: g["momentum"] == 0.8 and g["nesterov"]),
        ("adagrad", torch.optim.Adagrad, lambda g: True),
        ("adadelta", torch.optim.Adadelta, lambda g: g["rho"] == 0.9 and g["eps"] == 1e-6),
        ("rmsprop", torch.optim.RMSprop, lambda g: g["alpha"] == 0.99),
        ("adam", torch.optim.Adam, lambda g: g["betas"] == (0.9, 0.999)),
        ("adamw", torch.optim.AdamW, lambda g: True),
    ],
)
def test_optimizers_by_name(name: str, cls: type, check) -> None:
    model = tiny_net()
    opt = build_optimizer(model, OptimizerConfig(name=name, lr=0.01, momentum=0.8, weight_decay=0.1))
    assert type(opt) is cls and check(opt.param_groups[0])
    # weight decay on weights, not on biases / norm scales
    assert opt.param_groups[0]["weight_decay"] == 0.1 and opt.param_groups[1]["weight_decay"] == 0.0
    assert all(p.ndim > 1 for p in opt.param_groups[0]["params"])
    before = [p.detach().clone() for p in model.parameters()]
    x, y = colour_data(8, 0)[:]
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))


def test_adadelta_steps_equal_zeilers_update_rule_by_hand() -> None:
    # three steps on a 5-vector with a non-constant gradient, against the paper's algorithm written out
    torch.manual_seed(0)
    w0 = torch.randn(5, dtype=torch.float64)
    target = torch.randn(5, dtype=torch.float64)
    model = nn.Linear(5, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(w0[None])
    opt = build_optimizer(model, OptimizerConfig(name="adadelta", lr=0.5, rho=0.8))
    rho, eps, lr = 0.8, 1e-6, 0.5
    w, eg2, edx2 = w0.clone(), torch.zeros(5, dtype=torch.float64), torch.zeros(5, dtype=torch.float64)
    for _ in range(3):
        g = 2 * (w - target) * w.abs()  # any gradient that changes from step to step
        opt.zero_grad()
        model.weight.grad = g[None].clone()
        opt.step()
        eg2 = rho * eg2 + (1 - rho) * g * g  # E[g²]
        dx = -torch.sqrt(edx2 + eps) / torch.sqrt(eg2 + eps) * g  # Δx = -RMS[Δx]_{t-1} / RMS[g]_t · g
        edx2 = rho * edx2 + (1 - rho) * dx * dx  # E[Δx²]
        w = w + lr * dx
        torch.testing.assert_close(model.weight[0].detach(), w, rtol=1e-12, atol=1e-12)
    assert float((w - w0).abs().min()) > 0
    assert build_optimizer(model, OptimizerConfig(name="adadelta", eps=1e-4)).param_groups[0]["eps"] == 1e-4


def test_warmup_cosine_and_step_schedules() -> None:
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    s = build_scheduler(
        opt, ScheduleConfig(name="cosine", warmup_epochs=1, warmup_start=0.1, min_lr=0.0), epochs=5, steps_per_epoch=10
    )
    lrs = []
    for _ in range(50):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        s.step()
    assert lrs[0] == pytest.approx(0.1)
    assert lrs[5] == pytest.approx(0.1 + 0.9 * 5 / 10)  # linear warm-up
    assert max(lrs) == pytest.approx(1.0) and lrs.index(max(lrs)) == 10
    assert lrs[10 + 20] == pytest.approx(0.5 * (1 + math.cos(math.pi * 20 / 40)))  # cosine over the rest
    assert lrs[-1] < 0.01
    opt2 = torch.optim.SGD([p], lr=1.0)
    s2 = build_scheduler(opt2, ScheduleConfig(name="step", step_size=2, gamma=0.5), epochs=6, steps_per_epoch=3)
    lrs2 = []
    for _ in range(18):
        lrs2.append(opt2.param_groups[0]["lr"])
        opt2.step()
        s2.step()
    assert lrs2[5] == 1.0 and lrs2[6] == 0.5 and lrs2[12] == 0.25


# ------------------------------------------------------------------------------------------ loop


def test_learns_and_writes_checkpoints_and_metrics(tmp_path: Path) -> None:
    model, res = _fit(tmp_path)
    assert res.metric_name == "top1" and res.epochs == 3
    assert res.last_metric >= 85.0, res.history  # the task is easy; chance is 33%
    lines = [json.loads(ln) for ln in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2, 3]
    assert {"train_loss", "val_loss", "top1", "lr", "img_per_s", "time_s"} <= set(lines[0])
    assert lines[-1]["train_loss"] < lines[0]["train_loss"]
    last = load_checkpoint(tmp_path / "last.pt")
    best = load_checkpoint(tmp_path / "best.pt")
    assert last["epoch"] == 3 and {"model", "optimizer", "scheduler", "rng", "best_metric"} <= set(last)
    assert best["epoch"] == res.best_epoch and best["best_metric"] == max(r["top1"] for r in lines)
    fresh = tiny_net()
    fresh.load_state_dict(last["model"])
    assert _same(fresh, model)


def test_seeded_runs_are_identical_on_cpu() -> None:
    a, _ = _fit(None, seed=0)
    b, _ = _fit(None, seed=0)
    c, _ = _fit(None, seed=1)
    assert _same(a, b)
    assert not _same(a, c)


def test_resume_matches_straight_run(tmp_path: Path) -> None:
    straight, r1 = _fit(tmp_path / "straight")
    _, part = _fit(tmp_path / "resumed", stop_after=2)
    assert part.epochs == 2
    resumed, r2 = _fit(tmp_path / "resumed", resume=True)
    assert _same(straight, resumed)
    assert [h["epoch"] for h in r2.history] == [1, 2, 3]
    assert r1.history[-1]["top1"] == r2.history[-1]["top1"]


def test_resume_without_checkpoint_fails(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no last.pt"):
        _fit(tmp_path / "empty", resume=True)


def test_gradient_clipping_bounds_the_step() -> None:
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    data = TensorDataset(torch.randn(8, 4) * 100, torch.zeros(8, dtype=torch.long))
    before = torch.cat([p.detach().flatten() for p in model.parameters()])
    cfg = TrainConfig(
        epochs=1, optimizer=OptimizerConfig(name="sgd", lr=1.0), schedule=ScheduleConfig(name="none"), clip_grad=0.01
    )
    Trainer(model, ClassifyTask(3), data, None, cfg, batch_size=8, progress=False).fit()
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert 0 < float((after - before).norm()) <= 0.01 + 1e-6


def test_amp_is_off_on_cpu() -> None:
    tr = Trainer(tiny_net(), ClassifyTask(3), colour_data(8, 0), None, _cfg(amp=True), progress=False)
    assert tr.device.type == "cpu" and tr.use_amp is False


def test_segment_task_miou() -> None:
    task = SegmentTask(3)
    m = task.new_metric()
    target = torch.tensor([[[0, 0, 1, 1], [2, 2, 255, 1]]])
    logits = torch.zeros(1, 3, 2, 4)
    pred = torch.tensor([[0, 1, 1, 1], [2, 2, 0, 0]])
    logits.scatter_(1, pred[None, None].expand(1, 1, 2, 4), 5.0)
    m.update(logits, target)
    # class 0: I=1, U=3; class 1: I=2, U=4; class 2: I=2, U=2
    assert m.compute() == pytest.approx(100 * (1 / 3 + 2 / 4 + 1) / 3)
    assert float(task.loss(logits, target)) > 0


# ------------------------------------------------------------------------------------------ distillation


def test_kd_loss_matches_definition() -> None:
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(4, 5, generator=g), torch.randn(4, 5, generator=g)
    T = 3.0
    p_t = torch.softmax(t / T, 1)
    manual = (p_t * (torch.log(p_t) - torch.log_softmax(s / T, 1))).sum(1).mean() * T * T
    assert float(kd_loss(s, t, T)) == pytest.approx(float(manual), rel=1e-5)
    assert float(kd_loss(t, t, T)) == pytest.approx(0.0, abs=1e-6)
    s4, t4 = torch.randn(2, 5, 3, 3, generator=g), torch.randn(2, 5, 3, 3, generator=g)
    per_pixel = kd_loss(s4.permute(0, 2, 3, 1).reshape(-1, 5), t4.permute(0, 2, 3, 1).reshape(-1, 5), T)
    assert float(kd_loss(s4, t4, T)) == pytest.approx(float(per_pixel), rel=1e-5)


def _agreement(student: nn.Module, teacher: nn.Module, x: torch.Tensor) -> float:
    student.eval()
    teacher.eval()
    with torch.no_grad():
        return float((student(x).argmax(1) == teacher(x).argmax(1)).float().mean())


def test_distill_classifier_from_tensors() -> None:
    torch.manual_seed(0)
    teacher = tiny_net(dropout=0.0)
    Trainer(teacher, ClassifyTask(3), colour_data(96, 1), None, _cfg(), batch_size=16, progress=False).fit()
    torch.manual_seed(5)
    student = tiny_net(dropout=0.0)
    x_eval = colour_data(64, 9)[:][0]
    before = _agreement(student, teacher, x_eval)
    student, _res = distill(
        student,
        teacher,
        colour_data(96, 3),
        epochs=8,
        lr=0.02,
        temperature=2.0,
        alpha=1.0,
        task="classify",
        num_classes=3,
        batch_size=16,
    )
    after = _agreement(student, teacher, x_eval)
    assert after >= 0.9 and after > before


def test_distill_segmenter_from_unlabelled_folder(tmp_path: Path) -> None:
    pytest.importorskip("cv2")
    from edgecv.data.synth import generate_images

    generate_images("segment", tmp_path / "imgs", n=24, size=32, seed=0)

    def seg_net(seed: int) -> nn.Module:
        torch.manual_seed(seed)
        return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 1))

    teacher, student = seg_net(0), seg_net(1)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        kl_before = float(kd_loss(student(x), teacher(x), 2.0))
    student, res = distill(
        student, teacher, tmp_path / "imgs", epochs=4, lr=0.01, temperature=2.0, alpha=0.5, batch_size=8
    )
    assert res.metric_name == "train_loss"  # no labels, no val split: pure KD
    with torch.no_grad():
        kl_after = float(kd_loss(student(x), teacher(x), 2.0))
    assert kl_after < kl_before * 0.5


# ------------------------------------------------------------------------------------------ recipe / CLI


RECIPE = """
model: {{name: mobilenet_v2_tiny}}
data:
  task: classify
  synth: {{n_train: 48, n_val: 16, size: 32, seed: 3}}
  batch_size: 16
  augment: {{hflip: true, brightness: 0.1}}
train:
  epochs: 3
  optimizer: {{name: {opt}, lr: 0.01}}
  schedule: {{name: step, step_size: 1, gamma: 0.5}}
  seed: 0
"""


def test_cli_train_resume_equals_straight(cli, tmp_path: Path) -> None:
    pytest.importorskip("cv2")
    rec = tmp_path / "r.yaml"
    rec.write_text(RECIPE.format(opt="nesterov"))
    a, b = tmp_path / "straight", tmp_path / "resumed"
    p = cli("train", str(rec), "-o", str(a), "--json")
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout)
    assert res["epochs"] == 3 and res["metric_name"] == "top1" and len(res["history"]) == 3
    p = cli("train", str(rec), "-o", str(b), "--epochs", "2")
    assert p.returncode == 0, p.stderr
    assert "top1" in p.stdout
    p = cli("train", str(rec), "-o", str(b), "--resume", "--epochs", "3", "--json")
    assert p.returncode == 0, p.stderr
    sa = load_checkpoint(a / "last.pt")["model"]
    sb = load_checkpoint(b / "last.pt")["model"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    run = json.loads((a / "run.json").read_text())
    assert run["classes"] == sorted(run["classes"]) and len(run["classes"]) == 8
    assert run["preprocessing"]["input_size"] == [3, 32, 32]
    assert len((a / "metrics.jsonl").read_text().splitlines()) == 3


def test_build_model_errors(tmp_path: Path) -> None:
    from edgecv.config import ModelConfig
    from edgecv.train import build_model

    with pytest.raises(ModelSourceError, match="cannot import"):
        build_model(ModelConfig(source="no_such_module_x:f"))
    with pytest.raises(ConfigError, match="num_classes"):
        build_model(ModelConfig(name="mobilenet_v2_tiny", kwargs={"num_classes": 3}), num_classes=8)
    bad = tmp_path / "w.pt"
    bad.write_bytes(b"garbage")
    with pytest.raises(ModelSourceError, match="not a loadable"):
        build_model(ModelConfig(name="mobilenet_v2_tiny", weights=str(bad)), num_classes=8)
    m = build_model(ModelConfig(name="mobilenet_v2_tiny", init="kaiming_normal"), num_classes=8)
    torch.save(m.state_dict(), tmp_path / "ok.pt")
    m2 = build_model(ModelConfig(name="mobilenet_v2_tiny", weights=str(tmp_path / "ok.pt")), num_classes=8)
    assert _same(m, m2)
