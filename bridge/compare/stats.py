"""Per-pair error statistics, streamed chunk by chunk with float64 accumulation.

For floating tensors an element passes when ``|a - b| <= atol + rtol * |b|``, evaluated
in float64 as ``|a - b| - rtol * |b| <= atol``. A NaN at
the same place on both sides, or the same infinity on both sides, counts as equal; a
non-finite value on one side only is a mismatch. The error statistics (max/mean abs,
max rel, rel L2, cosine, min_atol) are taken over the elements finite on both sides.
Integer and bool tensors compare exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch

#: Guard for the normalisers of the relative errors.
EPS: float = 1e-12
#: Elements processed at once: four float64 scratch buffers of 256 KiB stay in cache.
PIECE: int = 1 << 15
#: Target elements per chunk read from a run (Run.tensor_slices rows are chosen to match).
READ_ELEMS: int = 1 << 22


@dataclass
class NumericStats:
    """Statistics of one pair of tensors (or numeric scalars)."""

    numel: int = 0
    max_abs: float = 0.0
    mean_abs: float = 0.0
    max_rel: float = 0.0
    rel_l2: float = 0.0
    cosine: float = 1.0
    mismatched: int = 0
    nan_a: int = 0
    nan_b: int = 0
    inf_a: int = 0
    inf_b: int = 0
    min_atol: float = 0.0  # math.inf when a non-finite mismatch makes every atol fail

    @property
    def mismatched_share(self) -> float:
        """Fraction of elements out of tolerance (0 for empty tensors)."""
        return self.mismatched / self.numel if self.numel else 0.0


def aligned_chunks(chunks_a: Iterable[torch.Tensor], chunks_b: Iterable[torch.Tensor]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield flat, equally long pieces of two element streams whose chunk boundaries may differ."""
    it_a, it_b = iter(chunks_a), iter(chunks_b)
    buf_a = buf_b = None
    while True:
        if buf_a is None or buf_a.numel() == 0:
            buf_a = next(it_a, None)
            buf_a = None if buf_a is None else buf_a.reshape(-1)
        if buf_b is None or buf_b.numel() == 0:
            buf_b = next(it_b, None)
            buf_b = None if buf_b is None else buf_b.reshape(-1)
        if buf_a is None or buf_b is None:
            if (buf_a is not None and buf_a.numel()) or (buf_b is not None and buf_b.numel()):
                raise ValueError("element streams have different lengths")
            return
        n = min(buf_a.numel(), buf_b.numel())
        if n:
            yield buf_a[:n], buf_b[:n]
        buf_a, buf_b = buf_a[n:], buf_b[n:]


_WORK: dict[torch.device, list[torch.Tensor]] = {}


def _work(device: torch.device, n: int) -> list[torch.Tensor]:
    """Four reusable float64 scratch buffers of at least ``n`` elements on ``device``."""
    bufs = _WORK.get(device)
    if bufs is None or bufs[0].numel() < n:
        bufs = [torch.empty(max(n, PIECE), dtype=torch.float64, device=device) for _ in range(4)]
        _WORK[device] = bufs
    return bufs


