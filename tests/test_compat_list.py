"""The tests that scripts/compat_test.sh runs in .venv-compat (tests/compat_tests.txt) import no framework:
that environment has none, and a framework import there would fail the run instead of testing the bridge."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
FRAMEWORKS = {"detectron2", "mmdet", "mmengine", "mmcv", "d2_side", "mmdet_side", "panopticapi"}


def _listed() -> list[Path]:
    lines = (TESTS / "compat_tests.txt").read_text().splitlines()
    return [TESTS / line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _imports(path: Path, *, module_level_only: bool = False) -> set[str]:
    """Modules ``path`` imports (anywhere, or only in its top-level statements)."""
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    for node in tree.body if module_level_only else ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_listed_tests_exist_and_import_no_framework() -> None:
    listed = _listed()
    assert "test_bridge_standalone.py" in {path.name for path in listed}
    for path in [*listed, TESTS / "conftest.py"]:
        assert path.is_file(), path
        imported = _imports(path, module_level_only=path.name == "conftest.py")  # its helpers import lazily
        assert not {name.split(".")[0] for name in imported} & FRAMEWORKS, (path.name, sorted(imported))
        for module in {name for name in imported if name.startswith("tests.")}:
            assert f"{module.split('.')[1]}.py" in {p.name for p in [*listed, TESTS / "conftest.py"]}, (path, module)
