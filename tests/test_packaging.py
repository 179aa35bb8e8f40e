"""pyproject.toml declares what bridge/ imports, and the pins agree with requirements/constraints.txt."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FRAMEWORKS = {"detectron2", "mmdet", "mmengine", "mmcv"}


def _project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def _requirement_name(requirement: str) -> str:
    return re.split(r"[<>=!~ ;\[]", requirement, maxsplit=1)[0].lower()


def _constraints() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements" / "constraints.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.strip().lower()] = version.strip()
    return pins


def _third_party_imports(package: Path) -> set[str]:
    """Top-level names of every module that a file of ``package`` imports, outside the stdlib and itself."""
    names: set[str] = set()
    for file in package.rglob("*.py"):
        for node in ast.walk(ast.parse(file.read_text(), str(file))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n != package.name}


def test_every_third_party_import_of_bridge_is_a_declared_dependency() -> None:
    imported = _third_party_imports(REPO / "bridge")
    assert not imported & FRAMEWORKS
    distributions = importlib.metadata.packages_distributions()
    declared = {_requirement_name(r) for r in _project()["dependencies"]}
    missing = {}
    for module in sorted(imported):
        dists = {d.lower() for d in distributions.get(module, [module])}
        if not dists & declared:
            missing[module] = sorted(dists)
    assert missing == {}, f"imported by bridge/ but not in [project].dependencies: {missing}"
    assert {"torch", "numpy", "safetensors", "orjson", "rich", "pyyaml", "pillow"} <= declared


def test_declared_versions_admit_the_pinned_stack() -> None:
    from packaging.requirements import Requirement

    pins = _constraints()
    project = _project()
    requirements = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    for text in requirements:
        requirement = Requirement(text)
        name = requirement.name.lower()
        if name in pins:
            assert requirement.specifier.contains(pins[name], prereleases=True), (text, pins[name])
    assert pins["pillow"].startswith("9.5.")
    for text in project["optional-dependencies"]["dev"]:
        requirement = Requirement(text)
        (spec,) = requirement.specifier
        assert spec.operator == "==" and spec.version == pins[requirement.name.lower()], text
