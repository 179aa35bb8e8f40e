"""Per-pair error statistics, streamed chunk by chunk and computed in float64.

For floating tensors an element passes when ``|a - b| <= atol + rtol * |b|``, evaluated
in float64 as ``|a - b| - rtol * |b| <= atol``. A NaN at
the same place on both sides, or the same infinity on both sides, counts as equal; a
non-finite value on one side only is a mismatch. The error statistics (max/mean abs,
max rel, rel L2, cosine, min_atol) are taken over the elements finite on both sides.
Integer and bool tensors compare exactly.

Each piece of PIECE elements is cast once into reused float64 rows that stay in cache;
|a - b| is formed once, two BLAS calls fold every sum in, and the per-span max |a - b|
(with min |b|) bounds the per-element maxima, so the passes for min_atol, the tolerance
count and max_rel only touch spans that could change them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch

#: Guard for the normalisers of the relative errors.
EPS: float = 1e-12
#: Elements processed at once: the four float64 scratch rows (256 KiB each) stay in L2 cache.
PIECE: int = 1 << 15
#: Stretch of a piece whose max |a - b| gates the passes for min_atol and max_rel (PIECE is a multiple).
SPAN: int = 1 << 12
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


def aligned_chunks(
    chunks_a: Iterable[torch.Tensor], chunks_b: Iterable[torch.Tensor]
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
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


class _Span:
    """Views of one stretch of the rows a, b and |a - b|."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor, d: torch.Tensor) -> None:
        self.a, self.b, self.d = a, b, d


class _Rows(_Span):
    """Views of a (4, n) float64 block: a, b, |a - b| and a row of ones, cut into spans.

    ``ab`` (rows a, b) and ``d1`` (rows |a - b|, ones) are the matrices of the BLAS calls that
    fold every sum of a piece in: ``ab @ ab.T`` and ``d1 @ |a - b|``. ``spans`` are SPAN-long
    stretches when ``n`` is a multiple of SPAN (else one span, the whole block), and
    ``d_spans``/``b_spans`` view |a - b| and b with one span per row.
    """

    def __init__(self, block: torch.Tensor) -> None:
        a, b, d, self.ones = block
        super().__init__(a, b, d)
        self.block = block
        self.ab, self.d1 = block[0:2], block[2:4]
        self.ab_t = self.ab.T
        n = block.shape[1]
        k = n // SPAN if n and n % SPAN == 0 else 1
        self.d_spans, self.b_spans = d.view(k, -1), b.view(k, -1)
        self.spans = (
            [self] if k == 1 else [_Span(a[i : i + SPAN], b[i : i + SPAN], d[i : i + SPAN]) for i in range(0, n, SPAN)]
        )

    def head(self, n: int) -> _Rows:
        """The same rows cut to their first ``n`` elements."""
        return _Rows(self.block[:, :n])


_SCRATCH: dict[torch.device, _Rows] = {}


def _scratch(device: torch.device) -> _Rows:
    """Reusable rows of PIECE elements on ``device`` (allocated once per device)."""
    rows = _SCRATCH.get(device)
    if rows is None:
        rows = _SCRATCH[device] = _Rows(torch.empty(4, PIECE, dtype=torch.float64, device=device))
        rows.ones.fill_(1.0)
    return rows


