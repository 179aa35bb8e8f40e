"""Matcher outputs in one canonical form, recorded as kind ``matching`` and compared exactly.

Both frameworks' matchers answer the same question (which prediction is assigned to which ground truth) in
different shapes: detectron2's ``Matcher`` returns ``(matches, match_labels)`` per image (labels 1 / 0 / -1
for foreground / background / ignored), mmdet's assigners an ``AssignResult`` whose ``gt_inds`` are
1-based (0 background, -1 ignored), and DETR-style Hungarian matchers (Mask DINO's ``HungarianMatcher``) a
list of ``(query indices, target indices)`` per image. The canonical form is, per image::

    {"query": int64[K], "target": int64[K], "ignored": int64[J]}

the assigned predictions in increasing order, the ground truth each one got (0-based), and the predictions
ignored (neither foreground nor background). A matching is recorded as ``{"images": [...]}`` (one
element per image, in the matcher's order) plus ``"normalisers"`` (``num_masks``, ``num_boxes``, ... as
given). Kind ``matching`` compares with zero tolerance whatever the dtype (``bridge.compare.tolerance``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from bridge.errors import FormatError
from bridge.runs import Recorder

KIND = "matching"


def _long(values: Any) -> torch.Tensor:
    return torch.as_tensor(values).detach().to(device="cpu", dtype=torch.int64).reshape(-1)


def canonical_image(output: Any) -> dict[str, torch.Tensor]:
    """One image's matching in the canonical form, from a ``(query, target)`` pair of index tensors
    (Hungarian matchers), an object with ``gt_inds`` (mmdet's ``AssignResult``) or a dict that is already
    canonical. Raises FormatError for anything else."""
    if isinstance(output, Mapping) and {"query", "target"} <= set(output):
        query, target = _long(output["query"]), _long(output["target"])
        ignored = _long(output.get("ignored", []))
    elif hasattr(output, "gt_inds"):
        gt_inds = _long(output.gt_inds)
        query = torch.nonzero(gt_inds > 0).reshape(-1)
        target, ignored = gt_inds[query] - 1, torch.nonzero(gt_inds < 0).reshape(-1)
    elif isinstance(output, (tuple, list)) and len(output) == 2:
        query, target = _long(output[0]), _long(output[1])
        ignored = torch.zeros(0, dtype=torch.int64)
    else:
        raise FormatError(
            f"cannot read a matching from {type(output).__name__}: expected (query, target), "
            "an object with gt_inds or {'query', 'target'}"
        )
    if query.numel() != target.numel():
        raise FormatError(f"matching has {query.numel()} query indices but {target.numel()} target indices")
    order = torch.argsort(query, stable=True)
    return {"query": query[order], "target": target[order], "ignored": torch.sort(ignored).values}


def canonical_d2_matcher(matches: torch.Tensor, match_labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """One image's matching from detectron2's ``Matcher`` output (``match_labels``: 1 foreground,
    0 background, -1 ignored) in the canonical form."""
    matches, labels = _long(matches), _long(match_labels)
    query = torch.nonzero(labels == 1).reshape(-1)
    return {"query": query, "target": matches[query], "ignored": torch.nonzero(labels == -1).reshape(-1)}


def canonical_matching(output: Any) -> list[dict[str, torch.Tensor]]:
    """A matcher's whole output in the canonical form, one dict per image: a list of per-image outputs
    (Hungarian matchers), one ``AssignResult``-like object (one image), or detectron2's ``Matcher``
    pair ``(matches, match_labels)`` of equal-length 1-d tensors (one image)."""
    if hasattr(output, "gt_inds") or isinstance(output, Mapping):
        return [canonical_image(output)]
    if (
        isinstance(output, tuple)
        and len(output) == 2
        and all(isinstance(t, torch.Tensor) for t in output)
        and output[1].dtype == torch.int8
    ):  # detectron2's Matcher labels are int8; Hungarian pairs int64
        return [canonical_d2_matcher(*output)]
    if isinstance(output, Sequence):
        return [canonical_image(item) for item in output]
    raise FormatError(f"cannot read a matching from {type(output).__name__}")


def record_matching(
    recorder: Recorder, name: str, indices: Any, *, step: int, normalisers: Mapping[str, Any] | None = None
) -> None:
    """Record a matcher's output under ``name`` as kind ``matching``, in the canonical form (see the module
    docstring), with the loss normalisers (``num_masks``, ``num_boxes``: numbers or 0-d tensors) that go with
    it. ``indices`` is anything :func:`canonical_matching` reads; use the same ``name`` on both sides."""
    value: dict[str, Any] = {"images": canonical_matching(indices)}
    if normalisers:
        value["normalisers"] = {
            str(k): (v.detach().cpu() if isinstance(v, torch.Tensor) else v) for k, v in normalisers.items()
        }
    recorder.record(name, value, step=step, kind=KIND)
