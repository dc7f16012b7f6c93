"""DDP on CPU: two gloo processes train a few steps and end with identical weights, different from the init."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

pytestmark = pytest.mark.torch

torch = pytest.importorskip("torch")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(rank: int, world: int, port: int, out: str) -> None:
    # the same environment torchrun provides: the trainer joins the group from it
    os.environ.update(
        {
            "RANK": str(rank),
            "WORLD_SIZE": str(world),
            "LOCAL_RANK": str(rank),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
        }
    )
    torch.set_num_threads(1)
    import torch.distributed as dist
    from torch import nn
    from torch.utils.data import TensorDataset

    from edgecv.config import OptimizerConfig, ScheduleConfig, TrainConfig
    from edgecv.train import ClassifyTask, Trainer

    torch.manual_seed(100 + rank)  # different init per rank: DDP must broadcast rank 0's weights
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)
    )
    init = {k: v.clone() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(64, 3, 6, 6, generator=g), torch.randint(0, 3, (64,), generator=g))
    cfg = TrainConfig(
        epochs=2, seed=0, optimizer=OptimizerConfig(name="adam", lr=0.01), schedule=ScheduleConfig(name="cosine")
    )
    tr = Trainer(model, ClassifyTask(3), data, data, cfg, Path(out) / "run", batch_size=8, progress=False)
    assert tr.dist.world_size == world and tr.dist.rank == rank
    steps = tr.steps_per_epoch()
    res = tr.fit()
    torch.save(
        {"state": tr.model.state_dict(), "init": init, "steps": steps, "metric": res.last_metric},
        Path(out) / f"rank{rank}.pt",
    )
    dist.destroy_process_group()


def test_two_ranks_end_identical(tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert r0["steps"] == 64 // 2 // 8  # the data set is sharded over the two ranks
    for k in r0["state"]:
        assert torch.equal(r0["state"][k], r1["state"][k]), k
    assert not torch.equal(r0["state"]["0.weight"], r0["init"]["0.weight"])
    assert not torch.equal(r0["init"]["0.weight"], r1["init"]["0.weight"])  # they did start apart
    assert r0["metric"] == r1["metric"]  # val metric is all-reduced, the same on both ranks
    # only rank 0 writes the run folder
    assert (tmp_path / "run" / "last.pt").is_file()
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 2
