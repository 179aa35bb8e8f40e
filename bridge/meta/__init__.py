"""Evaluator metadata of detectron2 and mmdet in one normalized JSON, and a diff of two such files.

Framework-free: this module never imports detectron2, mmdet, mmengine or mmcv. The exporters live in
``d2_side.meta`` (``python -m d2_side.meta DATASET -o d2.json``) and ``mmdet_side.meta``
(``python -m mmdet_side.meta CONFIG -o mmdet.json``); ``python -m bridge.meta A.json B.json [--json OUT]`` compares
two exports and exits 0 when they are equivalent, 1 when they differ, 2 on bad input.

Normalized JSON (one object; every key below is required)::

    {
      "framework": "detectron2" | "mmdet",
      "source": "<dataset name or config path>",
      "classes": ["person", ...],            # class names in label order (label = index)
      "isthing": [true, ...],                # one bool per label
      "dataset_id_to_label": {"1": 0, ...},  # str(dataset category id) -> label
      "colors": [[r, g, b], ...] | null,     # one colour per label, or null when unknown
      "void_label": int | null,              # label that means "void" in predictions; null = none
      "ignore_label": int | null,            # semantic-seg ignore value of the ground truth
      "label_divisor": int | null,           # panoptic id = label * label_divisor + instance
      "evaluator": {                         # evaluator settings that change numbers
        "type": "...",                       # evaluator class (informative, not compared)
        "max_dets": [1, 10, 100],            # COCO maxDets of the box/mask evaluator
        "drops_zero_area_segments": bool,    # ground-truth segments of area 0 are dropped
        "void_panoptic_ids": [...],          # informative: what marks void in a prediction
        ...
      },
      "raw": {"num_thing_classes": 80, "num_stuff_classes": 133, ...}  # raw counts for reference
    }

``diff_metadata(a, b)`` lists the :class:`Difference` s that matter for evaluation: class list length,
order and names, the thing/stuff split, dataset-id maps, void / ignore labels, label divisor, evaluator
settings (``max_dets``, segment filtering, ...; ``type`` and keys starting with ``void_panoptic`` are
informative only) and the raw thing/stuff counts. Colours and ``source`` are not compared.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.atomic import atomic_open
from bridge.errors import BridgeError

REQUIRED_KEYS = (
    "framework",
    "source",
    "classes",
    "isthing",
    "dataset_id_to_label",
    "colors",
    "void_label",
    "ignore_label",
    "label_divisor",
    "evaluator",
    "raw",
)
INFORMATIVE_EVALUATOR_KEYS = ("type",)
INFORMATIVE_PREFIXES = ("void_panoptic",)
#: Deepest nesting of lists and objects a metadata file may have.
MAX_DEPTH = 32


class MetadataError(BridgeError):
    """A metadata file is missing, not JSON, or not in the normalized schema."""


@dataclass(frozen=True)
class Difference:
    """One difference between two normalized metadata documents."""

    field: str
    a_value: Any
    b_value: Any
    sentence: str


def make_metadata(
    *,
    framework: str,
    source: str,
    classes: Sequence[str],
    isthing: Sequence[bool],
    dataset_id_to_label: Mapping[Any, int],
    colors: Sequence[Sequence[int]] | None,
    void_label: int | None,
    ignore_label: int | None,
    label_divisor: int | None,
    evaluator: Mapping[str, Any],
    raw: Mapping[str, Any],
) -> dict[str, Any]:
    """Build a normalized metadata dict (plain JSON types, keys as strings) and validate it."""
    doc = {
        "framework": str(framework),
        "source": str(source),
        "classes": [str(name) for name in classes],
        "isthing": [bool(flag) for flag in isthing],
        "dataset_id_to_label": {
            str(int(k)): int(v) for k, v in sorted(dataset_id_to_label.items(), key=lambda kv: int(kv[0]))
        },
        "colors": None if colors is None else [[int(c) for c in color] for color in colors],
        "void_label": None if void_label is None else int(void_label),
        "ignore_label": None if ignore_label is None else int(ignore_label),
        "label_divisor": None if label_divisor is None else int(label_divisor),
        "evaluator": _plain(dict(evaluator)),
        "raw": _plain(dict(raw)),
    }
    return validate_metadata(doc)


def _plain(value: Any) -> Any:
    """Turn tuples, numpy scalars and non-string keys into plain JSON types."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if hasattr(value, "item"):
        return value.item()
    return value


