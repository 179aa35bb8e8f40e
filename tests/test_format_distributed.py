"""Two gloo ranks record into one run dir; the parent reads both ranks back."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from bridge import Recorder, open_run


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _value(rank: int, step: int) -> dict:
    gen = torch.Generator().manual_seed(100 * rank + step)
    return {"image": torch.randn(3, 4, 5, generator=gen), "rank": rank, "ids": (step, f"img{rank}")}


def _worker(rank: int, world: int, port: int, run_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        with Recorder(run_dir, framework="test") as rec:  # rank taken from torch.distributed
            assert rec.rank == rank
            for step in range(2):
                rec.record("batch", _value(rank, step), step=step, kind="batch")
                loss = torch.tensor(float(rank + step))
                dist.all_reduce(loss)
                rec.record("loss", loss, step=step, kind="loss")
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_two_ranks_share_one_run_dir(tmp_path: Path) -> None:
    world = 2
    mp.spawn(_worker, args=(world, _free_port(), str(tmp_path)), nprocs=world, join=True)
    run = open_run(tmp_path)
    assert run.ranks() == [0, 1]
    assert run.steps() == [0, 1]
    assert run.meta["format_version"] == 1 and run.meta["rank"] == 0
    for rank in range(world):
        assert sorted(p.name for p in (tmp_path / f"rank{rank}").iterdir())[0].startswith("000000-")
        for step in range(2):
            got = run.get("batch", step=step, kind="batch", rank=rank)
            want = _value(rank, step)
            assert torch.equal(got["image"], want["image"])
            assert got["rank"] == rank and list(got["ids"]) == [step, f"img{rank}"]
            assert run.get("loss", step=step, kind="loss", rank=rank).item() == 1.0 + 2 * step
        es = run.entries(rank=rank)
        assert [e.index for e in es] == list(range(len(es))) and all(e.rank == rank for e in es)
    assert [e.rank for e in run.entries()] == sorted(e.rank for e in run.entries())
