"""mmdet 3.x config pieces that point the dataloaders and evaluators at a one-sample COCO split.

``onesample_overrides`` returns the dict to merge into an mmdet config (Python use);
``write_config`` writes a config file that inherits an mmdet config and carries those overrides,
ready for mmdet's own ``tools/train.py`` / ``tools/test.py``
(``python -m mmdet_side.config --base mmdet::panoptic_fpn/panoptic-fpn_r50_fpn_1x_coco.py -o cfg.py``: from the
command line also a short schedule, ``--iters`` default 10, logged every iteration, random init unless
``--pretrained``, and ``BridgeSaveWeightsHook`` writing ``<work_dir>/weights_only.pth`` for ``tools/test.py``);
``--coco91`` also switches it to labels = original COCO category ids (``mmdet_side.coco91_config``).
"""

from __future__ import annotations

import argparse
import os
import pprint
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bridge.atomic import atomic_open, remove_dead_temps
from bridge.cli import check_outputs, guarded_main, run_reporting_errors
from bridge.coco.onesample import OneSampleConfig, OneSampleSplit, parse_image_ids, prepare_split
from bridge.errors import BridgeError

#: ``panoptic``: COCO-panoptic with CocoPanopticMetric; ``instances``: COCO instances with CocoMetric on bbox and
#: segm (Mask R-CNN, Mask2Former instance); ``detection``: COCO instances with CocoMetric on bbox only
#: (box-only models: Faster R-CNN, DETR, DINO).
TASKS = ("panoptic", "instances", "detection")
_MISSING = object()


def _dataset(split: OneSampleSplit, task: str) -> dict:
    if task == "panoptic":
        return dict(
            data_root="",
            ann_file=str(split.panoptic_json),
            data_prefix=dict(img=f"{split.image_root}/", seg=f"{split.panoptic_root}/"),
        )
    return dict(data_root="", ann_file=str(split.instances_json), data_prefix=dict(img=f"{split.image_root}/"))


def _evaluator(split: OneSampleSplit, task: str) -> dict:
    """The subset's evaluator; ``_delete_`` makes it replace the base config's, a dict or a list (Mask2Former's
    panoptic configs evaluate with ``[CocoPanopticMetric, CocoMetric]``, which a dict cannot be merged into)."""
    if task == "panoptic":
        return dict(
            _delete_=True,
            type="CocoPanopticMetric",
            ann_file=str(split.panoptic_json),
            seg_prefix=f"{split.panoptic_root}/",
            nproc=1,
        )
    metric = ["bbox", "segm"] if task == "instances" else ["bbox"]
    return dict(_delete_=True, type="CocoMetric", ann_file=str(split.instances_json), metric=metric)


def onesample_overrides(
    config: OneSampleConfig | None = None, *, task: str = "panoptic", batch_size: int = 1, num_workers: int = 0
) -> dict:
    """Config overrides (train/val/test dataloaders and evaluators) for the one-sample splits.

    ``config`` defaults to the ``BRIDGE_*`` environment (see ``bridge.coco.onesample``); the splits are
    prepared (cut and cached) on the way, so the returned paths exist.
    """
    if task not in TASKS:
        raise BridgeError(f"unknown task {task!r}; expected one of {TASKS}")
    config = OneSampleConfig.from_env() if config is None else config
    train, val = prepare_split(config, "train"), prepare_split(config, "val")
    loader = dict(batch_size=batch_size, num_workers=num_workers, persistent_workers=False)
    eval_loader = dict(batch_size=1, num_workers=num_workers, persistent_workers=False)
    return dict(
        train_dataloader=dict(loader, dataset=_dataset(train, task)),
        val_dataloader=dict(eval_loader, dataset=_dataset(val, task)),
        test_dataloader=dict(eval_loader, dataset=_dataset(val, task)),
        val_evaluator=_evaluator(val, task),
        test_evaluator=_evaluator(val, task),
    )


def short_schedule_overrides(max_iters: int, *, pretrained: bool = False) -> dict:
    """Config overrides for a short one-sample run: ``max_iters`` iterations (IterBasedTrainLoop, constant
    learning rate, validation and a checkpoint at the end), a log line every iteration, and, unless
    ``pretrained``, no download (the backbone's ``init_cfg`` and ``load_from`` set to None: random init)."""
    if max_iters < 1:
        raise BridgeError(f"--iters must be at least 1, got {max_iters}")
    overrides: dict[str, Any] = dict(
        train_cfg=dict(_delete_=True, type="IterBasedTrainLoop", max_iters=max_iters, val_interval=max_iters),
        param_scheduler=[dict(type="ConstantLR", factor=1.0, by_epoch=False, begin=0, end=max_iters)],
        default_hooks=dict(logger=dict(interval=1), checkpoint=dict(by_epoch=False, interval=max_iters)),
        log_processor=dict(by_epoch=False),
    )
    if not pretrained:
        overrides.update(model=dict(backbone=dict(init_cfg=None)), load_from=None)
    return overrides


