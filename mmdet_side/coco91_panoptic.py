"""COCO-panoptic with label = original category id in mmdet: ``CocoPanopticDataset91`` and ``CocoPanopticMetric91``.

Slot layout (:func:`bridge.coco.coco91.coco_panoptic_slot_names`, 201 slots): labels 0..90 are the thing slots
(the 91 instance slots, ``'N/A'`` where unused), labels 91..200 the stuff slots (stuff ids 92..200).  mmdet's
panoptic code only needs things before stuff, which this keeps:

- ``LoadPanopticAnnotations`` paints ``segments_info[i]['category']`` (= the category id) into the semantic
  map, 255 = ignore (above 200, so never a label);
- ``PanopticFPNHead`` turns labels < ``num_things_classes`` (91) into its single "things" class and stuff
  label ``l`` into ``l - 91``; ``preprocess_panoptic_gt`` (Mask2Former) takes stuff labels in
  ``[num_things, num_things + num_stuff)``;
- the fusion heads write stuff as ``num_things + stuff index`` (= the category id again) and void as
  ``num_things + num_stuff`` = 201 = ``len(classes)``, which ``CocoPanopticMetric`` already reads as void.

Stock ``CocoPanopticMetric`` maps labels to category ids through ``get_cat_ids(cat_names=classes)``, i.e. label
``i`` → the ``i``-th named category: with these slots that is the wrong category, or a ``KeyError`` for labels
≥ 133.  ``CocoPanopticMetric91`` writes label ``l`` as category ``l``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from mmdet.datasets import CocoPanopticDataset
from mmdet.evaluation import CocoPanopticMetric
from mmdet.evaluation.functional import INSTANCE_OFFSET
from mmdet.registry import DATASETS, METRICS
from mmengine.fileio import dump, load

from bridge.coco.coco91 import COCO_PANOPTIC_NUM_THING_SLOTS, UNUSED_SLOT, coco_panoptic_slot_names
from bridge.errors import BridgeError
from mmdet_side.coco91 import IdentityLabelsMixin, SlotLayoutMetaMixin

__all__ = ["PANOPTIC_SLOT_NAMES", "NUM_THING_SLOTS", "NUM_STUFF_SLOTS", "CocoPanopticDataset91", "CocoPanopticMetric91"]

PANOPTIC_SLOT_NAMES: tuple[str, ...] = coco_panoptic_slot_names()
NUM_THING_SLOTS: int = COCO_PANOPTIC_NUM_THING_SLOTS
NUM_STUFF_SLOTS: int = len(PANOPTIC_SLOT_NAMES) - NUM_THING_SLOTS


def _panoptic_palette() -> list[tuple[int, int, int]]:
    """Stock 133-class palette spread over the 201 slots (black for unused slots)."""
    stock = CocoPanopticDataset.METAINFO
    color = dict(zip(stock["classes"], stock["palette"]))
    return [tuple(color[name]) if name != UNUSED_SLOT else (0, 0, 0) for name in PANOPTIC_SLOT_NAMES]


def panoptic_slot_metainfo() -> dict:
    """``metainfo`` of the id-slot panoptic dataset: ``classes``, ``thing_classes``, ``stuff_classes``, ``palette``."""
    return {
        "classes": PANOPTIC_SLOT_NAMES,
        "thing_classes": PANOPTIC_SLOT_NAMES[:NUM_THING_SLOTS],
        "stuff_classes": PANOPTIC_SLOT_NAMES[NUM_THING_SLOTS:],
        "palette": _panoptic_palette(),
    }


@DATASETS.register_module()
class CocoPanopticDataset91(IdentityLabelsMixin, CocoPanopticDataset):
    """``CocoPanopticDataset`` whose labels are the original COCO-panoptic category ids (0..200).

    Things are labels 0..90 (``thing_classes``, 91 slots), stuff labels 91..200 (``stuff_classes``, 110 slots);
    a model on it has ``num_things_classes=91``, ``num_stuff_classes=110`` (``apply_coco91`` sets them).
    """

    METAINFO = panoptic_slot_metainfo()


@METRICS.register_module()
class CocoPanopticMetric91(SlotLayoutMetaMixin, CocoPanopticMetric):
    """``CocoPanopticMetric`` for id-slot labels: predicted label ``l`` is written as category id ``l``.

    Works with and without ``ann_file`` and with ``outfile_prefix``.  ``dataset_meta`` must have the slot
    layout (:class:`mmdet_side.coco91.SlotLayoutMetaMixin`) with ``thing_classes`` = the first 91 slots.
    """

    REFERENCE_SLOTS = PANOPTIC_SLOT_NAMES

    def __init__(self, *args, classwise: bool = False, **kwargs) -> None:
        """``CocoPanopticMetric``'s arguments; ``classwise=True`` is refused: mmdet's per-class table pairs the
        class names by position with the result rows of the ground truth's categories (201 slots, 133 rows),
        so every row after the first unused slot would carry another category's name."""
        if classwise:
            raise BridgeError(
                f"{type(self).__name__}: classwise=True is not supported (mmdet's per-class table "
                "would name the rows of the 201 id slots wrongly); the PQ / SQ / RQ results are exact"
            )
        super().__init__(*args, **kwargs)

    def __del__(self) -> None:
        """Leave ``tmp_dir`` to itself: a ``TemporaryDirectory`` removes itself when collected, and at exit before
        modules are torn down. ``CocoPanopticMetric.__del__`` calls its ``cleanup()`` instead, which raises on a
        metric refused in ``__init__`` (``AttributeError: tmp_dir``) and on one alive at interpreter exit."""

    def check_dataset_meta(self, dataset_meta) -> None:
        """Also require ``thing_classes`` / ``stuff_classes`` (when present) to split the slots at 91."""
        super().check_dataset_meta(dataset_meta)
        classes = tuple(dataset_meta["classes"])
        for key, expected in (
            ("thing_classes", classes[:NUM_THING_SLOTS]),
            ("stuff_classes", classes[NUM_THING_SLOTS:]),
        ):
            if key in dataset_meta and tuple(dataset_meta[key]) != expected:
                raise BridgeError(
                    f"{type(self).__name__}: dataset_meta[{key!r}] is not slots "
                    f"{'0..90' if key == 'thing_classes' else '91..'} of 'classes' (things first, "
                    f"label = category id)"
                )

    def _parse_predictions(self, pred: dict, img_id: int, segm_file: str, label2cat=None) -> dict:
        """``CocoPanopticMetric._parse_predictions`` with category id = label (the name-built map ignored).

        Pixels predicted as an unused (``'N/A'``) slot, which no ground truth has, are made void.
        """
        classes = self.dataset_meta["classes"]
        pan = pred["pred_panoptic_seg"]["sem_seg"]
        unused = torch.tensor([i for i, name in enumerate(classes) if name == UNUSED_SLOT], device=pan.device)
        in_unused = torch.isin(pan % INSTANCE_OFFSET, unused)
        if bool(in_unused.any()):
            pan = torch.where(in_unused, torch.full_like(pan, len(classes)), pan)
            pred = dict(pred, pred_panoptic_seg=dict(pred["pred_panoptic_seg"], sem_seg=pan))
        return super()._parse_predictions(pred, img_id, segm_file, label2cat=None)

    def result2json(self, results: Sequence[dict], outfile_prefix: str) -> tuple[str, str]:
        """Dump the predictions with ``category_id = label`` (``outfile_prefix`` mode)."""
        for result in results:
            for segment in result["segments_info"]:
                cat_id = int(segment["category_id"])
                if cat_id not in self.categories:
                    raise BridgeError(
                        f"{type(self).__name__}: predicted label {cat_id} is no category of the "
                        f"ground truth ({len(self.categories)} categories)"
                    )
                segment["isthing"] = self.categories[cat_id]["isthing"]
        json_filename = f"{outfile_prefix}.panoptic.json"
        dump(dict(annotations=list(results)), json_filename)
        return json_filename, self.seg_out_dir

    def gt_to_coco_json(self, gt_dicts: Sequence[dict], outfile_prefix: str) -> tuple[str, str]:
        """Like ``CocoPanopticMetric.gt_to_coco_json`` (category id = label) without the unused slots."""
        path, gt_folder = super().gt_to_coco_json(gt_dicts, outfile_prefix)
        coco_json = load(path)
        coco_json["categories"] = [
            dict(c, isthing=int(c["id"] < NUM_THING_SLOTS)) for c in coco_json["categories"] if c["name"] != UNUSED_SLOT
        ]
        dump(coco_json, path)
        return path, gt_folder
