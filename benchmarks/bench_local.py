"""Benchmark recording module inputs (issue 17): the recorded pass with ``inputs=`` against the plain recorded pass.

Builds detectron2's PanopticFPN R50 (random weights, CPU), picks the first ``--modules`` of its leaf modules
(convolutions, norms, linear layers; by default 100), and times in the same process, alternating, ``--repeats``
inference passes of each of:

* ``plain``   ``record_inference`` with ``activations=`` those modules (the plain recorded pass);
* ``inputs``  the same with ``inputs=`` those modules too (kind ``input`` beside each activation).

Prints the median seconds of each and their ratio (target: at most 2x). Usage:
``python benchmarks/bench_local.py [--modules 100] [--size 320] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the figures."""
    import torch

    from bridge import Recorder
    from d2_side.hooks import record_inference

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modules", type=int, default=100)
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    spec = importlib.util.spec_from_file_location("panoptic_fpn_demo", REPO / "examples" / "panoptic_fpn_demo.py")
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    _cfg, model = demo.d2_model(0, args.size)
    names = [name for name, module in model.named_modules() if name and not list(module.children())][: args.modules]
    torch.manual_seed(1)
    height, width = args.size, args.size * 5 // 4
    batch = [{"image": (torch.rand(3, height, width) * 255).round(), "height": height, "width": width}]
    times: dict[str, list[float]] = {"plain": [], "inputs": []}
    with tempfile.TemporaryDirectory(prefix="bench_local_") as tmp:
        for repeat in range(args.repeats):
            for label in ("plain", "inputs"):
                with Recorder(Path(tmp) / f"{label}{repeat}", framework="detectron2") as recorder:
                    start = time.perf_counter()
                    record_inference(
                        model, [batch], recorder, activations=names, inputs=names if label == "inputs" else ()
                    )
                    times[label].append(time.perf_counter() - start)
    plain, inputs = statistics.median(times["plain"]), statistics.median(times["inputs"])
    print(f"modules recorded: {len(names)}; image {height}x{width}; repeats {args.repeats}")
    print(f"plain recorded pass (activations):   {plain:.3f} s")
    print(f"with inputs (activations + inputs):  {inputs:.3f} s")
    print(f"ratio inputs/plain: {inputs / plain:.2f}x (target <= 2x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
