"""Run mmdet's real ``CocoPanopticMetric`` on canonical panoptic predictions.

Predictions are :class:`bridge.panoptic.CanonicalPanoptic` keyed by image id; each is encoded with
:func:`mmdet_side.panoptic.mmdet_from_canonical` (labels = index in ``CocoPanopticDataset.METAINFO``
classes, matched to the annotation file's categories by name, as the metric itself does).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from bridge.errors import BridgeError
from bridge.panoptic import CanonicalPanoptic
from bridge.panoptic.parity import METRICS, MMDET_PREFIX
from mmdet_side.panoptic import mmdet_from_canonical


def normalise_mmdet_keys(results: Mapping[str, Any]) -> dict[str, float]:
    """``{"coco_panoptic/PQ": x, ...}`` → ``{"PQ": x, ...}`` (the detectron2 names), floats only."""
    out: dict[str, float] = {}
    for key in METRICS:
        for candidate in (MMDET_PREFIX + key, key):
            if candidate in results:
                out[key] = float(results[candidate])
                break
        else:
            raise BridgeError(f"mmdet panoptic results lack {key!r}: got {sorted(results)}")
    return out


def evaluate_mmdet(
    evaluator_cfg: Mapping[str, Any], predictions: Mapping[int, CanonicalPanoptic], image_paths: Mapping[int, str]
) -> dict[str, float]:
    """PQ/SQ/RQ (all, ``_th``, ``_st``) from mmdet's ``CocoPanopticMetric``, keys as detectron2 names them.

    ``evaluator_cfg`` is a ``val_evaluator`` dict (``mmdet_side.config.onesample_overrides``; ``type`` is
    ignored) holding ``ann_file`` and ``seg_prefix``; ``image_paths`` gives each image's path (the metric
    derives the PNG names from it). ``dataset_meta`` is ``CocoPanopticDataset.METAINFO``.
    """
    from mmdet.datasets import CocoPanopticDataset
    from mmdet.evaluation import CocoPanopticMetric

    cfg = dict(evaluator_cfg)
    cfg.pop("_delete_", None)  # the config-merge flag of onesample_overrides, not a metric argument
    kind = cfg.pop("type", "CocoPanopticMetric")
    if kind not in ("CocoPanopticMetric", CocoPanopticMetric):
        raise BridgeError(f"evaluator type {kind!r} is not CocoPanopticMetric")
    if "ann_file" not in cfg:
        raise BridgeError("evaluator_cfg needs ann_file (the panoptic annotation JSON)")
    with open(cfg["ann_file"], encoding="utf-8") as handle:
        categories = json.load(handle)["categories"]
    missing = sorted({int(k) for k in predictions} - {int(k) for k in image_paths})
    if missing:
        raise BridgeError(f"no image path for image ids {missing[:5]}")
    metric = CocoPanopticMetric(**cfg)
    metric.dataset_meta = dict(CocoPanopticDataset.METAINFO)
    classes = list(metric.dataset_meta["classes"])
    for image_id, canonical in predictions.items():
        encoded = mmdet_from_canonical(canonical, classes, categories)
        sample = {
            "img_id": int(image_id),
            "img_path": str(image_paths[int(image_id)]),
            "ori_shape": canonical.shape,
            "pred_panoptic_seg": {"sem_seg": encoded},
        }
        metric.process({}, [sample])
    return normalise_mmdet_keys(metric.evaluate(size=len(predictions)))


__all__ = ["evaluate_mmdet", "normalise_mmdet_keys"]
