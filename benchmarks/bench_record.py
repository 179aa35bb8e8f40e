"""Benchmark ``bridge.Recorder.record`` against ``torch.save`` of each value, measured in the same run.

Records ``--records`` values (a small activation-like dict: one ``--size``x``--size`` float32 tensor, an
int tensor and two scalars) one per step, once with the default Recorder and once with ``fsync=True``,
then saves the same values with one ``torch.save`` per value into a sibling folder. Prints total and
per-record times of each, the per-record time of the first and last tenth of the recording (equal
when the cost per record is O(1)), and the time to ``open_run`` the recorded run.

    python benchmarks/bench_record.py [--records 1500] [--size 64] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bridge import Recorder, open_run


def _values(n: int, size: int) -> list[dict]:
    gen = torch.Generator().manual_seed(0)
    return [
        {"feat": torch.randn(size, size, generator=gen), "labels": torch.arange(8), "step": i, "lr": 1e-4}
        for i in range(n)
    ]


def _time_recorder(run_dir: Path, values: list[dict], fsync: bool) -> list[float]:
    """Return the wall time of each record() call."""
    times = []
    with Recorder(run_dir, framework="bench", rank=0, fsync=fsync) as rec:
        for step, value in enumerate(values):
            start = time.perf_counter()
            rec.record("act", value, step=step, kind="activation")
            times.append(time.perf_counter() - start)
    return times


def _time_torch_save(out_dir: Path, values: list[dict]) -> list[float]:
    """Return the wall time of each torch.save call (one file per value, as a naive recorder would)."""
    out_dir.mkdir(parents=True)
    times = []
    for step, value in enumerate(values):
        start = time.perf_counter()
        torch.save(value, out_dir / f"{step:06d}.pt")
        times.append(time.perf_counter() - start)
    return times


def _tenths(times: list[float]) -> tuple[float, float]:
    tenth = max(1, len(times) // 10)
    return sum(times[:tenth]) / tenth, sum(times[-tenth:]) / tenth


def main() -> None:
    """Run the benchmark and print the figures."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--records", type=int, default=1500, help="number of record() calls (default 1500)")
    p.add_argument("--size", type=int, default=64, help="side of the float32 tensor in each value (default 64)")
    p.add_argument("--workdir", help="where to write (default: a temp dir, removed after)")
    args = p.parse_args()
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench_record_"))
    values = _values(args.records, args.size)
    try:
        rec_times = _time_recorder(work / "run", values, fsync=False)
        fsync_times = _time_recorder(work / "run_fsync", values, fsync=True)
        save_times = _time_torch_save(work / "torch_save", values)
        start = time.perf_counter()
        run = open_run(work / "run")
        open_s = time.perf_counter() - start
        assert len(run.steps()) == args.records
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    n = args.records
    for label, times in (("Recorder.record", rec_times), ("fsync=True", fsync_times), ("torch.save", save_times)):
        first, last = _tenths(times)
        print(
            f"{label:16s} {n} records: {sum(times):7.3f} s total, {1e3 * sum(times) / n:6.3f} ms/record "
            f"(first tenth {1e3 * first:6.3f} ms, last tenth {1e3 * last:6.3f} ms)"
        )
    print(
        f"Recorder / torch.save: {sum(rec_times) / sum(save_times):.2f}x, with fsync=True "
        f"{sum(fsync_times) / sum(save_times):.2f}x; open_run of {n} records: {open_s:.3f} s"
    )


if __name__ == "__main__":
    main()
