"""Benchmark ``bridge.report`` against the compare it reports on: the report must add at most 10 % to it.

Builds two runs (``--size-gb`` each) of detection-shaped tensors (``bench_compare.BLOCK``) where run B's
largest tensor of the first step diverges in one region (so the report loads and pictures it), then times,
each phase in its own subprocess:

* ``compare``  ``bridge.compare.compare_runs`` + its JSON report (what the porter runs anyway);
* ``report``   ``python -m bridge.report COMPARE.json -o report.html --json report.json`` in-process
               (read the pieces, judge the stages, load the first divergent pair, heatmap, histogram, page).

Usage: ``python benchmarks/bench_report.py [--size-gb 0.5] [--workdir DIR]`` (the issue's target: 2 GB).
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
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_compare import BLOCK

TARGET = 0.10


def build(workdir: Path, size_gb: float) -> dict[str, int]:
    """Write runs ``a``/``b`` totalling ``size_gb`` per run; B's largest first-step tensor diverges."""
    import torch

    from bridge import Recorder

    budget = int(size_gb * 2**30)
    largest = max(BLOCK, key=lambda item: torch.Size(item[1]).numel())[0]
    g = torch.Generator().manual_seed(0)
    total, n, step = 0, 0, 0
    with Recorder(workdir / "a", framework="bench-a") as ra, Recorder(workdir / "b", framework="bench-b") as rb:
        while total < budget:
            for name, shape in BLOCK:
                if total >= budget:
                    break
                t = torch.randn(shape, generator=g)
                u = t + torch.randn(shape, generator=g) * 1e-7
                if step == 0 and name == largest:
                    u[..., : shape[-2] // 4, : shape[-1] // 4] += 1e-2  # one corner diverges
                ra.record(name, t, step=step, kind="activation")
                rb.record(name, u, step=step, kind="activation")
                total += t.numel() * t.element_size()
                n += 1
            step += 1
    return {"tensors": n, "steps": step, "bytes_per_run": total}


def phase(name: str, workdir: Path, size_gb: float) -> dict[str, float]:
    """Run one phase in this process; return its wall time (after importing torch, which both phases pay alike
    and which ``bridge.align`` pays once) and the import time."""
    t_import = time.perf_counter()
    import torch  # noqa: F401

    t0 = time.perf_counter()
    imported = {"torch_import_seconds": t0 - t_import}
    if name == "build":
        return build(workdir, size_gb)
    if name == "compare":
        from bridge.compare import compare_runs
        from bridge.compare.report_json import write_json

        res = compare_runs(workdir / "a", workdir / "b", device="cpu")
        assert not res.passed, "the benchmark runs are built to diverge once"
        write_json(res, workdir / "compare.json")
    elif name == "report":
        from bridge.report.__main__ import main as report_main

        code = report_main(
            [str(workdir / "compare.json"), "-o", str(workdir / "report.html"), "--json", str(workdir / "report.json")]
        )
        assert code == 1
        doc = json.loads((workdir / "report.json").read_text())
        assert doc["first_divergent_tensor"] is not None, "the report pictured no tensor"
    else:
        raise SystemExit(f"unknown phase {name}")
    return {"seconds": time.perf_counter() - t0, **imported}


def run_phase(name: str, workdir: Path, size_gb: float) -> dict[str, float]:
    """Run a phase in a fresh subprocess; return seconds and peak RSS (MiB)."""
    cmd = [sys.executable, __file__, "--phase", name, "--workdir", str(workdir), "--size-gb", str(size_gb)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"phase {name} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    """CLI entry point."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size-gb", type=float, default=0.5, help="size of each run (default 0.5; the target is for 2)")
    p.add_argument("--workdir", help="where to build the runs (default: a temp dir, removed after)")
    p.add_argument("--phase", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.phase:
        res = phase(args.phase, Path(args.workdir), args.size_gb)
        res["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(res))
        return
    tmp = None
    if args.workdir:
        workdir = Path(args.workdir)
        workdir.mkdir(parents=True, exist_ok=True)
    else:
        workdir = Path(tmp := tempfile.mkdtemp(prefix="bench_report_"))
    try:
        t0 = time.perf_counter()
        info = run_phase("build", workdir, args.size_gb)
        print(
            f"built {info['tensors']} tensors over {info['steps']} steps, "
            f"{info['bytes_per_run'] / 2**30:.2f} GiB per run in {time.perf_counter() - t0:.1f}s ({workdir})"
        )
        results = {name: run_phase(name, workdir, args.size_gb) for name in ("compare", "report")}
        for name, r in results.items():
            print(
                f"{name:8s} {r['seconds']:8.2f} s   peak RSS {r['peak_rss_mib']:8.0f} MiB   "
                f"(+ {r['torch_import_seconds']:.2f} s importing torch)"
            )
        ratio = results["report"]["seconds"] / results["compare"]["seconds"]
        whole = (results["report"]["seconds"] + results["report"]["torch_import_seconds"]) / (
            results["compare"]["seconds"] + results["compare"]["torch_import_seconds"]
        )
        print(
            f"report / compare = {ratio:.3f}  (target <= {TARGET}: {'met' if ratio <= TARGET else 'NOT met'}); "
            f"page {(workdir / 'report.html').stat().st_size / 1024:.0f} KiB"
        )
        print(f"as separate processes, each importing torch: report / compare = {whole:.3f}")
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
