"""Load the first divergent pair's tensors from the two runs and reduce them to a heatmap of where the error
lives and a histogram of the error (small JSON-ready arrays the page draws)."""

from __future__ import annotations

import math
import os
from typing import Any

import torch

from bridge.compare.output_entries import canonical_form
from bridge.compare.pairing import Pair, load_map, pair_entries
from bridge.compare.param_pairing import pair_with_rules
from bridge.runs import Run, open_run

#: Largest heatmap side drawn (cells); larger maps are summed block by block.
MAX_CELLS = 96
#: Histogram bins over log10 |a - b| (exact zeros are counted apart, never drawn at a made-up position).
BINS = 40


def pick_item(compare: dict[str, Any]) -> dict[str, Any] | None:
    """The compare item to picture: the first divergence when it is a failing pair of same-shaped numeric
    tensors, else the first such failing item; None when there is none."""
    def drawable(item: dict[str, Any]) -> bool:
        return (item.get("status") == "fail" and item.get("max_abs") is not None and bool(item.get("shape_a"))
                and item.get("shape_a") == item.get("shape_b"))

    first = compare.get("first_divergence") or {}
    for item in compare["items"]:
        if (drawable(item) and item.get("key") == first.get("key") and item.get("step") == first.get("step")
                and item.get("rank") == first.get("rank") and item.get("kind") == first.get("kind")):
            return item
    return next((i for i in compare["items"] if drawable(i)), None)


def find_pair(run_a: Run, run_b: Run, item: dict[str, Any], name_map: str | None) -> Pair | None:
    """Pair the item's step/rank/kind leaves as ``bridge.compare`` does (same ``--map``) and return the pair
    whose shared key is the item's, or None."""
    def keep(e: Any) -> bool:
        return (e.step == item["step"] and e.rank == item["rank"] and e.kind == item["kind"]
                and canonical_form(e) is None)

    ea = [e for e in run_a.entries() if keep(e)]
    eb = [e for e in run_b.entries() if keep(e)]
    ruleset = load_map(name_map)
    pairing = pair_entries(ea, eb) if ruleset is None else pair_with_rules(ea, eb, ruleset, run_a)
    return next((p for p in pairing.pairs if p.key == item["key"]), None)


def _block_sum(m: torch.Tensor) -> torch.Tensor:
    """Sum a 2-D map block by block down to at most MAX_CELLS per side."""
    rows, cols = m.shape
    fr, fc = math.ceil(rows / MAX_CELLS), math.ceil(cols / MAX_CELLS)
    if fr == 1 and fc == 1:
        return m
    padded = torch.nn.functional.pad(m, (0, (-cols) % fc, 0, (-rows) % fr))
    return padded.reshape(padded.shape[0] // fr, fr, padded.shape[1] // fc, fc).sum(dim=(1, 3))


def error_map(diff: torch.Tensor) -> tuple[torch.Tensor, str, int | None]:
    """The 2-D map of |a - b| to draw, how it was made, and the batch element shown (None when not chosen).

    N x C x H x W (and more trailing dims, flattened into W): summed over channels, for the batch element with
    the largest error. B x Q x D (query tensors): per-query rows over the feature dim, for the worst batch
    element; Q x D: as is; one dim: one row."""
    if diff.dim() == 0:
        return diff.reshape(1, 1), "scalar", None
    if diff.dim() == 1:
        return diff.reshape(1, -1), "one row over the only dimension", None
    if diff.dim() == 2:
        return diff, "rows = dim 0, columns = dim 1", None
    worst = int(diff.reshape(diff.shape[0], -1).sum(dim=1).argmax())
    sample = diff[worst]
    if diff.dim() == 3:
        return sample, f"per-query rows (dim 1) over the feature dim (dim 2), batch element {worst}", worst
    return (sample.sum(dim=0).reshape(sample.shape[1], -1),
            f"spatial map (H x W) summed over {sample.shape[0]} channels, batch element {worst}", worst)


def histogram(diff: torch.Tensor) -> dict[str, Any]:
    """Histogram of log10 |a - b| over the finite elements; exact zeros counted apart."""
    flat = diff.reshape(-1)
    finite = flat[torch.isfinite(flat)]
    zeros = int((finite == 0).sum())
    nonzero = finite[finite > 0]
    out: dict[str, Any] = {"zeros": zeros, "nonfinite": int(flat.numel() - finite.numel()), "counts": [],
                           "lo": None, "hi": None}
    if nonzero.numel():
        logs = torch.log10(nonzero)
        lo, hi = float(logs.min()), float(logs.max())
        if hi - lo < 0.2:  # (nearly) one value: a decade around it
            mid = (lo + hi) / 2
            lo, hi = mid - 0.5, mid + 0.5
        out.update(lo=lo, hi=hi, counts=[int(c) for c in torch.histc(logs, bins=BINS, min=lo, max=hi)])
    return out


def picture(runs: tuple[str | os.PathLike[str], str | os.PathLike[str]], compare: dict[str, Any],
            name_map: str | None) -> dict[str, Any] | None:
    """The first divergent tensor of ``compare`` pictured from the two runs: heatmap cells (rows of floats),
    how they were made, the histogram, and the item; None when no failing tensor pair can be drawn.
    Raises BridgeError when a run cannot be read or the pair is not in the runs."""
    item = pick_item(compare)
    if item is None:
        return None
    run_a, run_b = open_run(runs[0]), open_run(runs[1])
    pair = find_pair(run_a, run_b, item, name_map)
    if pair is None:
        from bridge.errors import BridgeError
        raise BridgeError(f"{runs[0]} / {runs[1]}: no pair {item['kind']} {item['key']} at step {item['step']} "
                          f"rank {item['rank']} (give the --map the compare used)")
    a = pair.a_tensor() if pair.a_tensor is not None else run_a.tensor(pair.a)
    b = run_b.tensor(pair.b)
    if a.shape != b.shape:
        return None
    if a.is_complex():
        a, b = torch.view_as_real(a), torch.view_as_real(b)
    diff = (a.double() - b.double()).abs()
    m, how, worst = error_map(diff)
    cells = _block_sum(torch.nan_to_num(m, nan=0.0, posinf=0.0))
    return {"key": item["key"], "key_a": item.get("key_a"), "kind": item["kind"], "step": item["step"],
            "rank": item["rank"], "shape": list(a.shape), "reason": item.get("reason"), "atol": item.get("atol"),
            "rtol": item.get("rtol"), "heatmap": {"how": how, "batch_element": worst, "rows": list(m.shape)[0],
                                                   "cols": list(m.shape)[1],
                                                   "cells": [[float(v) for v in row] for row in cells.tolist()]},
            "histogram": histogram(diff)}