def _is_int_text(text: str) -> bool:
    return re.fullmatch(r"-?[0-9]{1,18}", text) is not None


def _depth(value: Any) -> int:
    """Nesting depth of lists and dicts in ``value``, counted without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (list, dict)):
            deepest = max(deepest, depth)
            if depth <= MAX_DEPTH:
                stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def validate_metadata(doc: Any, source: str = "metadata") -> dict[str, Any]:
    """Check ``doc`` against the normalized schema; raise :class:`MetadataError` naming the problem."""
    if not isinstance(doc, dict):
        raise MetadataError(f"{source}: expected a JSON object, got {type(doc).__name__}")
    missing = [key for key in REQUIRED_KEYS if key not in doc]
    if missing:
        raise MetadataError(f"{source}: missing required key(s) {', '.join(missing)}")
    for key in ("framework", "source"):
        if doc[key] is not None and not isinstance(doc[key], str):
            raise MetadataError(f"{source}: {key!r} must be a string")
    if _depth(doc) > MAX_DEPTH:
        raise MetadataError(f"{source}: nested deeper than {MAX_DEPTH} levels")
    if not isinstance(doc["classes"], list) or not all(isinstance(c, str) for c in doc["classes"]):
        raise MetadataError(f"{source}: 'classes' must be a list of strings")
    if not isinstance(doc["isthing"], list) or len(doc["isthing"]) != len(doc["classes"]):
        raise MetadataError(f"{source}: 'isthing' must be a list with one bool per class")
    if not isinstance(doc["isthing"], list) or not all(isinstance(t, (bool, int)) for t in doc["isthing"]):
        raise MetadataError(f"{source}: 'isthing' must be a list of bools")
    if not isinstance(doc["dataset_id_to_label"], dict):
        raise MetadataError(f"{source}: 'dataset_id_to_label' must be an object")
    for key, value in doc["dataset_id_to_label"].items():
        if not _is_int_text(key) or isinstance(value, bool) or not isinstance(value, int):
            raise MetadataError(
                f"{source}: 'dataset_id_to_label' must map integer ids to integer labels, "
                f"got {_short(key, 40)}: {_short(value, 40)}"
            )
    for key in ("evaluator", "raw"):
        if not isinstance(doc[key], dict):
            raise MetadataError(f"{source}: {key!r} must be an object")
    for key in ("void_label", "ignore_label", "label_divisor"):
        if doc[key] is not None and (not isinstance(doc[key], int) or isinstance(doc[key], bool)):
            raise MetadataError(f"{source}: {key!r} must be an integer or null")
    return doc


def load_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate a normalized metadata JSON file; raise :class:`MetadataError` on bad input."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MetadataError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise MetadataError(f"{path}: cannot read ({error})") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as error:
        raise MetadataError(f"{path}: not JSON ({error.msg} at line {error.lineno})") from None
    except RecursionError:
        raise MetadataError(f"{path}: JSON nested too deeply") from None
    except ValueError as error:  # e.g. an integer of more digits than Python converts
        raise MetadataError(f"{path}: unreadable JSON value ({error})") from None
    return validate_metadata(doc, str(path))


def write_metadata(doc: Mapping[str, Any], out: str | os.PathLike[str]) -> Path:
    """Validate ``doc`` and write it atomically as indented JSON; return the path."""
    validate_metadata(dict(doc))
    with atomic_open(out, "w") as handle:
        json.dump(doc, handle, indent=1, sort_keys=False)
        handle.write("\n")
    return Path(out)


def _short(value: Any, limit: int = 80) -> str:
    try:
        text = json.dumps(value)
    except (TypeError, ValueError, RecursionError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _split_names(doc: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    things = [c for c, t in zip(doc["classes"], doc["isthing"]) if t]
    stuff = [c for c, t in zip(doc["classes"], doc["isthing"]) if not t]
    return things, stuff


def diff_metadata(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[Difference]:
    """The differences between two normalized documents that matter for evaluation (empty = equivalent)."""
    a = validate_metadata(dict(a), "a")
    b = validate_metadata(dict(b), "b")
    na, nb = a["framework"] or "a", b["framework"] or "b"
    if na == nb:
        na, nb = f"{na} (a)", f"{nb} (b)"
    out: list[Difference] = []

    ca, cb = a["classes"], b["classes"]
    if len(ca) != len(cb):
        out.append(
            Difference(
                "classes.length", len(ca), len(cb), f"classes: {na} has {len(ca)} labels where {nb} has {len(cb)}"
            )
        )
    if set(ca) != set(cb):
        only_a, only_b = sorted(set(ca) - set(cb)), sorted(set(cb) - set(ca))
        out.append(
            Difference(
                "classes.names",
                only_a,
                only_b,
                f"class names: only in {na}: {_short(only_a)}; only in {nb}: {_short(only_b)}",
            )
        )
    elif ca != cb:
        first = next(i for i, (x, y) in enumerate(zip(ca, cb)) if x != y)
        out.append(
            Difference(
                "classes.order",
                ca[first],
                cb[first],
                f"class order: label {first} is {ca[first]!r} in {na} but {cb[first]!r} in {nb}",
            )
        )

    ta, sa = _split_names(a)
    tb, sb = _split_names(b)
    if ta != tb or sa != sb:
        moved = sorted((set(ta) & set(sb)) | (set(sa) & set(tb)))
        out.append(
            Difference(
                "isthing",
                [len(ta), len(sa)],
                [len(tb), len(sb)],
                f"thing/stuff split: {na} has {len(ta)} things + {len(sa)} stuff, {nb} has "
                f"{len(tb)} + {len(sb)}" + (f"; classes switching side: {_short(moved)}" if moved else ""),
            )
        )

    ma, mb = a["dataset_id_to_label"], b["dataset_id_to_label"]
    if ma != mb:
        keys = sorted(set(ma) | set(mb), key=int)
        changed = [k for k in keys if ma.get(k) != mb.get(k)]
        examples = ", ".join(f"{k}: {ma.get(k)} vs {mb.get(k)}" for k in changed[:3])
        out.append(
            Difference(
                "dataset_id_to_label",
                len(ma),
                len(mb),
                f"dataset id -> label maps: {len(changed)} of {len(keys)} ids differ "
                f"({na} maps {len(ma)} ids, {nb} {len(mb)}; e.g. {examples})",
            )
        )

    for key, what in (
        ("void_label", "void label"),
        ("ignore_label", "ignore label"),
        ("label_divisor", "label divisor"),
    ):
        if a[key] != b[key]:
            va = "none" if a[key] is None else a[key]
            vb = "none" if b[key] is None else b[key]
            out.append(Difference(key, a[key], b[key], f"{what}: {na} has {va} where {nb} has {vb}"))

    ea, eb = a["evaluator"], b["evaluator"]
    for key in sorted(set(ea) | set(eb)):
        if key in INFORMATIVE_EVALUATOR_KEYS or key.startswith(INFORMATIVE_PREFIXES):
            continue
        if ea.get(key) != eb.get(key):
            if key == "drops_zero_area_segments":

                def says(flag: Any) -> str:
                    return {True: "drops", False: "keeps"}.get(flag, "does not say whether it drops")

                sentence = (
                    f"zero-area segments: {na} {says(ea.get(key))} ground-truth segments of area 0, "
                    f"{nb} {says(eb.get(key))} them"
                )
            else:
                sentence = f"evaluator {key}: {na} uses {_short(ea.get(key))} where {nb} uses {_short(eb.get(key))}"
            out.append(Difference(f"evaluator.{key}", ea.get(key), eb.get(key), sentence))

    ra, rb = a["raw"], b["raw"]
    for key, what in (("num_thing_classes", "thing classes"), ("num_stuff_classes", "stuff classes")):
        if key in ra and key in rb and ra[key] != rb[key]:
            out.append(
                Difference(f"raw.{key}", ra[key], rb[key], f"{what}: {na} has {ra[key]} names where {nb} has {rb[key]}")
            )
    return out


def write_differences(diffs: Sequence[Difference], a: str, b: str, out: str | os.PathLike[str]) -> Path:
    """Write ``{"a", "b", "equivalent", "differences": [{field, a_value, b_value, sentence}]}`` atomically."""
    doc = {
        "a": str(a),
        "b": str(b),
        "equivalent": not diffs,
        "differences": [
            {"field": d.field, "a_value": d.a_value, "b_value": d.b_value, "sentence": d.sentence} for d in diffs
        ],
    }
    with atomic_open(out, "w") as handle:
        json.dump(doc, handle, indent=1)
    return Path(out)
