"""Benchmark ``bridge.subset`` against the plain json.load -> filter -> json.dump approach.

Generates COCO-train-sized files (118k images, 860k polygon annotations; ``--scale`` shrinks them) and a
panoptic file, then times each cut in its own subprocess and reads that process's peak RSS.

    python benchmarks/bench_subset.py --scale 0.25 [--workdir DIR [--reuse]]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson

REPO = Path(__file__).resolve().parents[1]
_CHUNK = 20_000
_INFO = {"description": "bench", "version": "1.0", "year": 2017}
_LICENSES = [{"id": i, "name": f"license {i}", "url": f"http://example.org/{i}"} for i in range(1, 9)]


def _images(n: int) -> list[dict]:
    return [
        {
            "license": 1 + i % 8,
            "file_name": f"{100000 + i:012d}.jpg",
            "coco_url": f"http://images.cocodataset.org/train2017/{100000 + i:012d}.jpg",
            "height": 480,
            "width": 640,
            "date_captured": "2013-11-14 11:18:45",
            "flickr_url": f"http://farm4.staticflickr.com/{i}/x_z.jpg",
            "id": 100000 + i,
        }
        for i in range(n)
    ]


def _write(path: Path, head: dict, chunks, tail: dict) -> None:
    """Write {head..., "annotations": [chunks...], tail...} streaming the annotation chunks."""
    with open(path, "wb") as f:
        f.write(orjson.dumps(head)[:-1] + b',"annotations":[')
        for k, chunk in enumerate(chunks):
            f.write((b"," if k else b"") + orjson.dumps(chunk)[1:-1])
        f.write(b"]," + orjson.dumps(tail)[1:])


def write_instances(path: Path, n_images: int, n_anns: int, seed: int = 0) -> None:
    """A COCO-instances-like file: polygons of 48 coordinates, ~520 bytes per annotation."""
    rng = np.random.default_rng(seed)
    img_of = np.sort(rng.integers(0, n_images - n_images // 100, size=n_anns))  # last 1% of images empty

    def chunks():
        for s in range(0, n_anns, _CHUNK):
            e = min(s + _CHUNK, n_anns)
            polys = np.round(rng.uniform(0, 640, size=(e - s, 48)), 2).tolist()
            yield [
                {
                    "segmentation": [polys[k - s]],
                    "area": 1234.5,
                    "iscrowd": 0,
                    "image_id": 100000 + int(img_of[k]),
                    "bbox": [10.5, 20.25, 100.0, 200.0],
                    "category_id": 1 + k % 90,
                    "id": 900000 + k,
                }
                for k in range(s, e)
            ]

    _write(
        path,
        {"info": _INFO, "licenses": _LICENSES, "images": _images(n_images)},
        chunks(),
        {"categories": [{"supercategory": "x", "id": i, "name": f"c{i}"} for i in range(1, 91)]},
    )


def write_panoptic(path: Path, n_images: int, seed: int = 0) -> None:
    """A COCO-panoptic-like file: one annotation per image with ~11 segments (some images empty)."""
    rng = np.random.default_rng(seed)

    def chunks():
        for s in range(0, n_images, _CHUNK):
            out = []
            for i in range(s, min(s + _CHUNK, n_images)):
                n = 0 if i % 97 == 5 else int(rng.integers(3, 20))
                segs = [
                    {"id": int(v), "category_id": 1 + j, "iscrowd": 0, "bbox": [1, 2, 30, 40], "area": 1200}
                    for j, v in enumerate(rng.integers(1, 2**24, size=n))
                ]
                out.append({"segments_info": segs, "file_name": f"{100000 + i:012d}.png", "image_id": 100000 + i})
            yield out

    _write(
        path,
        {"info": _INFO, "licenses": _LICENSES, "images": _images(n_images)},
        chunks(),
        {
            "categories": [
                {"id": i, "name": f"c{i}", "isthing": int(i <= 90), "color": [1, 2, 3]} for i in range(1, 201)
            ]
        },
    )


_NAIVE = """
import json, sys
src, dst, image_id = sys.argv[1], sys.argv[2], int(sys.argv[3])
with open(src) as f:
    d = json.load(f)
d["images"] = [i for i in d["images"] if i["id"] == image_id]
d["annotations"] = [a for a in d["annotations"] if a["image_id"] == image_id]
with open(dst, "w") as f:
    json.dump(d, f)
"""

_MEASURE = """
import resource, runpy, sys, time
t = time.perf_counter()
mode = sys.argv.pop(1)
try:
    if mode == "naive":
        exec(compile(sys.argv.pop(1), "naive", "exec"))
    else:
        if mode == "core":  # skip bridge/__init__.py (it imports torch): the cost of the cut alone
            import types
            sys.modules["bridge"] = pkg = types.ModuleType("bridge")
            pkg.__path__ = ["bridge"]
        sys.argv[0] = "bridge.subset"
        from bridge.subset.__main__ import main
        rc = main(sys.argv[1:])
        assert rc == 0, rc
