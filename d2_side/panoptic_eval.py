"""Run detectron2's real ``COCOPanopticEvaluator`` on canonical panoptic predictions.

Predictions are :class:`bridge.panoptic.CanonicalPanoptic` keyed by image id; each is converted with
:func:`d2_side.panoptic.d2_from_canonical` using the dataset's metadata (dataset → contiguous ids) and fed
to the evaluator as ``output["panoptic_seg"]``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from bridge.errors import BridgeError
from bridge.panoptic import CanonicalPanoptic
from bridge.panoptic.parity import METRICS
from d2_side.panoptic import d2_from_canonical


def evaluate_d2(
    dataset_name: str, predictions: Mapping[int, CanonicalPanoptic], output_dir: str | os.PathLike[str]
) -> dict[str, float]:
    """PQ/SQ/RQ (all, things ``_th``, stuff ``_st``) from detectron2's ``COCOPanopticEvaluator``.

    ``dataset_name`` must be registered (e.g. by ``d2_side.datasets.register_onesample``) with panoptic
    metadata; every image of the dataset needs a prediction. Returns ``results["panoptic_seg"]`` as floats.
    """
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.evaluation import COCOPanopticEvaluator

    records = {int(r["image_id"]): r for r in DatasetCatalog.get(dataset_name)}
    missing = sorted(set(records) - {int(k) for k in predictions})
    if missing:
        raise BridgeError(f"{dataset_name}: no prediction for image ids {missing[:5]}")
    extra = sorted({int(k) for k in predictions} - set(records))
    if extra:
        raise BridgeError(f"{dataset_name}: predictions for image ids {extra[:5]} not in the dataset")
    metadata = MetadataCatalog.get(dataset_name)
    os.makedirs(output_dir, exist_ok=True)
    evaluator = COCOPanopticEvaluator(dataset_name, str(output_dir))
    evaluator.reset()
    for image_id, record in records.items():
        ids, infos = d2_from_canonical(predictions[image_id], metadata)
        evaluator.process([{"file_name": record["file_name"], "image_id": image_id}], [{"panoptic_seg": (ids, infos)}])
    results: dict[str, Any] | None = evaluator.evaluate()
    if not results or "panoptic_seg" not in results:
        raise BridgeError(f"{dataset_name}: COCOPanopticEvaluator returned no panoptic_seg results")
    return {key: float(results["panoptic_seg"][key]) for key in METRICS}


__all__ = ["evaluate_d2"]
