"""Load the first divergent pair's tensors from the two runs and reduce them to a heatmap of where the error
lives and a histogram of the error (small JSON-ready arrays the page draws)."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from typing import Any

import torch

from bridge.compare.engine import cpu_threads
from bridge.compare.output_entries import canonical_form
from bridge.compare.pairing import Pair, load_map, pair_entries
from bridge.compare.param_pairing import pair_with_rules
from bridge.runs import Run, open_run

#: Largest heatmap side drawn (cells); larger maps are summed block by block.
MAX_CELLS = 96


def pick_item(compare: dict[str, Any]) -> dict[str, Any] | None:
    """The compare item to picture: the first divergence when it is a failing pair of same-shaped numeric
    tensors, else the first such failing item; None when there is none."""

    def drawable(item: dict[str, Any]) -> bool:
        return (
            item.get("status") == "fail"
            and item.get("max_abs") is not None
            and bool(item.get("shape_a"))
            and item.get("shape_a") == item.get("shape_b")
        )

    first = compare.get("first_divergence") or {}
    for item in compare["items"]:
        if (
            drawable(item)
            and item.get("key") == first.get("key")
            and item.get("step") == first.get("step")
            and item.get("rank") == first.get("rank")
            and item.get("kind") == first.get("kind")
        ):
            return item
    return next((i for i in compare["items"] if drawable(i)), None)


def find_pair(run_a: Run, run_b: Run, item: dict[str, Any], name_map: str | None) -> Pair | None:
    """Pair the item's step/rank/kind leaves as ``bridge.compare`` does (same ``--map``) and return the pair
    whose shared key is the item's, or None."""

    def keep(e: Any) -> bool:
        return (
            e.step == item["step"] and e.rank == item["rank"] and e.kind == item["kind"] and canonical_form(e) is None
        )

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


#: Elements per chunk of work (cache-sized, like bridge.compare's reads).
CHUNK_ELEMS = 1 << 16
#: Histogram of at most about this many elements: a larger tensor is sampled one chunk in k (the heatmap
#: always covers every element).
HIST_SAMPLE_ELEMS = 1 << 22
#: Histogram bins: a quarter decade each, over 1e-20 .. 1e10 (values beyond land in the end bins).
BINS_PER_DECADE = 4
_LOW_DECADE, _HIGH_DECADE = -20, 10


class _Histogram:
    """Streaming histogram of |a - b| on fixed log-scale bins; exact zeros and non-finite values counted apart."""

    def __init__(self, every: int = 1) -> None:
        self.every = every  # count one chunk in ``every`` (a strided sample of a large tensor)
        self.seen = 0
        self.sampled = 0
        self.counts = torch.zeros((_HIGH_DECADE - _LOW_DECADE) * BINS_PER_DECADE, dtype=torch.long)
        self.zeros = 0
        self.nonfinite = 0

    def add(self, diff: torch.Tensor) -> None:
        """Count one (cache-sized) chunk of |a - b| (when it falls in the sample)."""
        self.seen += 1
        if (self.seen - 1) % self.every:
            return
        flat = diff.reshape(-1)
        self.sampled += flat.numel()
        zeros = int((flat == 0).sum())
        nonfinite = flat.numel() - int(torch.isfinite(flat).sum())
        self.zeros += zeros
        self.nonfinite += nonfinite
        tiny = 10.0**_LOW_DECADE
        logs = torch.nan_to_num(flat, nan=0.0, posinf=0.0).clamp_(min=tiny).log10_()
        idx = logs.mul_(BINS_PER_DECADE).floor_().sub_(_LOW_DECADE * BINS_PER_DECADE).clamp_(0, self.counts.numel() - 1)
        self.counts += torch.bincount(idx.long(), minlength=self.counts.numel())
        self.counts[0] -= zeros + nonfinite  # those were parked in the lowest bin

    def to_dict(self) -> dict[str, Any]:
        """The occupied bins (one empty bin either side): ``counts``, ``lo`` / ``hi`` (log10 of the edges)."""
        used = torch.nonzero(self.counts).reshape(-1)
        out: dict[str, Any] = {
            "zeros": self.zeros,
            "nonfinite": self.nonfinite,
            "counts": [],
            "lo": None,
            "hi": None,
            "sampled": self.sampled,
            "every": self.every,
        }
        if used.numel():
            first, last = max(int(used[0]) - 1, 0), min(int(used[-1]) + 1, self.counts.numel() - 1)
            out.update(
                counts=[int(c) for c in self.counts[first : last + 1]],
                lo=first / BINS_PER_DECADE + _LOW_DECADE,
                hi=(last + 1) / BINS_PER_DECADE + _LOW_DECADE,
            )
        return out


def _work_dtype(t: torch.Tensor) -> torch.dtype:
    return t.dtype if t.dtype == torch.float64 else torch.float32  # a - b of close floats is exact (Sterbenz)


