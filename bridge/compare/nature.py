"""Leaves that differ by nature between two runs (status ``by-nature``), defined in this one place.

A porter compares what the model computes; some recorded leaves differ between two runs of an aligned
port whatever the model does (docs/OUTPUTS.md):

- **paths and timestamps** (:data:`BY_NATURE_KEYS`, fnmatch on a leaf's key): where each framework found
  the image, when it ran. Paired, they are still compared and shown, but a difference is no divergence;
  unpaired, they are no unpaired leaf either.
- **framework structures** (:data:`RAW_RECORDS`): the raw ``batch`` (kind ``batch``) and ``outputs`` (kind
  ``output``) records the hooks write as each framework holds them (detectron2's ``list[dict]`` of
  ``Instances``, mmdet's ``DetDataSample``). Their leaves pair only between runs of one framework. A raw
  ``batch`` leaf without a partner is by nature (the model's input is compared through an activation such as
  ``normalized_input``); a raw ``outputs`` leaf without a partner is by nature where both runs hold canonical
  output records at that step and rank (``panoptic.*``, ``instances.*``, ``semantic.*``: the outputs are
  compared there) and stays unpaired otherwise. ``--show-raw`` counts every unpaired raw leaf as unpaired.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable

from bridge.runs import Entry

#: Key globs of leaves that differ by nature, and why.
BY_NATURE_KEYS: dict[str, str] = {
    "*file_name": "file path",
    "*img_path": "file path",
    "*seg_map_path": "file path",
    "*segm_file": "file path",
    "*timestamp*": "timestamp",
}
#: Raw framework records: record name → kind.
RAW_RECORDS: dict[str, str] = {"batch": "batch", "outputs": "output"}


def by_nature_key(key: str) -> str | None:
    """Why a leaf with ``key`` differs by nature (``file path``, ``timestamp``), or None."""
    return next((why for pattern, why in BY_NATURE_KEYS.items() if fnmatch.fnmatchcase(key, pattern)), None)


def is_raw(entry: Entry) -> bool:
    """True for a leaf of a raw framework record (:data:`RAW_RECORDS`)."""
    return RAW_RECORDS.get(entry.name) == entry.kind


def unpaired_by_nature(entry: Entry, canonical_sites: set[tuple[int, int]], show_raw: bool) -> str | None:
    """Why an unpaired leaf is no divergence (the reason shown), or None when it counts as unpaired."""
    why = by_nature_key(entry.key)
    if why is not None:
        return f"{why} (differs by nature)"
    if show_raw or not is_raw(entry):
        return None
    if entry.kind == "batch":
        return "framework structure (raw batch; the model's input is compared through an activation)"
    if (entry.step, entry.rank) in canonical_sites:
        return "framework structure (raw outputs; compared in their canonical forms)"
    return None


def split_unpaired(
    entries: Iterable[Entry], canonical_sites: set[tuple[int, int]], show_raw: bool
) -> tuple[list[Entry], list[tuple[Entry, str]]]:
    """Split unpaired leaves into those that count as unpaired and those that are by nature (with why)."""
    counted: list[Entry] = []
    by_nature: list[tuple[Entry, str]] = []
    for entry in entries:
        why = unpaired_by_nature(entry, canonical_sites, show_raw)
        if why is None:
            counted.append(entry)
        else:
            by_nature.append((entry, why))
    return counted, by_nature
