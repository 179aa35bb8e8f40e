"""bridge/ works where neither framework can be imported: every module imports, and a record ->
open_run -> compare round runs, in a subprocess whose import system refuses detectron2 and mmdet."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import orjson

SCRIPT = textwrap.dedent('''
    import importlib, json, pkgutil, sys

    FRAMEWORKS = ("detectron2", "mmdet", "mmengine", "mmcv")

    class RefuseFrameworks:
        """A meta-path finder that makes every framework import fail, installed or not."""

        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in FRAMEWORKS:
                raise ImportError(f"{name} is blocked: bridge must work without the frameworks")
            return None

    sys.meta_path.insert(0, RefuseFrameworks())
    for framework in FRAMEWORKS:
        try:
            importlib.import_module(framework)
        except ImportError:
            pass
        else:
            raise SystemExit(f"the blocker let {framework} through")

    import bridge

    def fail(name):
        raise ImportError(f"cannot import {name}")

    modules = sorted(m.name for m in pkgutil.walk_packages(bridge.__path__, "bridge.", onerror=fail))
    for name in modules:
        importlib.import_module(name)

    import torch
    from bridge import Recorder, open_run
    from bridge.compare import compare_runs
    from bridge.compare.__main__ import main as compare_main

    run_a, run_b, report = sys.argv[1:4]
    for run_dir, shift in ((run_a, 0.0), (run_b, 1.0)):
        with Recorder(run_dir, framework="standalone") as rec:
            for step in range(2):
                rec.record("batch", [{"image": torch.arange(6.0).reshape(2, 3), "id": step}], step=step, kind="batch")
                rec.record("logits", torch.full((2, 2), float(step)) + (shift if step == 1 else 0.0), step=step)
    run = open_run(run_a)
    assert run.state() == "closed" and run.get("batch", step=1, kind="batch")[0]["id"] == 1
    result = compare_runs(run_a, run_b, device="cpu")
    code = compare_main([run_a, run_b, "--device", "cpu", "--quiet", "--json", report])
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in FRAMEWORKS)
    print(json.dumps({"modules": len(modules), "passed": result.passed, "failed": result.n_failed,
           "first": result.first_divergence.key, "cli_exit": code, "frameworks_loaded": loaded}))
''')


def test_bridge_imports_and_runs_with_the_frameworks_blocked(tmp_path: Path) -> None:
    report = tmp_path / "compare.json"
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "a"), str(tmp_path / "b"), str(report)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    summary = orjson.loads(result.stdout.strip().splitlines()[-1])
    assert summary["modules"] >= 20  # runs, tree, journal, compare.*, convert.*, subset, meta, panoptic, ...
    assert summary["frameworks_loaded"] == []
    assert (summary["passed"], summary["failed"], summary["first"], summary["cli_exit"]) == (False, 1, "logits", 1)
    report_json = orjson.loads(report.read_bytes())
    assert report_json["passed"] is False and report_json["first_divergence"]["key"] == "logits"
