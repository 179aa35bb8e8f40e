"""One-sample (or few-sample) COCO splits prepared for both frameworks from a standard COCO tree.

A standard COCO root has ``{train,val}2017/``, ``panoptic_{train,val}2017/``,
``annotations/panoptic_{train,val}2017.json`` and ``annotations/instances_{train,val}2017.json``.
``prepare_split`` cuts the panoptic and instances files to the same image ids (``bridge.subset``),
writes the semantic-seg PNGs both registration styles need, and returns every path; results are
cached in ``cache_dir`` so preparing again is free. Configuration comes from arguments or from the
environment (``BRIDGE_COCO_ROOT``, ``BRIDGE_{TRAIN,VAL}_IMAGE_IDS``, ``BRIDGE_CACHE_DIR``).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bridge.coco.semseg_png import write_semantic_pngs
from bridge.errors import BridgeError
from bridge.subset import cut_subset

ROOT_VARIABLE = "BRIDGE_COCO_ROOT"
IDS_VARIABLES = {"train": "BRIDGE_TRAIN_IMAGE_IDS", "val": "BRIDGE_VAL_IMAGE_IDS"}
CACHE_VARIABLE = "BRIDGE_CACHE_DIR"
SPLITS = ("train", "val")


@dataclass(frozen=True)
class OneSampleSplit:
    """Every path of one prepared split (absolute paths)."""

    split: str
    image_ids: tuple[int, ...]
    image_root: Path
    panoptic_root: Path
    panoptic_json: Path
    instances_json: Path
    sem_seg_root: Path
    stuff_sem_seg_root: Path


@dataclass(frozen=True)
class OneSampleConfig:
    """Where the COCO tree is, which images to keep per split, and where prepared files go."""

    coco_root: Path
    image_ids: Mapping[str, tuple[int, ...] | None]
    cache_dir: Path

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> OneSampleConfig:
        """Read the configuration from ``BRIDGE_*`` environment variables; error names what to set."""
        environ = os.environ if environ is None else environ
        root = environ.get(ROOT_VARIABLE, "").strip()
        if not root:
            raise BridgeError(
                f"{ROOT_VARIABLE} is not set: set it to a COCO root with {{train,val}}2017/, "
                "panoptic_{train,val}2017/ and annotations/"
            )
        ids = {split: parse_image_ids(environ.get(IDS_VARIABLES[split], ""), IDS_VARIABLES[split]) for split in SPLITS}
        cache = environ.get(CACHE_VARIABLE, "").strip()
        return cls.create(root, ids, cache or None)

    @classmethod
    def create(
        cls,
        coco_root: str | os.PathLike[str],
        image_ids: Mapping[str, Sequence[int] | None] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> OneSampleConfig:
        """Build a configuration from code; ``cache_dir`` defaults to a folder keyed by the root."""
        root = Path(coco_root).expanduser().resolve()
        ids = {split: (tuple(int(i) for i in (image_ids or {}).get(split) or ()) or None) for split in SPLITS}
        if cache_dir is None:
            digest = hashlib.sha1(str(root).encode()).hexdigest()[:10]
            cache_dir = Path.home() / ".cache" / "d2-mmdet-bridge" / "subsets" / digest
        return cls(coco_root=root, image_ids=ids, cache_dir=Path(cache_dir).expanduser().resolve())


def parse_image_ids(text: str, source: str) -> tuple[int, ...] | None:
    """Parse ``"1,2,3"`` into ids; empty means "the first annotated image"; bad text names ``source``."""
    text = text.strip()
    if not text:
        return None
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise BridgeError(f"{source}={text!r}: expected comma-separated integer image ids") from None


def coco_paths(coco_root: Path, split: str) -> dict[str, Path]:
    """The standard COCO paths of ``split``; raises naming the first one that is missing."""
    paths = {
        "image_root": coco_root / f"{split}2017",
        "panoptic_root": coco_root / f"panoptic_{split}2017",
        "panoptic_json": coco_root / "annotations" / f"panoptic_{split}2017.json",
        "instances_json": coco_root / "annotations" / f"instances_{split}2017.json",
    }
    for path in paths.values():
        if not path.exists():
            raise BridgeError(
                f"{path} does not exist: {ROOT_VARIABLE} must point at a standard COCO root (currently {coco_root})"
            )
    return paths


def prepare_split(config: OneSampleConfig, split: str) -> OneSampleSplit:
    """Cut the subsets of ``split`` and write its semantic PNGs (cached); return every path."""
    if split not in SPLITS:
        raise BridgeError(f"unknown split {split!r}; expected one of {SPLITS}")
    paths = coco_paths(config.coco_root, split)
    ids = config.image_ids.get(split)
    out_dir = config.cache_dir / split
    selection = {"ids": list(ids)} if ids else {"one": True}
    panoptic_json, instances_json = cut_subset(
        [paths["panoptic_json"], paths["instances_json"]], out_dir=out_dir, **selection
    )
    panoptic = json.loads(panoptic_json.read_bytes())
    chosen = tuple(int(image["id"]) for image in panoptic["images"])
    sem_seg_root = out_dir / f"panoptic_semseg_{split}2017"
    stuff_root = out_dir / f"panoptic_stuff_{split}2017"
    write_semantic_pngs(panoptic, paths["panoptic_root"], sem_seg_root, "all_classes")
    write_semantic_pngs(panoptic, paths["panoptic_root"], stuff_root, "stuff_only")
    return OneSampleSplit(
        split=split,
        image_ids=chosen,
        image_root=paths["image_root"],
        panoptic_root=paths["panoptic_root"],
        panoptic_json=panoptic_json,
        instances_json=instances_json,
        sem_seg_root=sem_seg_root,
        stuff_sem_seg_root=stuff_root,
    )