def _slices(run_a: Run, run_b: Run, pair: Pair, rows: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """A's and B's tensors in slices of ``rows`` along dim 0 (complex ones as their real and imaginary parts)."""
    a_full = pair.a_tensor() if pair.a_tensor is not None else None
    slices_a = (
        a_full.split(rows)
        if a_full is not None and a_full.dim()
        else ([a_full] if a_full is not None else run_a.tensor_slices(pair.a, rows))
    )
    for sa, sb in zip(slices_a, run_b.tensor_slices(pair.b, rows)):
        if sa.is_complex():
            sa, sb = torch.view_as_real(sa), torch.view_as_real(sb)
        yield sa, sb


def _accumulate(xa: torch.Tensor, xb: torch.Tensor, hist: _Histogram, channel_sum: bool) -> tuple[torch.Tensor, float]:
    """|a - b| over one block, in cache-sized chunks along dim 0: the map (summed over dim 0 of a C x H x W
    block when ``channel_sum``, else the R x K block itself), its total, and the histogram updated."""
    dtype = _work_dtype(xa)
    row = max(1, xa[0].numel()) if xa.dim() and xa.shape[0] else 1
    step = max(1, CHUNK_ELEMS // row)
    parts, acc, total = [], None, 0.0
    for start in range(0, max(xa.shape[0], 1), step):
        d = (xa[start : start + step].to(dtype) - xb[start : start + step].to(dtype)).abs_()
        hist.add(d)
        total += float(torch.nansum(d))
        if channel_sum:
            s = d.sum(dim=0)
            acc = s if acc is None else acc.add_(s)
        else:
            parts.append(d)
    return (acc if channel_sum else torch.cat(parts)), total


def error_map(run_a: Run, run_b: Run, pair: Pair, shape: list[int]) -> tuple[torch.Tensor, str, int | None, _Histogram]:
    """The 2-D map of |a - b| to draw, how it was made, the batch element shown (None when not chosen) and the
    histogram, reading the pair once, one batch element at a time.

    N x C x H x W (and more trailing dims, flattened into W): summed over channels, for the batch element with
    the largest error. B x Q x D (query tensors): per-query rows over the feature dim, for the worst batch
    element; Q x D: as is; one dim: one row."""
    numel = math.prod(shape)
    hist = _Histogram(max(1, math.ceil(numel / HIST_SAMPLE_ELEMS)))
    if len(shape) <= 2:
        ((xa, xb),) = list(_slices(run_a, run_b, pair, max(1, shape[0] if shape else 1)))
        view = [1, 1] if not shape else [shape[0], 1] if len(shape) == 1 else shape
        m, _ = _accumulate(xa.reshape(view), xb.reshape(view), hist, channel_sum=False)
        if not shape:
            return m, "scalar", None, hist
        if len(shape) == 1:
            return m.reshape(1, -1), "one row over the only dimension", None, hist
        return m, "rows = dim 0, columns = dim 1", None, hist
    best, best_sum, worst = None, -1.0, 0
    for n, (sa, sb) in enumerate(_slices(run_a, run_b, pair, 1)):
        if len(shape) == 3:
            m, total = _accumulate(sa[0], sb[0], hist, channel_sum=False)
        else:
            view = [shape[1], shape[2], -1]
            m, total = _accumulate(sa[0].reshape(view), sb[0].reshape(view), hist, channel_sum=True)
        if total > best_sum:
            best, best_sum, worst = m, total, n
    if len(shape) == 3:
        return best, f"per-query rows (dim 1) over the feature dim (dim 2), batch element {worst}", worst, hist
    return best, f"spatial map (H x W) summed over {shape[1]} channels, batch element {worst}", worst, hist


def picture(
    runs: tuple[str | os.PathLike[str], str | os.PathLike[str]], compare: dict[str, Any], name_map: str | None
) -> dict[str, Any] | None:
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

        raise BridgeError(
            f"{runs[0]} / {runs[1]}: no pair {item['kind']} {item['key']} at step {item['step']} "
            f"rank {item['rank']} (give the --map the compare used)"
        )
    shape = list(pair.a_shape if pair.a_shape is not None else pair.a.shape)
    if shape != list(pair.b.shape):
        return None
    with cpu_threads(torch.device("cpu")):  # cache-sized chunks: OpenMP threads only cost (as in bridge.compare)
        m, how, worst, hist = error_map(run_a, run_b, pair, shape)
        cells = _block_sum(torch.nan_to_num(m.double(), nan=0.0, posinf=0.0))
    return {
        "key": item["key"],
        "key_a": item.get("key_a"),
        "kind": item["kind"],
        "step": item["step"],
        "rank": item["rank"],
        "shape": shape,
        "reason": item.get("reason"),
        "atol": item.get("atol"),
        "rtol": item.get("rtol"),
        "heatmap": {
            "how": how,
            "batch_element": worst,
            "rows": list(m.shape)[0],
            "cols": list(m.shape)[1],
            "cells": [[float(v) for v in row] for row in cells.tolist()],
        },
        "histogram": hist.to_dict(),
    }
