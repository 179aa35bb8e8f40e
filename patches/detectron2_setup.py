"""setup.py for the pure-Python detectron2 0.6 build (replaces the sdist's, which compiles C++ ops).

Installs the same packages as detectron2's own setup.py, including the `detectron2.projects.*`
packages it maps from the sdist's `projects/` folder, and the model-zoo configs; no extension.
Dependencies are installed from requirements/runtime.txt (detectron2's declared install_requires).
"""
from pathlib import Path

from setuptools import find_packages, setup

PROJECTS = {
    "detectron2.projects.point_rend": "projects/PointRend/point_rend",
    "detectron2.projects.deeplab": "projects/DeepLab/deeplab",
    "detectron2.projects.panoptic_deeplab": "projects/Panoptic-DeepLab/panoptic_deeplab",
}
ZOO = Path("detectron2/model_zoo")
configs = [str(p.relative_to(ZOO)) for p in (ZOO / "configs").rglob("*") if p.suffix in {".yaml", ".py"}]

setup(
    name="detectron2",
    version="0.6",
    description="detectron2 0.6, pure-Python build (no compiled _C ops), patched for numpy 2",
    packages=find_packages(include=("detectron2", "detectron2.*")) + list(PROJECTS),
    package_dir=PROJECTS,
    package_data={"detectron2.model_zoo": configs, "detectron2": ["BRIDGE_BUILD"]},
    python_requires=">=3.6",
)