class _Accumulator:
    """Running reductions of one pair of tensors, folded in piece by piece.

    The sums (squares, dot product, absolute errors) accumulate in float64 on the device, two
    BLAS calls per piece; the maxima and counts live on the host. Each span's max |a - b| (and,
    for max_rel, its min |b|) bounds every per-element maximum there, so the passes for
    min_atol (with the tolerance count) and for max_rel run only on spans that could still
    raise them.
    """

    def __init__(self, device: torch.device, atol: float, rtol: float, exact: bool) -> None:
        self.device, self.atol, self.rtol, self.exact = device, atol, rtol, exact
        self.rows = _scratch(device)
        self.gram = torch.zeros(2, 2, dtype=torch.float64, device=device)  # [[sum a*a, sum a*b], [., sum b*b]]
        self.dsums = torch.zeros(2, dtype=torch.float64, device=device)  # [sum |a-b|^2, sum |a-b|]
        self.max_abs = self.max_excess = self.max_ratio = 0.0  # excess: |d| - rtol*|b|; ratio: max_rel / 2
        self.numel = self.finite_n = self.mismatched = self.nonfinite_mismatch = 0
        self.nan_a = self.nan_b = self.inf_a = self.inf_b = 0

    def add(self, ca: torch.Tensor, cb: torch.Tensor) -> None:
        """Fold one pair of equally long flat chunks (at most PIECE elements) into the totals."""
        n = ca.numel()
        self.numel += n
        if self.exact:
            self.mismatched += int((ca.to(self.device) != cb.to(self.device)).sum())
        rows = self.rows if n == PIECE else self.rows.head(n)
        rows.a.copy_(ca, non_blocking=True)  # transfer + cast to float64 into a reused buffer
        rows.b.copy_(cb, non_blocking=True)
        torch.sub(rows.a, rows.b, out=rows.d).abs_()
        dmax = rows.d_spans.amax(dim=1).tolist()
        if not math.isfinite(sum(dmax)):  # a NaN or Inf in the piece (or a float64 overflow)
            rows = self._split_nonfinite(rows)
            if rows.d.numel() == 0:
                return
            dmax = rows.d_spans.amax(dim=1).tolist()
        self._reduce(rows, dmax)

    def _split_nonfinite(self, rows: _Rows) -> _Rows:
        """Count NaN/Inf and one-sided non-finite mismatches; return fresh rows of the elements finite on both sides."""
        a, b = rows.a, rows.b
        fa, fb = torch.isfinite(a), torch.isfinite(b)
        na, nb = torch.isnan(a), torch.isnan(b)
        both = fa & fb
        same = (na & nb) | (~fa & ~fb & (a == b))
        counts = torch.stack([na.sum(), nb.sum(), torch.isinf(a).sum(), torch.isinf(b).sum(), (~both & ~same).sum()])
        nan_a, nan_b, inf_a, inf_b, bad = counts.tolist()
        self.nan_a, self.nan_b = self.nan_a + nan_a, self.nan_b + nan_b
        self.inf_a, self.inf_b = self.inf_a + inf_a, self.inf_b + inf_b
        self.nonfinite_mismatch += bad
        self.mismatched += bad
        fa, fb = a[both], b[both]
        return _Rows(torch.stack([fa, fb, torch.sub(fa, fb).abs_(), torch.ones_like(fa)]))

    def _reduce(self, rows: _Rows, dmax: list[float]) -> None:
        """Fold finite elements in: ``rows.d`` holds |a - b|, ``dmax`` its max per span; a and b get overwritten."""
        self.gram.addmm_(rows.ab, rows.ab_t)
        self.dsums.addmv_(rows.d1, rows.d)
        self.finite_n += rows.d.numel()
        m = max(dmax)
        self.max_abs = max(self.max_abs, m)
        b_is_abs = self.max_ratio < min(1.0, m / (2 * EPS))  # ratio <= 1 and <= |d| / (2 * EPS)
        if b_is_abs:
            self._ratio_spans(rows, dmax)
        floor = self._excess_floor()
        if m > floor:
            for span, span_max in zip(rows.spans, dmax):
                if span_max > floor:  # excess <= |d| <= span_max
                    self._excess(span.b if b_is_abs else span.b.abs_(), span.d, span.a)
                    floor = self._excess_floor()

    def _excess_floor(self) -> float:
        """A span whose max |d| is at most this can neither raise min_atol nor hold an element out of tolerance.

        (|d| - rtol*|b| <= |d| needs rtol >= 0; a negative rtol gets no floor.)
        """
        if self.rtol < 0:
            return -math.inf
        return self.max_excess if self.exact else min(self.max_excess, self.atol)

    def _ratio_spans(self, rows: _Rows, dmax: list[float]) -> None:
        """Raise the max ratio from the spans that can; ``b`` becomes |b|.

        In a span every denominator max(|a| + |b|, 2 * EPS) is at least max(min |b|, 2 * EPS), so
        no ratio there exceeds max |d| divided by that; rounding is monotonic, so the bound holds
        for the computed ratios too.
        """
        rows.b.abs_()
        min_b = rows.b_spans.amin(dim=1).tolist()
        for span, span_max, span_min_b in zip(rows.spans, dmax, min_b):
            if span_max / max(span_min_b, 2 * EPS) > self.max_ratio:
                self._ratio(span.a, span.b, span.d)

    def _excess(self, abs_b: torch.Tensor, d: torch.Tensor, out: torch.Tensor) -> None:
        """Raise max(|d| - rtol*|b|) (min_atol) and count the elements above atol; ``out`` is overwritten."""
        excess = torch.add(d, abs_b, alpha=-self.rtol, out=out)
        emax = float(excess.amax())
        self.max_excess = max(self.max_excess, emax)
        if not self.exact and emax > self.atol:  # only count when something fails
            self.mismatched += int((excess > self.atol).sum())

    def _ratio(self, a: torch.Tensor, abs_b: torch.Tensor, d: torch.Tensor) -> None:
        """Raise max(|d| / max(|a| + |b|, 2 * EPS)), half of max_rel; ``a`` is overwritten."""
        norm = a.abs_().add_(abs_b).clamp_(min=2 * EPS)  # 2 * max((|a|+|b|)/2, eps)
        self.max_ratio = max(self.max_ratio, float(torch.div(d, norm, out=norm).amax()))

    def result(self) -> NumericStats:
        """Finish: one host synchronisation, then plain Python numbers."""
        ss_a, dot, _, ss_b, ss_d, sum_abs = torch.cat([self.gram.reshape(-1), self.dsums]).tolist()
        na, nb = math.sqrt(ss_a), math.sqrt(ss_b)
        if na == 0.0 and nb == 0.0:
            cosine = 1.0
        elif na == 0.0 or nb == 0.0:
            cosine = 0.0
        else:
            cosine = max(-1.0, min(1.0, dot / (na * nb)))
        return NumericStats(
            numel=self.numel,
            max_abs=self.max_abs,
            mean_abs=sum_abs / self.finite_n if self.finite_n else 0.0,
            max_rel=2 * self.max_ratio,
            rel_l2=math.sqrt(ss_d) / max(nb, EPS),
            cosine=cosine,
            mismatched=self.mismatched,
            nan_a=self.nan_a,
            nan_b=self.nan_b,
            inf_a=self.inf_a,
            inf_b=self.inf_b,
            min_atol=math.inf if self.nonfinite_mismatch else self.max_excess,
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
    with torch.inference_mode():  # no autograd bookkeeping: it costs more than the work on small pieces
        acc = _Accumulator(torch.device(device), atol, rtol, exact)
        for ca, cb in aligned_chunks(chunks_a, chunks_b):
            for pa, pb in zip(ca.split(PIECE), cb.split(PIECE)):
                acc.add(pa, pb)
        return acc.result()
