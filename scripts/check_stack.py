"""Print the versions of the built stack and fail loudly if a piece is missing or wrong."""

from __future__ import annotations

import importlib
import sys

EXPECTED = {
    "torch": "2.14.1",
    "torchvision": "0.29.1",
    "mmengine": "0.10.7",
    "mmcv": "2.1.0",
    "mmdet": "3.3.0",
    "detectron2": "0.6",
}


def main() -> int:
    """Import every framework of the stack and check its version; return a process exit code."""
    problems = []
    for name, version in EXPECTED.items():
        try:
            module = importlib.import_module(name)
        except Exception as error:  # report every broken piece, not just the first
            problems.append(f"{name}: cannot import ({error})")
            continue
        found = getattr(module, "__version__", "?")
        print(f"{name:12s} {found}")
        if not found.startswith(version):
            problems.append(f"{name}: expected {version}, found {found}")
    for module_name in (
        "mmcv._ext",
        "detectron2.data",
        "detectron2.projects.deeplab",
        "mmdet.datasets",
        "panopticapi.evaluation",
        "pycocotools.coco",
        "pkg_resources",
        "tensorboard",
    ):
        try:
            importlib.import_module(module_name)
        except Exception as error:
            problems.append(f"{module_name}: cannot import ({error})")
    for problem in problems:
        print(f"stack problem: {problem}", file=sys.stderr)
    print("stack OK" if not problems else "stack BROKEN")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