class _Accumulator:
    """Running float64 reductions kept on the device (one host sync at the end)."""

    def __init__(self, device: torch.device, atol: float, rtol: float, exact: bool) -> None:
        self.device, self.atol, self.rtol, self.exact = device, atol, rtol, exact
        z = lambda: torch.zeros((), dtype=torch.float64, device=device)  # noqa: E731
        self.max_abs, self.sum_abs, self.max_rel, self.min_atol = z(), z(), z(), z()
        self.ss_d, self.ss_a, self.ss_b, self.dot = z(), z(), z(), z()
        zi = lambda: torch.zeros((), dtype=torch.int64, device=device)  # noqa: E731
        self.mismatched, self.nan_a, self.nan_b, self.inf_a, self.inf_b, self.finite_n = zi(), zi(), zi(), zi(), zi(), zi()
        self.numel = 0
        self.nonfinite_mismatch = zi()

    def add(self, ca: torch.Tensor, cb: torch.Tensor) -> None:
        """Fold one pair of equally long flat chunks (at most PIECE elements) into the totals."""
        n = ca.numel()
        self.numel += n
        if self.exact:
            self.mismatched += (ca.to(self.device) != cb.to(self.device)).sum()
        a, b, ad, t = (buf[:n] for buf in _work(self.device, n))
        a.copy_(ca, non_blocking=True)  # transfer + cast to float64 into a reused buffer
        b.copy_(cb, non_blocking=True)
        torch.sub(a, b, out=ad).abs_()
        m = torch.amax(ad)
        if not self.exact and not bool(torch.isfinite(m)):
            a, b, ad = self._split_nonfinite(a, b)
            if a.numel() == 0:
                return
            t = torch.empty_like(ad)
            m = torch.amax(ad)
        self.finite_n += a.numel()
        self._reduce(a, b, ad, t, m)

    def _split_nonfinite(self, a: torch.Tensor, b: torch.Tensor):
        fa, fb = torch.isfinite(a), torch.isfinite(b)
        na, nb = torch.isnan(a), torch.isnan(b)
        self.nan_a += na.sum()
        self.nan_b += nb.sum()
        self.inf_a += torch.isinf(a).sum()
        self.inf_b += torch.isinf(b).sum()
        both = fa & fb
        same = (na & nb) | (~fa & ~fb & (a == b))
        bad = (~both & ~same).sum()
        self.nonfinite_mismatch += bad
        self.mismatched += bad
        a, b = a[both], b[both]
        return a, b, (a - b).abs_()

    def _reduce(self, a: torch.Tensor, b: torch.Tensor, ad: torch.Tensor, t: torch.Tensor, m: torch.Tensor) -> None:
        """Reductions over finite elements; ``a`` and ``b`` are overwritten, ``t`` is scratch."""
        torch.maximum(self.max_abs, m, out=self.max_abs)
        self.sum_abs += ad.sum()
        self.ss_d += torch.dot(ad, ad)
        self.ss_a += torch.dot(a, a)
        self.ss_b += torch.dot(b, b)
        self.dot += torch.dot(a, b)
        abs_b = b.abs_()
        excess = torch.add(ad, abs_b, alpha=-self.rtol, out=t)  # |a-b| - rtol*|b|
        emax = torch.amax(excess)
        torch.maximum(self.min_atol, emax, out=self.min_atol)
        if not self.exact and bool(emax > self.atol):  # only count when something fails
            self.mismatched += (excess > self.atol).sum()
        norm = a.abs_().add_(abs_b).clamp_(min=2 * EPS)  # 2 * max((|a|+|b|)/2, eps)
        torch.maximum(self.max_rel, torch.amax(torch.div(ad, norm, out=t)) * 2, out=self.max_rel)

    def result(self) -> NumericStats:
        """Finish: one host synchronisation, then plain Python numbers."""
        vals = torch.stack([
            self.max_abs, self.sum_abs, self.max_rel, self.min_atol, self.ss_d, self.ss_a, self.ss_b, self.dot,
        ]).tolist()
        ints = torch.stack([
            self.mismatched, self.nan_a, self.nan_b, self.inf_a, self.inf_b, self.finite_n, self.nonfinite_mismatch,
        ]).tolist()
        max_abs, sum_abs, max_rel, min_atol, ss_d, ss_a, ss_b, dot = vals
        mismatched, nan_a, nan_b, inf_a, inf_b, finite_n, nf_bad = ints
        na, nb = math.sqrt(ss_a), math.sqrt(ss_b)
        if na == 0.0 and nb == 0.0:
            cosine = 1.0
        elif na == 0.0 or nb == 0.0:
            cosine = 0.0
        else:
            cosine = max(-1.0, min(1.0, dot / (na * nb)))
        return NumericStats(
            numel=self.numel,
            max_abs=max_abs,
            mean_abs=sum_abs / finite_n if finite_n else 0.0,
            max_rel=max_rel,
            rel_l2=math.sqrt(ss_d) / max(nb, EPS),
            cosine=cosine,
            mismatched=int(mismatched),
            nan_a=int(nan_a),
            nan_b=int(nan_b),
            inf_a=int(inf_a),
            inf_b=int(inf_b),
            min_atol=math.inf if nf_bad else max(0.0, min_atol),
        )


def tensor_stats(
    chunks_a: Iterable[torch.Tensor],
    chunks_b: Iterable[torch.Tensor],
    *,
    atol: float,
    rtol: float,
    exact: bool = False,
    device: torch.device | str = "cpu",
) -> NumericStats:
    """Stream two same-shaped tensors (as chunks) and return their :class:`NumericStats`.

    ``exact`` (integers, bool) counts ``a != b`` as mismatches instead of the tolerance test.
    """
    acc = _Accumulator(torch.device(device), atol, rtol, exact)
    for ca, cb in aligned_chunks(chunks_a, chunks_b):
        for start in range(0, ca.numel(), PIECE):
            acc.add(ca[start:start + PIECE], cb[start:start + PIECE])
    return acc.result()
