"""The real-data checks need ``../shared`` (``make test`` passes it as BRIDGE_SHARED when it exists beside the
clone; CI always has it). Without it those checks are not collected, so this test stands for them: it fails
with the list of what was not run (docs/INSTALL.md, "Tests and ../shared"): a missing check is a failure,
never a skip."""

from __future__ import annotations

import pytest

from tests.conftest import SHARED_DATA, SHARED_MANIFESTS

#: What is not run without ../shared (the modules read SHARED_DATA / SHARED_MANIFESTS from tests/conftest.py).
NEEDS_SHARED = {
    "tests/test_convert_presets.py": "maskdino-d2-to-mmdet preset against the real Mask DINO key manifests",
    "tests/test_onesample_datasets.py": "registration and both frameworks' evaluators on the real COCO sample",
    "tests/test_subset.py": "bridge.subset on the real COCO instances and panoptic files",
    "tests/test_convert.py": "the coco91 label slots against the real DETR slot file",
}


def test_shared_reference_data_is_present() -> None:
    missing = "\n".join(f"  {path}: {what}" for path, what in NEEDS_SHARED.items())
    if SHARED_DATA and SHARED_MANIFESTS:
        return
    message = (
        f"BRIDGE_SHARED is unset (no ../shared beside the clone), so these real-data checks were not run:\n{missing}"
    )
    pytest.fail(
        message + "\nPut the reference data at ../shared (or set BRIDGE_SHARED=/path/to/shared).", pytrace=False
    )


def test_the_list_names_every_module_that_reads_shared() -> None:
    from pathlib import Path

    tests = Path(__file__).resolve().parent
    readers = {
        f"tests/{path.name}"
        for path in tests.glob("test_*.py")
        if path.name != Path(__file__).name
        and ("SHARED_DATA" in path.read_text() or "SHARED_MANIFESTS" in path.read_text())
    }
    assert readers == set(NEEDS_SHARED)
