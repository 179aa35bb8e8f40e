"""Streaming statistics agree with a direct numpy float64 computation, whatever the chunking."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.compare.stats import EPS, tensor_stats

FLOATS = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, width=32)


def reference(a: np.ndarray, b: np.ndarray, atol: float, rtol: float) -> dict[str, float]:
    a, b = a.astype(np.float64), b.astype(np.float64)
    d = np.abs(a - b)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    cos = 1.0 if na == 0 and nb == 0 else (0.0 if na == 0 or nb == 0 else float(a @ b / (na * nb)))
    return {
        "max_abs": float(d.max()),
        "mean_abs": float(d.mean()),
        "max_rel": float((d / np.maximum((np.abs(a) + np.abs(b)) / 2, EPS)).max()),
        "rel_l2": float(np.linalg.norm(a - b) / max(nb, EPS)),
        "cosine": cos,
        "mismatched": int((d - rtol * np.abs(b) > atol).sum()),
        "min_atol": float(max(0.0, (d - rtol * np.abs(b)).max())),
    }


def chunks(x: torch.Tensor, rows: int) -> list[torch.Tensor]:
    return [x[i : i + rows] for i in range(0, x.shape[0], rows)]


@settings(max_examples=60, deadline=None)
@given(
    data=st.lists(st.tuples(FLOATS, FLOATS), min_size=1, max_size=60),
    rows_a=st.integers(1, 7),
    rows_b=st.integers(1, 7),
    atol=st.sampled_from([0.0, 1e-5, 0.5]),
    rtol=st.sampled_from([0.0, 1.3e-6, 0.1]),
)
def test_stats_match_numpy(data: list[tuple[float, float]], rows_a: int, rows_b: int, atol: float, rtol: float) -> None:
    a = np.array([x for x, _ in data], dtype=np.float32)
    b = np.array([y for _, y in data], dtype=np.float32)
    ta, tb = torch.from_numpy(a).reshape(-1, 1), torch.from_numpy(b).reshape(-1, 1)
    got = tensor_stats(chunks(ta, rows_a), chunks(tb, rows_b), atol=atol, rtol=rtol)
    ref = reference(a, b, atol, rtol)
    assert got.numel == len(data) and got.mismatched == ref["mismatched"]
    for k in ("max_abs", "mean_abs", "max_rel", "rel_l2", "cosine", "min_atol"):
        assert getattr(got, k) == pytest.approx(ref[k], rel=1e-9, abs=1e-12), k


@settings(max_examples=30, deadline=None)
@given(
    data=st.lists(
        st.tuples(
            st.sampled_from([0.0, 1.0, float("nan"), float("inf"), -float("inf")]),
            st.sampled_from([0.0, 1.0, float("nan"), float("inf"), -float("inf")]),
        ),
        min_size=1,
        max_size=20,
    ),
    rows=st.integers(1, 5),
)
def test_nonfinite_counts(data: list[tuple[float, float]], rows: int) -> None:
    a = torch.tensor([x for x, _ in data], dtype=torch.float32)
    b = torch.tensor([y for _, y in data], dtype=torch.float32)
    got = tensor_stats(chunks(a, rows), chunks(b, 3), atol=1e-5, rtol=0.0)
    an, bn = a.numpy(), b.numpy()
    same = (np.isnan(an) & np.isnan(bn)) | (an == bn)
    assert got.mismatched == int((~same).sum())
    assert (got.nan_a, got.nan_b) == (int(np.isnan(an).sum()), int(np.isnan(bn).sum()))
    assert (got.inf_a, got.inf_b) == (int(np.isinf(an).sum()), int(np.isinf(bn).sum()))


@given(x=st.lists(st.integers(-(2**40), 2**40), min_size=1, max_size=30), rows=st.integers(1, 4))
@settings(max_examples=30, deadline=None)
def test_int_exact(x: list[int], rows: int) -> None:
    a = torch.tensor(x, dtype=torch.int64)
    b = a.clone()
    b[len(x) // 2] += 1
    got = tensor_stats(chunks(a, rows), chunks(b, rows), atol=0.0, rtol=0.0, exact=True)
    assert got.mismatched == 1 and got.max_abs == 1.0


def test_many_pieces_match_numpy() -> None:
    """A tensor spanning several PIECE-sized pieces and read chunks, with a few outliers and a NaN pair."""
    g = torch.Generator().manual_seed(1)
    a = torch.randn(5, 61_000, generator=g)
    b = a + torch.randn(5, 61_000, generator=g) * 1e-6
    b[3, 17] += 0.5
    b[0, 5] = a[0, 5] = float("nan")
    got = tensor_stats(chunks(a, 2), chunks(b, 3), atol=1e-5, rtol=1.3e-6)
    an, bn = a.numpy().ravel(), b.numpy().ravel()
    keep = ~np.isnan(an)
    ref = reference(an[keep], bn[keep], 1e-5, 1.3e-6)
    assert got.numel == a.numel() and got.nan_a == got.nan_b == 1 and got.mismatched == ref["mismatched"] >= 1
    for k in ("max_abs", "mean_abs", "max_rel", "rel_l2", "cosine", "min_atol"):
        assert getattr(got, k) == pytest.approx(ref[k], rel=1e-9, abs=1e-12), k


@pytest.mark.parametrize(("atol", "rtol"), [(1e-5, 1.3e-6), (0.0, 0.0), (1e-5, -1e-3)])
def test_skipped_spans_keep_maxima_exact(atol: float, rtol: float) -> None:
    """Spans that their bounds rule out are skipped; later maxima that beat the running ones by little still count."""
    g = torch.Generator().manual_seed(2)
    a = 1 + torch.rand(3, 70_000, generator=g)  # positive: no sign flip pins max_rel at 2
    b = a + (torch.rand(3, 70_000, generator=g) - 0.5) * 2e-6
    a[0, 0], b[0, 0] = 1.0, 1.0 + 3e-6  # an early excess |d| - rtol*|b| far above the rest
    a[1, 40_000], b[1, 40_000] = 0.01, 0.01 + 2e-6  # beats it by ~10%, and sets the max relative error
    a[2, 69_990], b[2, 69_990] = 0.001, 0.001 + 2.2e-7  # beats that by ~10%, in the last span
    got = tensor_stats(chunks(a, 1), chunks(b, 2), atol=atol, rtol=rtol)
    ref = reference(a.numpy().ravel(), b.numpy().ravel(), atol, rtol)
    assert got.mismatched == ref["mismatched"]
    for k in ("max_abs", "mean_abs", "max_rel", "rel_l2", "cosine", "min_atol"):
        assert getattr(got, k) == pytest.approx(ref[k], rel=1e-9, abs=1e-12), k