def config_text(base: str, overrides: dict) -> str:
    """The text of an mmengine config file inheriting ``base`` with ``overrides`` (one assignment each)."""
    lines = [
        "# Written by mmdet_side.config: the one-sample subset on top of an mmdet config.",
        f"_base_ = {base!r}",
        "",
    ]
    lines += [f"{key} = {pprint.pformat(value, width=100, sort_dicts=False)}" for key, value in overrides.items()]
    return "\n".join(lines) + "\n"


def write_config(
    base: str,
    out: str | Path,
    config: OneSampleConfig | None = None,
    *,
    task: str = "panoptic",
    hooks: Sequence[dict] = (),
    coco91: bool = False,
    max_iters: int | None = None,
    pretrained: bool = False,
) -> Path:
    """Write (atomically) a config inheriting ``base`` that trains/evaluates on the one-sample splits, with
    ``hooks`` (bridge hook dicts) added to the base's ``custom_hooks`` and ``mmdet_side`` to its imports.

    ``coco91=True`` also writes what ``mmdet_side.coco91_config.apply_coco91`` changes (labels = original COCO
    category ids: dataset and metric types, the heads' class counts, ``LabelSpaceCheckHook``).
    ``max_iters`` also writes :func:`short_schedule_overrides` (None keeps the base config's schedule)."""
    out = Path(out)
    overrides = onesample_overrides(config, task=task)
    if max_iters is not None:
        overrides.update(short_schedule_overrides(max_iters, pretrained=pretrained))
    if hooks:
        current = _load_config_text(config_text(base, overrides), out.parent)
        overrides.update(bridge_hook_overrides(current, list(hooks)))
    if coco91:
        from mmdet_side.coco91_config import apply_coco91

        current = _load_config_text(config_text(base, overrides), out.parent)
        before = current.to_dict()
        apply_coco91(current)
        _merge_into(overrides, _changed(before, current.to_dict()))
    with atomic_open(out, "w") as handle:
        handle.write(config_text(base, overrides))
    return out


def _changed(before: Any, after: Any) -> dict:
    """The entries of dict ``after`` that differ from ``before``: dicts compared key by key, other values whole
    (a changed list is written in full, which is how an inheriting config replaces it)."""
    diff = {}
    for key, value in after.items():
        old = before.get(key, _MISSING)
        if isinstance(value, dict) and isinstance(old, dict):
            inner = _changed(old, value)
            if inner:
                diff[key] = inner
        elif value != old:
            diff[key] = value
    return diff


def _merge_into(target: dict, changes: dict) -> None:
    """Merge the nested ``changes`` into ``target`` in place (dicts key by key, other values replaced)."""
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge_into(target[key], value)
        else:
            target[key] = value


#: Name prefix of the probe file written beside the output config while it is loaded (followed by the pid:
#: a later run removes the probes of killed runs).
PROBE_PREFIX = ".bridge_config_probe."


def _load_config_text(text: str, directory: Path) -> "Config":  # noqa: F821
    """Load config ``text`` as if written in ``directory`` (its bases resolve from there), without imports.
    The probe file is hidden (:data:`PROBE_PREFIX`) and removed; one left by a killed run goes next time."""
    from mmengine.config import Config

    prefix = f"{PROBE_PREFIX}{os.getpid()}."
    remove_dead_temps(directory, PROBE_PREFIX, ".py")
    with tempfile.NamedTemporaryFile("w", prefix=prefix, suffix=".py", dir=directory, encoding="utf-8") as probe:
        probe.write(text)
        probe.flush()
        try:
            return Config.fromfile(probe.name, import_custom_modules=False)
        except Exception as exc:  # mmengine raises many types for a bad base: name the base and the cause
            cause = str(exc).replace(probe.name, "<the config being written>")
            raise BridgeError(f"cannot load the base config to extend it ({type(exc).__name__}: {cause})") from None


def bridge_hook_overrides(current: Any, hooks: list[dict]) -> dict:
    """``custom_imports`` / ``custom_hooks`` values adding ``mmdet_side`` and ``hooks`` to what the loaded config
    ``current`` already has: a plain assignment would replace the base's lists, dropping e.g.
    ``projects.MaskDINO.maskdino`` from a project config's imports."""
    imports = list((current.get("custom_imports") or {}).get("imports", []))
    imports += [] if "mmdet_side" in imports else ["mmdet_side"]
    existing = [dict(hook) for hook in current.get("custom_hooks") or []]
    return {"custom_imports": dict(imports=imports, allow_failed_imports=False), "custom_hooks": existing + hooks}


def record_hook(args: argparse.Namespace) -> dict | None:
    """The ``BridgeRecordHook`` the CLI options ask for, or None.

    ``--record-dir`` records training; when only evaluation is replayed (``--replay-eval-dir`` without
    ``--replay-dir``) it records evaluation instead, since ``tools/test.py`` is then the run to record.
    ``--record-eval-dir`` names the evaluation run explicitly."""
    run_dir, eval_run_dir = args.record_dir, args.record_eval_dir
    if run_dir and not eval_run_dir and args.replay_eval_dir and not args.replay_dir:
        run_dir, eval_run_dir = None, run_dir
    if not run_dir and not eval_run_dir:
        return None
    hook: dict = dict(type="BridgeRecordHook")
    hook |= {"run_dir": run_dir} if run_dir else {}
    hook |= {"eval_run_dir": eval_run_dir} if eval_run_dir else {}
    activations = [glob for glob in (args.activations or "").split(",") if glob]
    hook |= {"activations": activations} if activations else {}
    return hook


