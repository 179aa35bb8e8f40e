"""Pair the keys of two state dicts (or key manifests) for a rule draft: shapes, name tokens, order, aliases.

Pairing is a monotone alignment of the two ordered key lists (both frameworks list parameters in module
registration order), scored by shape compatibility, the last name part (``weight``, ``running_var``) and a
token similarity of the names; a second alignment of the keys left over pairs blocks that the two models
register in a different order.  The token similarity is computed twice: the second time a source token also
counts as the target tokens it was paired with in the first alignment (``res`` -> ``layer``, ``norm`` -> ``bn``),
so that correspondences are learned from the confident pairs.  Shapes must be equal, or differ only in a
leading number of class rows (91/92/81/80/133/134 against each other): a class-row candidate.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import numpy as np
import torch

#: Leading sizes that are numbers of class rows (COCO ids, + background/no-object, contiguous, panoptic).
CLASS_ROW_SIZES = frozenset({80, 81, 91, 92, 133, 134})
_TOKEN_RE = re.compile(r"[A-Za-z]+|\d+")
_NEG = -1e9
#: Below this a pair is not worth aligning (shape and last name part alone score 0.4).
_MATCH_FLOOR = 0.35
#: Among the keys left over after the first alignment, names less alike than this never pair.
_MIN_SIMILARITY = 0.1
#: Score taken off a key whose equal-tensor twin is already paired.
_ALIAS_PENALTY = 0.15
#: A pair whose name similarity is below this is reported as low confidence.
LOW_CONFIDENCE = 0.5


@dataclass
class Side:
    """One side of the draft: ordered keys, their shapes and (when a checkpoint was given) their tensors."""

    shapes: dict[str, tuple[int, ...]]
    tensors: dict[str, torch.Tensor] | None = None

    @property
    def keys(self) -> list[str]:
        """Keys in file order."""
        return list(self.shapes)


@dataclass
class Pairing:
    """Pairs ``source key -> target key`` with a confidence in [0, 1], aliases, and what stays unpaired."""

    pairs: dict[str, str] = field(default_factory=dict)
    confidence: dict[str, float] = field(default_factory=dict)
    class_rows: set[str] = field(default_factory=set)  # source keys paired across a class-row count change
    aliases: dict[str, str] = field(default_factory=dict)  # dropped source key -> source key it equals
    zero: set[str] = field(default_factory=set)  # unpaired source keys whose tensor is all zeros
    unpaired_source: list[str] = field(default_factory=list)
    unpaired_target: list[str] = field(default_factory=list)
    candidates: dict[str, list[tuple[str, float]]] = field(default_factory=dict)  # unpaired key -> best 3


def tokens(key: str) -> list[str]:
    """Name tokens of ``key``: alphabetic runs and numbers (``res2.0.conv1`` -> res, 2, 0, conv, 1)."""
    return _TOKEN_RE.findall(key)


def leaf(key: str) -> str:
    """The last dotted part of ``key`` (``weight``, ``bias``, ``running_var``, ``level_embed``)."""
    return key.rsplit(".", 1)[-1]


def class_row_compatible(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    """True when ``a`` and ``b`` differ only in a leading class-row count (e.g. 91 x 256 against 80 x 256)."""
    return (
        len(a) == len(b) >= 1
        and a[0] != b[0]
        and a[0] in CLASS_ROW_SIZES
        and b[0] in CLASS_ROW_SIZES
        and a[1:] == b[1:]
    )


def _features(keys: list[str], extra: dict[str, list[str]] | None) -> list[Counter[str]]:
    feats: list[Counter[str]] = []
    for key in keys:
        toks = tokens(key)
        words = [t for t in toks if not t.isdigit()]
        bag: Counter[str] = Counter(words)
        bag.update(f"{a}~{b}" for a, b in zip(toks, toks[1:]))
        bag.update(f"#{t}" for t in toks if t.isdigit())
        for word in words:
            for other in (extra or {}).get(word, ()):
                bag[other] += 1
        feats.append(bag)
    return feats


def _similarity(src: list[str], tgt: list[str], extra: dict[str, list[str]] | None) -> np.ndarray:
    """Cosine similarity of IDF-weighted token bags, source keys x target keys."""
    fs, ft = _features(src, extra), _features(tgt, None)
    vocab: dict[str, int] = {}
    for bag in fs + ft:
        for tok in bag:
            vocab.setdefault(tok, len(vocab))
    df = np.zeros(len(vocab))
    for bag in fs + ft:
        for tok in bag:
            df[vocab[tok]] += 1
    idf = np.log((len(fs) + len(ft) + 1) / (df + 1)) + 1.0

    def matrix(bags: list[Counter[str]]) -> np.ndarray:
        out = np.zeros((len(bags), len(vocab)))
        for i, bag in enumerate(bags):
            for tok, n in bag.items():
                out[i, vocab[tok]] = n * idf[vocab[tok]]
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)

    return matrix(fs) @ matrix(ft).T


def _compatibility(src: Side, tgt: Side, skeys: list[str], tkeys: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(shape score, class-row mask): 1 for equal shapes, 0.5 for class-row candidates, -inf otherwise."""
    shape_ids: dict[tuple[int, ...], int] = {}
    sid = np.array([shape_ids.setdefault(src.shapes[k], len(shape_ids)) for k in skeys])
    tid = np.array([shape_ids.setdefault(tgt.shapes[k], len(shape_ids)) for k in tkeys])
    equal = sid[:, None] == tid[None, :]
    rows = np.zeros_like(equal)
    shapes = list(shape_ids)
    for a in set(sid.tolist()):
        for b in set(tid.tolist()):
            if class_row_compatible(shapes[a], shapes[b]):
                rows |= (sid[:, None] == a) & (tid[None, :] == b)
    score = np.where(equal, 1.0, np.where(rows, 0.5, _NEG))
    return score, rows