finally:
    # Peak RSS of this process: VmHWM where there is /proc (ru_maxrss also counts the parent's peak,
    # inherited at exec: after generating the files the bench process itself is some 300 MB).
    try:
        with open("/proc/self/status") as status:
            peak = int(next(ln for ln in status if ln.startswith("VmHWM:")).split()[1])
    except OSError:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    sys.stderr.write("MEASURE %f %d\\n" % (time.perf_counter() - t, peak))
"""


def measure(args: list[str]) -> tuple[float, float]:
    """Run ``args`` in a fresh interpreter; return (wall seconds incl. startup, peak RSS in MiB)."""
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _MEASURE, *args], cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr)
    line = [ln for ln in proc.stderr.splitlines() if ln.startswith("MEASURE")][-1]
    return wall, int(line.split()[2]) / 1024


def bench_file(path: Path, image_id: int, out_dir: Path) -> dict:
    """Cut one image from ``path`` both ways, check the outputs agree, return the figures."""
    naive_out = out_dir / f"naive_{path.name}"
    naive_t, naive_rss = measure(["naive", _NAIVE, str(path), str(naive_out), str(image_id)])
    ours_t, ours_rss = measure(["ours", str(path), "--one", str(image_id), "--out-dir", str(out_dir)])
    core_t, core_rss = measure(["core", str(path), "--one", str(image_id), "--out-dir", str(out_dir)])
    ours_out = out_dir / f"{path.stem}_onesample_{image_id}.json"
    same = json.loads(naive_out.read_bytes()) == json.loads(ours_out.read_bytes())
    size = path.stat().st_size / 2**20
    return {
        "file": path.name,
        "size_mib": size,
        "naive_s": naive_t,
        "ours_s": ours_t,
        "speedup": naive_t / ours_t,
        "core_s": core_t,
        "core_speedup": naive_t / core_t,
        "core_rss": core_rss,
        "naive_rss": naive_rss,
        "ours_rss": ours_rss,
        "rss_ratio": ours_rss / size,
        "same": same,
    }


def generate(inst: Path, pan: Path, n_img: int, n_ann: int, reuse: bool) -> None:
    """Write both input files, or keep them when ``reuse`` and a stamp says they were made with these sizes."""
    stamp = inst.parent / "bench_subset.stamp"
    wanted = f"{n_img} {n_ann}\n"
    if reuse and inst.exists() and pan.exists() and stamp.exists() and stamp.read_text() == wanted:
        print(f"reusing {inst} and {pan}")
        return
    t = time.perf_counter()
    stamp.unlink(missing_ok=True)
    write_instances(inst, n_img, n_ann)
    write_panoptic(pan, n_img)
    stamp.write_text(wanted)
    print(f"generated {n_img} images / {n_ann} annotations in {time.perf_counter() - t:.1f}s")


def main(argv: list[str] | None = None) -> int:
    """Generate the files, run both cuts, print the table; exit 1 if a target is missed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--reuse", action="store_true", help="keep the files already generated in --workdir")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        n_img, n_ann = max(100, int(118_287 * args.scale)), max(700, int(860_001 * args.scale))
        inst, pan = work / "instances_train2017.json", work / "panoptic_train2017.json"
        generate(inst, pan, n_img, n_ann, args.reuse and args.workdir is not None)
        target_id = 100000 + n_img // 2
        rows = [bench_file(inst, target_id, work), bench_file(pan, target_id, work)]
    print("ours = python -m bridge.subset (imports bridge/__init__, i.e. torch); core = same cut without it")
    print(
        f"{'file':28} {'MiB':>7} {'naive s':>8} {'ours s':>7} {'speedup':>8} {'core s':>7} {'core x':>7} "
        f"{'naive RSS':>10} {'ours RSS':>9} {'core RSS':>9} {'core/size':>9} same  targets(core >=8x, RSS<=2x)"
    )
    ok = True
    for r in rows:
        r["rss_ratio"] = r["core_rss"] / r["size_mib"]
        met = r["core_speedup"] >= 8 and r["rss_ratio"] <= 2 and r["same"]
        ok &= met
        print(
            f"{r['file']:28} {r['size_mib']:7.1f} {r['naive_s']:8.2f} {r['ours_s']:7.2f} {r['speedup']:7.1f}x "
            f"{r['core_s']:7.2f} {r['core_speedup']:6.1f}x "
            f"{r['naive_rss']:9.0f}M {r['ours_rss']:8.0f}M {r['core_rss']:8.0f}M {r['rss_ratio']:8.2f}x {str(r['same']):5} "
            f"{'met' if met else 'MISSED'}"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
