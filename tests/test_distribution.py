"""The wheel and the sdist that ``python -m build`` makes (the same PEP 517 backend calls, without isolation):
the three packages with their presets and category data are in; tests, patches and the stack scripts are not;
the ``d2mb`` console script and the dependencies are declared as docs/INSTALL.md says."""

from __future__ import annotations

import email
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
IGNORED = shutil.ignore_patterns(
    ".git", ".venv*", "__pycache__", "*.egg-info", "build", "dist", ".pytest_cache", ".hypothesis", "demo_out"
)
BUILD = """
import sys
from setuptools import build_meta
out = sys.argv[1]
print(build_meta.build_sdist(out))
print(build_meta.build_wheel(out))
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], list[str], str, str]:
    """(sdist member paths without the top folder, wheel member paths, wheel METADATA, entry_points.txt)."""
    source = tmp_path_factory.mktemp("src") / "d2-mmdet-bridge"
    shutil.copytree(REPO, source, ignore=IGNORED)
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run(
        [sys.executable, "-c", BUILD, str(out)], cwd=source, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (sdist,) = out.glob("d2_mmdet_bridge-*.tar.gz")
    (wheel,) = out.glob("d2_mmdet_bridge-*-py3-none-any.whl")
    with tarfile.open(sdist) as tar:
        sdist_names = [name.split("/", 1)[1] for name in tar.getnames() if "/" in name]
    with zipfile.ZipFile(wheel) as whl:
        wheel_names = whl.namelist()
        info = next(n for n in wheel_names if n.endswith(".dist-info/METADATA"))
        entry_points = next(n for n in wheel_names if n.endswith(".dist-info/entry_points.txt"))
        return sdist_names, wheel_names, whl.read(info).decode(), whl.read(entry_points).decode()


def _data_files() -> list[str]:
    return sorted(
        str(p.relative_to(REPO))
        for pattern in ("bridge/presets/*.yaml", "bridge/coco/data/*.json")
        for p in REPO.glob(pattern)
    )


def _modules() -> list[str]:
    return sorted(
        str(p.relative_to(REPO))
        for package in ("bridge", "d2_side", "mmdet_side")
        for p in (REPO / package).rglob("*.py")
    )


def test_wheel_holds_the_packages_presets_and_category_data(built) -> None:
    _, wheel, _, _ = built
    assert len(_data_files()) >= 7 and set(_data_files()) <= set(wheel)
    assert set(_modules()) <= set(wheel)
    packages = {name.split("/")[0] for name in wheel if not name.split("/")[0].endswith(".dist-info")}
    assert packages == {"bridge", "d2_side", "mmdet_side"}


def test_sdist_holds_the_packages_and_leaves_tests_and_patches_out(built) -> None:
    sdist, _, _, _ = built
    assert set(_data_files()) <= set(sdist) and set(_modules()) <= set(sdist)
    assert {"pyproject.toml", "README.md", "PKG-INFO"} <= set(sdist)
    for folder in ("tests/", "patches/", "scripts/", "requirements/", "benchmarks/", ".venv"):
        assert not [name for name in sdist if name.startswith(folder)], folder
    assert not [name for name in sdist if name.endswith((".pyc", ".pth", ".safetensors", ".whl"))]


def test_wheel_metadata_core_dependencies_have_lower_bounds_only(built) -> None:
    from packaging.requirements import Requirement

    _, _, metadata, entry_points = built
    requires = [Requirement(r) for r in email.message_from_string(metadata).get_all("Requires-Dist")]
    core = {r.name.lower(): r for r in requires if r.marker is None}
    assert set(core) == {"torch", "numpy", "safetensors", "orjson", "rich", "pyyaml", "pillow"}
    for requirement in core.values():
        assert {spec.operator for spec in requirement.specifier} == {">="}, requirement
    extras = {str(r.marker) for r in requires if r.marker is not None}
    assert {'extra == "d2"', 'extra == "mmdet"', 'extra == "dev"'} == extras
    assert not [r for r in requires if r.name.lower() in ("detectron2", "mmcv")]
    assert "d2mb = bridge.console:main" in entry_points
