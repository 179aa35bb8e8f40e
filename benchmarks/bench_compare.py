"""Benchmark ``bridge.compare`` against the read floor and a naive torch.save/torch.load baseline.

Builds two runs (``--size-gb`` each) of detection-shaped tensors, then times, each phase in its
own subprocess so that peak RSS (ru_maxrss) is per phase:

* ``floor``    read both runs once, every tensor, through ``Run.tensor_slices``;
* ``compare``  ``bridge.compare.compare_runs`` (all statistics);
* ``baseline`` ``torch.load`` two pickled dicts, per tensor ``torch.allclose`` + ``(a-b).abs().max()``.

Usage: ``python benchmarks/bench_compare.py [--size-gb 2.0] [--workdir DIR] [--device auto]``.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

#: One "step" of a Mask2Former/DETR-like model: backbone, FPN, pixel decoder, decoder layers, heads.
BLOCK: list[tuple[str, tuple[int, ...]]] = (
    [
        (f"decoder.layers.{i}.{part}", shape)
        for i in range(9)
        for part, shape in (
            ("query", (2, 300, 256)),
            ("cls_logits", (2, 300, 81)),
            ("boxes", (2, 300, 4)),
            ("attn_mask", (2, 8, 300, 68)),
        )
    ]
    + [(f"neck.fpn.p{6 - i}", (2, 256, 200 // 2 ** (4 - i), 272 // 2 ** (4 - i))) for i in range(5)]
    + [(f"backbone.res{i + 2}", (2, 256 * 2**i, 200 // 2**i, 272 // 2**i)) for i in range(4)]
    + [("pixel_decoder.mask_features", (2, 256, 100, 136))]
    + [("heads.pred_masks", (2, 100, 200, 272)), ("heads.scores", (2, 100))]
)


def build(workdir: Path, size_gb: float) -> dict[str, int]:
    """Write runs ``a``/``b`` (Recorder) and ``a.pt``/``b.pt`` (pickled dicts) totalling ``size_gb`` per run."""
    import torch

    from bridge import Recorder

    budget = int(size_gb * 2**30)
    g = torch.Generator().manual_seed(0)
    total, n, step = 0, 0, 0
    dict_a: dict[str, torch.Tensor] = {}
    dict_b: dict[str, torch.Tensor] = {}
    with Recorder(workdir / "a", framework="bench-a") as ra, Recorder(workdir / "b", framework="bench-b") as rb:
        while total < budget:
            for name, shape in BLOCK:
                if total >= budget:
                    break
                t = torch.randn(shape, generator=g)
                u = t + torch.randn(shape, generator=g) * 1e-7  # tiny, in-tolerance drift
                ra.record(name, t, step=step)
                rb.record(name, u, step=step)
                dict_a[f"{step}/{name}"], dict_b[f"{step}/{name}"] = t, u
                total += t.numel() * t.element_size()
                n += 1
            step += 1
    torch.save(dict_a, workdir / "a.pt")
    torch.save(dict_b, workdir / "b.pt")
    return {"tensors": n, "steps": step, "bytes_per_run": total}


def phase(name: str, workdir: Path, device: str) -> dict[str, float]:
    """Run one phase in this process; return its wall time (``build`` takes the size in ``device``)."""
    import torch

    t0 = time.perf_counter()
    if name == "build":
        return build(workdir, float(device))
    if name == "floor":
        from bridge import open_run
        from bridge.compare.engine import _rows_for

        torch.set_num_threads(1)  # like compare on CPU
        buf = torch.empty(0, dtype=torch.uint8)
        for run in (open_run(workdir / "a"), open_run(workdir / "b")):
            for e in run.entries():
                if e.is_tensor:
                    for chunk in run.tensor_slices(e, _rows_for(e.shape)):
                        raw = chunk.reshape(-1).view(torch.uint8)  # slices are mmap views: copy = read
                        if buf.numel() < raw.numel():
                            buf = torch.empty(raw.numel(), dtype=torch.uint8)
                        buf[: raw.numel()].copy_(raw)
    elif name == "import":
        import bridge.compare  # noqa: F401  (RSS of the interpreter with torch loaded)
    elif name == "compare":
        from bridge.compare import compare_runs

        res = compare_runs(workdir / "a", workdir / "b", device=device)
        assert res.passed, "benchmark runs are expected to agree"
    elif name in ("baseline", "baseline_1thread"):
        if name == "baseline_1thread":
            torch.set_num_threads(1)
        da = torch.load(workdir / "a.pt", weights_only=True)
        db = torch.load(workdir / "b.pt", weights_only=True)
        ok = True
        for k, ta in da.items():
            tb = db[k]
            ok &= torch.allclose(ta, tb, rtol=1.3e-6, atol=1e-5)
            float((ta - tb).abs().max())
        assert ok
    else:
        raise SystemExit(f"unknown phase {name}")
    return {"seconds": time.perf_counter() - t0}


def run_phase(name: str, workdir: Path, device: str) -> dict[str, float]:
    """Run a phase in a fresh subprocess; return seconds and peak RSS (MiB)."""
    cmd = [sys.executable, __file__, "--phase", name, "--workdir", str(workdir)]
    cmd += ["--size-gb", device] if name == "build" else ["--device", device]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"phase {name} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    """CLI entry point."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size-gb", type=float, default=2.0, help="size of each run (default 2.0)")
    p.add_argument("--workdir", help="where to build the runs (default: a temp dir, removed after)")
    p.add_argument("--device", default="auto")
    p.add_argument("--phase", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.phase:
        res = phase(args.phase, Path(args.workdir), str(args.size_gb) if args.phase == "build" else args.device)
        res["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(res))
        return
    tmp = None
    if args.workdir:
        workdir = Path(args.workdir)
        workdir.mkdir(parents=True, exist_ok=True)
    else:
        workdir = Path(tmp := tempfile.mkdtemp(prefix="bench_compare_"))
    try:
        t0 = time.perf_counter()
        info = run_phase("build", workdir, str(args.size_gb))
        print(
            f"built {info['tensors']} tensors over {info['steps']} steps, "
            f"{info['bytes_per_run'] / 2**30:.2f} GiB per run in {time.perf_counter() - t0:.1f}s ({workdir})"
        )
        results = {
            name: run_phase(name, workdir, args.device)
            for name in ("import", "floor", "compare", "baseline", "baseline_1thread")
        }
        for name, r in results.items():
            print(f"{name:16s} {r['seconds']:8.2f} s   peak RSS {r['peak_rss_mib']:8.0f} MiB")
        c, f, b = (results[k]["seconds"] for k in ("compare", "floor", "baseline"))
        print(f"compare / floor    = {c / f:.2f}x  (target <= 2)")
        print(
            f"baseline / compare = {b / c:.2f}x  (target >= 3; single-thread baseline: "
            f"{results['baseline_1thread']['seconds'] / c:.2f}x)"
        )
        print(
            f"peak RSS compare {results['compare']['peak_rss_mib']:.0f} MiB vs baseline "
            f"{results['baseline']['peak_rss_mib']:.0f} MiB (data {2 * info['bytes_per_run'] / 2**20:.0f} MiB)"
        )
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
