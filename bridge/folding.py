"""Folding of layer indices in key lists: ``layers.{0..8}.norm1.weight``, one definition for every report
(the converter's tables, initcheck's rows, compare's terminal table)."""

from __future__ import annotations

import re


def index_token(nums: list[int]) -> str:
    """The folded form of the indices ``nums`` (in the order given): ``{a..b}`` for an ascending run of
    consecutive integers, else ``{a,b,c}``; a single index as itself."""
    if len(nums) == 1:
        return str(nums[0])
    if nums == list(range(nums[0], nums[0] + len(nums))):
        return "{%d..%d}" % (nums[0], nums[-1])
    return "{" + ",".join(str(n) for n in nums) + "}"


def fold_keys(keys: list[str]) -> list[str]:
    """Fold keys that differ only in numeric components: ``layers.{0..8}.norm1.weight``."""
    rows: list[list[str]] = [k.split(".") for k in keys]
    max_len = max((len(r) for r in rows), default=0)
    for pos in range(max_len - 1, -1, -1):
        groups: dict[tuple, list[int]] = {}
        order: list[tuple] = []
        passthrough: list[list[str]] = []
        for r in rows:
            if pos < len(r) and r[pos].isascii() and r[pos].isdigit():
                sig = tuple(r[:pos]) + ("\0",) + tuple(r[pos + 1 :])
                if sig not in groups:
                    groups[sig] = []
                    order.append(sig)
                groups[sig].append(int(r[pos]))
            else:
                passthrough.append(r)
        folded = []
        for sig in order:
            token = index_token(sorted(set(groups[sig])))
            idx = sig.index("\0")
            folded.append(list(sig[:idx]) + [token] + list(sig[idx + 1 :]))
        rows = passthrough + folded
    return sorted(".".join(r) for r in rows)


def matches_folded(key: str, folded: str) -> bool:
    """True when ``key`` is one of the keys the folded name ``folded`` stands for."""
    pattern = re.escape(folded)  # a fold {0..8} / {1,3} matches a number; a key's own braces match themselves
    pattern = re.sub(r"\\\{[0-9.,\\]+\\\}", lambda m: r"(?:\d+|" + m.group(0) + ")", pattern)
    return re.fullmatch(pattern, key) is not None
