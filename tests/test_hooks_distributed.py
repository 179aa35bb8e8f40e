"""detectron2's RecordHook under torch.distributed: two gloo ranks on the CPU train Mask R-CNN wrapped in
DistributedDataParallel, each rank records its own batch / losses / activation, and ``bridge.compare``
pairs the two ranks' leaves (a run against itself passes; a perturbed rank 1 is the first divergence)."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from bridge import Recorder, open_run
from bridge.coco.synthetic import write_synthetic_coco
from bridge.compare.engine import compare_runs
from tests.conftest import small_mmdet_train_config

WORLD = 2
ACT = "backbone.bottom_up.res2"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(
    rank: int, port: int, coco_root: str, train_ids: list[int], cache_dir: str, run_dir: str, timing_dir: str
) -> None:
    start = time.perf_counter()
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        t0 = time.perf_counter()
        from detectron2 import model_zoo
        from detectron2.config import get_cfg
        from detectron2.data import build_detection_train_loader
        from detectron2.engine import SimpleTrainer
        from detectron2.modeling import build_model
        from torch.nn.parallel import DistributedDataParallel

        from bridge.coco.onesample import OneSampleConfig
        from d2_side.datasets import register_onesample
        from d2_side.hooks import RecordHook

        import_s = time.perf_counter() - t0

        # Both ranks prepare the same cache concurrently (atomic writes), as under torchrun.
        register_onesample(OneSampleConfig.create(coco_root, {"train": train_ids}, cache_dir))
        cfg = get_cfg()
        cfg.merge_from_file(model_zoo.get_config_file("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml"))
        cfg.merge_from_list(
            [
                "MODEL.DEVICE",
                "cpu",
                "MODEL.WEIGHTS",
                "",
                "INPUT.MIN_SIZE_TRAIN",
                "(96,)",
                "INPUT.MAX_SIZE_TRAIN",
                "160",
                "DATALOADER.NUM_WORKERS",
                "0",
                "SOLVER.IMS_PER_BATCH",
                str(WORLD),
                "DATASETS.TRAIN",
                "('coco_2017_train_onesample',)",
            ]
        )
        torch.manual_seed(0)  # same init on both ranks (DDP also broadcasts rank 0's parameters)
        model = DistributedDataParallel(build_model(cfg))
        loader = build_detection_train_loader(cfg)  # TrainingSampler shards by rank; IMS_PER_BATCH 2 -> 1 a rank
        trainer = SimpleTrainer(model, loader, torch.optim.SGD(model.parameters(), lr=1e-4))
        hook = RecordHook(run_dir, iterations=[0], activations=[ACT])
        trainer.register_hooks([hook])
        t1 = time.perf_counter()
        trainer.train(0, 2)
        train_s = time.perf_counter() - t1
        assert hook.recorder is not None and hook.recorder.rank == rank  # rank taken from torch.distributed

        # DDP kept the replicas in sync through both steps: every parameter identical on both ranks.
        flat = torch.cat([p.detach().reshape(-1) for p in model.module.parameters()])
        gathered = [torch.empty_like(flat) for _ in range(WORLD)]
        dist.all_gather(gathered, flat)
        assert torch.equal(gathered[0], gathered[1])
        dist.barrier()
        Path(timing_dir, f"rank{rank}.json").write_text(
            json.dumps({"import_s": import_s, "train_s": train_s, "total_s": time.perf_counter() - start})
        )
    finally:
        dist.destroy_process_group()


def _copy_run(src, dst: Path, perturb_rank: int) -> None:
    """Re-record every value of ``src`` into ``dst`` rank by rank (explicit ranks: no process group in the
    parent), adding 1e-2 to the activation of ``perturb_rank``."""
    for rank in src.ranks():
        with Recorder(dst, framework=src.meta["frameworks"][rank], rank=rank) as rec:
            for name, step, kind in dict.fromkeys((e.name, e.step, e.kind) for e in src.entries(rank=rank)):
                value = src.get(name, step=step, kind=kind, rank=rank)
                if rank == perturb_rank and kind == "activation":
                    value = value + 1e-2
                rec.record(name, value, step=step, kind=kind)


def test_record_hook_under_ddp_records_per_rank_and_compare_pairs_ranks(tmp_path: Path) -> None:
    coco = write_synthetic_coco(tmp_path / "coco", num_images=2)  # written once, by the parent
    train_ids = list(coco.image_ids["train2017"])
    assert len(train_ids) == 2
    run_dir, timing_dir = tmp_path / "run", tmp_path / "timing"
    timing_dir.mkdir()
    t0 = time.perf_counter()
    mp.spawn(
        _worker,
        args=(_free_port(), str(coco.root), train_ids, str(tmp_path / "cache"), str(run_dir), str(timing_dir)),
        nprocs=WORLD,
        join=True,
    )
    spawn_s = time.perf_counter() - t0
    timings = {r: json.loads((timing_dir / f"rank{r}.json").read_text()) for r in range(WORLD)}
    print(f"\nspawn+train wall {spawn_s:.1f}s; per rank {timings}")

    run = open_run(run_dir)
    assert run.ranks() == [0, 1]
    assert run.steps() == [0]  # iterations=[0] only, although 2 iterations ran
    assert run.meta["frameworks"] == {0: "detectron2", 1: "detectron2"}
    image_ids = {}
    for rank in range(WORLD):
        assert {(e.name, e.kind) for e in run.entries(rank=rank)} == {
            ("batch", "batch"),
            ("losses", "loss"),
            (ACT, "activation"),
        }
        batch = run.get("batch", step=0, kind="batch", rank=rank)
        assert len(batch) == 1  # SOLVER.IMS_PER_BATCH 2 over 2 ranks
        assert batch[0]["image"].dtype == torch.uint8 and batch[0]["image"].shape[0] == 3
        assert batch[0]["instances"]["gt_boxes"].shape[1] == 4
        image_ids[rank] = batch[0]["image_id"]
        losses = run.get("losses", step=0, kind="loss", rank=rank)
        assert {"loss_cls", "loss_box_reg", "loss_mask", "loss_rpn_cls", "loss_rpn_loc"} <= set(losses)
        assert all(torch.isfinite(v).all() for v in losses.values())
        act = run.get(ACT, step=0, kind="activation", rank=rank)
        assert act.ndim == 4 and act.shape[:2] == (1, 256)
    # TrainingSampler shards one shared shuffled permutation by rank: the two ranks see different images.
    assert sorted(image_ids.values()) == sorted(train_ids)
    b0 = run.get("batch", step=0, kind="batch", rank=0)[0]["image"]
    b1 = run.get("batch", step=0, kind="batch", rank=1)[0]["image"]
    assert b0.shape != b1.shape or not torch.equal(b0, b1)

    same = compare_runs(run, run, device="cpu")
    assert same.passed and same.first_divergence is None and same.n_failed == 0
    assert {item.rank for item in same.items} == {0, 1}
    for rank in range(WORLD):
        assert {item.kind for item in same.items if item.rank == rank} == {"batch", "loss", "activation"}

    perturbed = tmp_path / "run_b"
    _copy_run(run, perturbed, perturb_rank=1)
    diff = compare_runs(run_dir, perturbed, device="cpu")
    assert not diff.passed
    fd = diff.first_divergence
    assert fd is not None and (fd.rank, fd.step, fd.kind, fd.key) == (1, 0, "activation", ACT)
    failed = [item for item in diff.items if not item.passed]
    assert [(item.rank, item.key) for item in failed] == [(1, ACT)]
    assert not diff.a_only and not diff.b_only
    # the last passing leaf before it is on rank 1 too (its batch, recorded before the forward)
    assert diff.last_passing_before is not None and diff.last_passing_before.rank == 1


def _mmdet_worker(rank: int, port: int, coco_root: str, cache_dir: str, run_dir: str, work_dir: str) -> None:
    """One rank: gloo process group, then mmengine's Runner (Faster R-CNN, 1 iteration) with BridgeRecordHook.

    mmengine's own 'pytorch' launcher calls torch.cuda.set_device, so on the CPU the process group is made
    here and the Runner is started with launcher='none'; the hook takes the rank from torch.distributed."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        from mmengine.runner import Runner

        from bridge.coco.onesample import OneSampleConfig

        cfg = small_mmdet_train_config(
            "mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py",
            OneSampleConfig.create(coco_root, None, cache_dir),
            epochs=1,
            work_dir=f"{work_dir}/rank{rank}",
            hooks=[dict(type="BridgeRecordHook", run_dir=run_dir, iterations=[0])],
        )
        cfg.randomness = dict(seed=rank)
        Runner.from_cfg(cfg).train()
    finally:
        dist.destroy_process_group()


def test_mmdet_record_hook_writes_one_folder_per_rank(tmp_path: Path) -> None:
    root = tmp_path / "coco"
    write_synthetic_coco(root, num_images=2)
    run_dir = tmp_path / "run_mmdet"
    mp.spawn(
        _mmdet_worker,
        args=(_free_port(), str(root), str(tmp_path / "cache"), str(run_dir), str(tmp_path / "w")),
        nprocs=2,
        join=True,
    )
    run = open_run(run_dir)
    assert run.ranks() == [0, 1] and run.meta["framework"] == "mmdet"
    for rank in (0, 1):
        assert run.get("batch", step=0, kind="batch", rank=rank)["inputs"].ndim == 4
        assert "loss_cls" in run.get("losses", step=0, kind="loss", rank=rank)
    assert compare_runs(run_dir, run_dir, device="cpu").passed