def _requested_hooks(args: argparse.Namespace) -> list[dict]:
    """The bridge hooks the CLI options ask for."""
    hooks = []
    if args.replay_dir or args.replay_eval_dir:
        replay = dict(type="BridgeReplayHook", input_format=args.input_format)
        replay |= {"run_dir": args.replay_dir} if args.replay_dir else {}
        replay |= {"eval_run_dir": args.replay_eval_dir} if args.replay_eval_dir else {}
        hooks.append(replay)
    record = record_hook(args)
    if record is not None:
        hooks.append(record)
    return hooks + [dict(type="BridgeSaveWeightsHook")]


def _describe_record_hook(hook: dict | None) -> str | None:
    """A line saying what the record hook will record (a warning when it records no activations), or None."""
    if hook is None:
        return None
    where = [f"training into {hook['run_dir']}"] if "run_dir" in hook else []
    where += [f"evaluation (val/test) into {hook['eval_run_dir']}"] if "eval_run_dir" in hook else []
    line = f"BridgeRecordHook records {' and '.join(where)}"
    if "activations" not in hook:
        return (
            f"warning: {line} with no activations (batches, losses and predictions only); "
            "name modules with --activations, e.g. 'backbone.layer?' (docs/OUTPUTS.md)"
        )
    return f"{line}, activations {', '.join(hook['activations'])}"


@guarded_main
def main(argv: list[str] | None = None) -> int:
    """CLI: write a one-sample config for mmdet's tools; exit 2 with a one-line error on bad input."""
    parser = argparse.ArgumentParser(prog="python -m mmdet_side.config", description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="config to inherit, e.g. mmdet::panoptic_fpn/...py")
    parser.add_argument("-o", "--out", required=True, help="config file to write")
    parser.add_argument("--task", choices=TASKS, default="panoptic")
    parser.add_argument("--coco-root", help="COCO root (default: $BRIDGE_COCO_ROOT)")
    parser.add_argument("--train-ids", default="", help="comma-separated ids (default: first annotated image)")
    parser.add_argument("--val-ids", default="", help="comma-separated ids (default: first annotated image)")
    parser.add_argument("--cache-dir", help="where subsets go (default: $BRIDGE_CACHE_DIR or ~/.cache)")
    parser.add_argument(
        "--record-dir",
        help="also switch on the record hook, writing training into this run dir "
        "(evaluation, when only --replay-eval-dir is given)",
    )
    parser.add_argument("--record-eval-dir", help="record val/test batches, activations and predictions here")
    parser.add_argument(
        "--activations",
        help="comma-separated module globs the record hook records, e.g. 'backbone.layer?,neck.fpn_convs.*.conv'",
    )
    parser.add_argument("--replay-dir", help="replay the training batches detectron2 recorded in this run")
    parser.add_argument("--replay-eval-dir", help="replay detectron2's recorded inference batches in val/test")
    parser.add_argument(
        "--input-format",
        choices=("BGR", "RGB"),
        default="BGR",
        help="detectron2's INPUT.FORMAT of the replayed batches (RGB for Mask DINO / Mask2Former)",
    )
    parser.add_argument(
        "--coco91",
        action="store_true",
        help="labels = original COCO category ids: CocoDataset91 / CocoPanopticDataset91, their "
        "metrics, the heads' class counts and LabelSpaceCheckHook, set together",
    )
    parser.add_argument(
        "--iters",
        type=int,
        default=10,
        help="train this many iterations (IterBasedTrainLoop, log every iteration; default 10)",
    )
    parser.add_argument(
        "--pretrained",
        action="store_true",
        help="keep the base config's pretrained backbone / load_from (downloads); default: random init",
    )
    args = parser.parse_args(argv)
    check_outputs({"--base": args.base if os.path.exists(args.base) else None}, {"-o": args.out})

    def write() -> Path:
        config = None
        if args.coco_root:
            config = OneSampleConfig.create(
                args.coco_root,
                {
                    "train": parse_image_ids(args.train_ids, "--train-ids"),
                    "val": parse_image_ids(args.val_ids, "--val-ids"),
                },
                args.cache_dir,
            )
        out = write_config(
            args.base,
            args.out,
            config,
            task=args.task,
            hooks=_requested_hooks(args),
            coco91=args.coco91,
            max_iters=args.iters,
            pretrained=args.pretrained,
        )
        note = _describe_record_hook(record_hook(args))
        if note:
            print(note, file=sys.stderr if note.startswith("warning") else sys.stdout)
        return out

    return run_reporting_errors(write)


if __name__ == "__main__":
    sys.exit(main())