def _align(score: np.ndarray) -> list[tuple[int, int]]:
    """Maximum-weight monotone matching of rows to columns (pairs with a positive score only)."""
    n, m = score.shape
    gain = np.where(score > 0, score, _NEG)
    table = np.zeros((n + 1, m + 1))
    for i in range(1, n + 1):
        best = np.maximum(table[i - 1, :-1] + gain[i - 1], table[i - 1, 1:])
        table[i, 1:] = np.maximum.accumulate(best)
    pairs: list[tuple[int, int]] = []
    i, j = n, m
    while i > 0 and j > 0:
        if table[i, j] == table[i, j - 1]:
            j -= 1
        elif table[i, j] == table[i - 1, j]:
            i -= 1
        else:
            pairs.append((i - 1, j - 1))
            i, j = i - 1, j - 1
    return pairs[::-1]


def _scores(
    src: Side, tgt: Side, skeys: list[str], tkeys: list[str], extra: dict[str, list[str]] | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(alignment score, name similarity, class-row mask) of every source x target key."""
    sim = _similarity(skeys, tkeys, extra)
    shape, rows = _compatibility(src, tgt, skeys, tkeys)
    sleaf = np.array([leaf(k) for k in skeys], dtype=object)
    tleaf = np.array([leaf(k) for k in tkeys], dtype=object)
    same_leaf = (sleaf[:, None] == tleaf[None, :]).astype(float)
    score = 0.6 * sim + 0.3 * same_leaf + 0.1 * shape
    if src.tensors is not None and tgt.tensors is not None:
        score += 2.0 * _equal_tensors(src.tensors, tgt.tensors, skeys, tkeys)
    score = np.where(shape > _NEG / 2, score - _MATCH_FLOOR, _NEG)
    return score, sim, rows


def _sample(t: torch.Tensor) -> torch.Tensor:
    """Up to 64 evenly spaced elements of ``t`` (flattened): a cheap first look at its values."""
    flat = t.detach().reshape(-1)
    step = max(1, flat.numel() // 64)
    return flat[::step][:64]


def _fingerprint(t: torch.Tensor) -> tuple:
    return (tuple(t.shape), str(t.dtype), tuple(_sample(t).double().tolist()))


def _is_constant(t: torch.Tensor) -> bool:
    sample = _sample(t)
    if sample.numel() <= 1:
        return True
    if not bool((sample == sample[0]).all()):
        return False
    flat = t.detach().reshape(-1)
    return bool((flat == flat[0]).all())


def _equal_tensors(
    a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], akeys: list[str], bkeys: list[str]
) -> np.ndarray:
    """1 where the two (non-constant) tensors are equal, else 0."""
    out = np.zeros((len(akeys), len(bkeys)))
    index: dict[tuple, list[int]] = defaultdict(list)
    for j, k in enumerate(bkeys):
        if not _is_constant(b[k]):
            index[_fingerprint(b[k])].append(j)
    for i, k in enumerate(akeys):
        if _is_constant(a[k]):
            continue
        for j in index.get(_fingerprint(a[k]), ()):
            if _same(a[k], b[bkeys[j]]):
                out[i, j] = 1.0
    return out


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal tensors; views of the same memory are equal without reading them."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.data_ptr() == b.data_ptr() and a.stride() == b.stride():
        return True
    return torch.equal(a, b)


def alias_groups(tensors: dict[str, torch.Tensor]) -> dict[str, list[str]]:
    """Keys whose (non-constant) tensors are equal, grouped: first key in file order -> all keys of the group."""
    buckets: dict[tuple, list[str]] = defaultdict(list)
    for key, t in tensors.items():
        if not _is_constant(t):
            buckets[_fingerprint(t)].append(key)
    groups: dict[str, list[str]] = {}
    for keys in buckets.values():
        while len(keys) > 1:
            first, rest = keys[0], keys[1:]
            same = [k for k in rest if _same(tensors[first], tensors[k])]
            if same:
                groups[first] = [first] + same
            keys = [k for k in rest if k not in same]
    return groups


def _learned_tokens(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    """Source word -> target words it was paired with in most pairs, where the target lacks the source word."""
    seen: Counter[str] = Counter()
    together: dict[str, Counter[str]] = defaultdict(Counter)
    for s, t in pairs:
        sw = {x for x in tokens(s) if not x.isdigit()}
        tw = {x for x in tokens(t) if not x.isdigit()}
        for word in sw - tw:
            seen[word] += 1
            together[word].update(tw - sw)
    learned: dict[str, list[str]] = {}
    for word, n in seen.items():
        best = [other for other, c in together[word].items() if c >= max(2, 0.8 * n)]
        if best:
            learned[word] = best
    return learned


def _align_all(
    src: Side, tgt: Side, extra: dict[str, list[str]] | None, alias_of: dict[str, list[str]], progress
) -> tuple[dict[str, str], dict[str, float], set[str]]:
    """Align the keys, then the keys left over, up to four rounds; a key whose equal twin is paired already
    counts less in later rounds (it is more likely an alias than the key a target is still waiting for)."""
    pairs: dict[str, str] = {}
    conf: dict[str, float] = {}
    rows: set[str] = set()
    skeys, tkeys = src.keys, tgt.keys
    for round_ in range(4):
        if not skeys or not tkeys:
            break
        score, sim, rowmask = _scores(src, tgt, skeys, tkeys, extra)
        if round_:
            score = np.where(sim >= _MIN_SIMILARITY, score, _NEG)
        twin = np.array([any(k in pairs for k in alias_of.get(s, ())) for s in skeys])
        score = score - _ALIAS_PENALTY * twin[:, None]
        found = _align(score)
        sim = np.where(score > _NEG / 2, sim, -1.0)  # margins among shape-compatible candidates only
        progress(f"alignment {round_ + 1}: {len(found)} pairs")
        if not found:
            break
        for i, j in found:
            s, t = skeys[i], tkeys[j]
            pairs[s] = t
            margin = min(_margin(sim[i], j), _margin(sim[:, j], i))
            conf[s] = float(min(1.0, sim[i, j] * 0.7 + 0.3 * margin))
            if rowmask[i, j]:
                rows.add(s)
        used_s = {skeys[i] for i, _ in found}
        used_t = {tkeys[j] for _, j in found}
        skeys = [k for k in skeys if k not in used_s]
        tkeys = [k for k in tkeys if k not in used_t]
    return pairs, conf, rows


def _margin(values: np.ndarray, best: int) -> float:
    """How far ``values[best]`` stands above the next best value (0..1)."""
    if values.size < 2:
        return 1.0
    others = np.delete(values, best)
    return float(max(0.0, min(1.0, (values[best] - others.max()) * 4 + 0.5)))


def _shared_parts(a: str, b: str) -> tuple[int, int]:
    """(common trailing dotted parts, common leading dotted parts) of two names."""
    pa, pb = a.split("."), b.split(".")
    tail = next((n for n in range(min(len(pa), len(pb))) if pa[-1 - n] != pb[-1 - n]), min(len(pa), len(pb)))
    head = next((n for n in range(min(len(pa), len(pb))) if pa[n] != pb[n]), min(len(pa), len(pb)))
    return tail, head


def _block(key: str) -> str:
    """The block a key belongs to for reordering: its first two dotted parts, numbers dropped."""
    return ".".join(re.sub(r"\d+", "", p) for p in key.split(".")[:2])


def _runs(keys: list[str], block) -> list[list[int]]:
    """Indices of ``keys`` cut into runs of consecutive keys with the same ``block(key)``."""
    runs: list[list[int]] = []
    for j, key in enumerate(keys):
        if runs and block(keys[runs[-1][0]]) == block(key):
            runs[-1].append(j)
        else:
            runs.append([j])
    return runs


def _reordered(tgt: Side, runs: list[list[int]], anchor: np.ndarray, fallback: np.ndarray | None) -> Side:
    """``tgt`` with each run at the median of its anchors (or of ``fallback``, or right after the run before)."""
    tkeys = tgt.keys
    position, last = [], -1.0
    for n, run in enumerate(runs):
        found = anchor[run][~np.isnan(anchor[run])]
        if not found.size and fallback is not None:
            found = fallback[run][~np.isnan(fallback[run])]
        last = float(np.median(found)) if found.size else last + 1e-6
        position.append((last, n))
    order = [j for _, n in sorted(position) for j in runs[n]]
    return Side({tkeys[j]: tgt.shapes[tkeys[j]] for j in order}, tgt.tensors)


def follow_source_order(src: Side, tgt: Side) -> Side:
    """``tgt`` reordered so that one monotone alignment fits models that register the same parts in another
    order: first its blocks (runs sharing the first two dotted parts; mmdet's DINO has the neck after the
    backbone, the heads before encoder and decoder) at the median source position of their anchors (keys whose
    shape occurs once on each side, or with a name similarity >= 0.5; else their best shape-compatible
    matches); then its modules (mmdet's decoder layer: self-attention before cross-attention), moved only
    where a name match is clear (similarity >= 0.6, 0.15 above the next candidate)."""
    skeys = src.keys
    score, sim, _ = _scores(src, tgt, skeys, tgt.keys, None)
    compatible = score > _NEG / 2
    best = np.argmax(np.where(compatible, score, -np.inf), axis=0).astype(float)
    best[~compatible.any(axis=0)] = np.nan
    named = np.where(compatible, sim, -1.0)
    anchor = np.where(named.max(axis=0) >= 0.5, np.argmax(named, axis=0), np.nan).astype(float)
    scount, tcount = Counter(src.shapes.values()), Counter(tgt.shapes.values())
    where = {src.shapes[k]: i for i, k in enumerate(skeys) if scount[src.shapes[k]] == 1}
    for j, key in enumerate(tgt.keys):
        shape = tgt.shapes[key]
        if tcount[shape] == 1 and shape in where:
            anchor[j] = where[shape]
    coarse = _reordered(tgt, _runs(tgt.keys, _block), anchor, best)
    score, sim, _ = _scores(src, coarse, skeys, coarse.keys, None)
    named = np.where(score > _NEG / 2, sim, -1.0)
    top = np.sort(named, axis=0)
    clear = (top[-1] >= 0.6) & (top[-1] - (top[-2] if len(skeys) > 1 else -1.0) >= 0.15)
    sure = np.where(clear, np.argmax(named, axis=0), np.nan).astype(float)
    return _reordered(coarse, _runs(coarse.keys, lambda k: k.rsplit(".", 1)[0]), sure, None)


def pair_keys(src: Side, tgt: Side, progress=lambda _msg: None) -> Pairing:
    """Pair ``src`` keys with ``tgt`` keys; the source keys equal to a paired one become aliases."""
    original = tgt
    tgt = follow_source_order(src, tgt)
    groups = alias_groups(src.tensors) if src.tensors is not None else {}
    alias_of: dict[str, list[str]] = {}
    for members in groups.values():
        for k in members:
            alias_of[k] = members
    first, _, _ = _align_all(src, tgt, None, alias_of, progress)
    learned = _learned_tokens([(s, t) for s, t in first.items()])
    progress(f"learned token correspondences: {len(learned)}")
    # an alias group pairs as many keys as the target has places for; the rest are dropped as aliases
    pairs, conf, rows = _align_all(src, tgt, learned, alias_of, progress)
    out = Pairing(pairs=pairs, confidence=conf, class_rows=rows)
    for s in src.keys:
        if s in pairs:
            continue
        kept = max(
            (k for k in alias_of.get(s, ()) if k in pairs and k != s), key=lambda k: _shared_parts(s, k), default=None
        )
        if kept is not None:
            out.aliases[s] = kept
        elif src.tensors is not None and src.tensors[s].numel() and not bool(src.tensors[s].count_nonzero()):
            out.zero.add(s)
            out.unpaired_source.append(s)
        else:
            out.unpaired_source.append(s)
    paired_t = set(pairs.values())
    out.unpaired_target = [t for t in original.keys if t not in paired_t]
    _candidates(src, tgt, out, learned)
    return out


def _candidates(src: Side, tgt: Side, out: Pairing, learned: dict[str, list[str]]) -> None:
    """The three best candidates (any shape) of every unpaired key, by name similarity."""
    if out.unpaired_source:
        sim = _similarity(out.unpaired_source, tgt.keys, learned)
        for i, key in enumerate(out.unpaired_source):
            order = np.argsort(-sim[i])[:3]
            out.candidates[key] = [(tgt.keys[j], round(float(sim[i, j]), 3)) for j in order]
    if out.unpaired_target:
        sim = _similarity(src.keys, out.unpaired_target, learned)
        for j, key in enumerate(out.unpaired_target):
            order = np.argsort(-sim[:, j])[:3]
            out.candidates[key] = [(src.keys[i], round(float(sim[i, j]), 3)) for i in order]
