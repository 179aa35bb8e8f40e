"""Name rules: what a key becomes (renamed, split, merged, dropped, an alias dropped), and back."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from bridge.convert.inverse import NotInvertible
from bridge.convert.kinds.base import Inversion, NameRule
from bridge.convert.templates import (
    MAX_DIM,
    MAX_ELEMENTS,
    Template,
    compile_regex,
    compile_template,
    int_field,
    int_list,
)
from bridge.errors import ConversionError


@dataclass(frozen=True, kw_only=True)
class Rename(NameRule):
    """``{kind: rename, from, to}``: replace the matched part of the key."""

    to: Template
    kind: ClassVar[str] = "rename"

    @classmethod
    def parse(cls, index: int, stage: str, spec: dict[str, Any], label: str) -> Rename:
        pattern = compile_regex(spec, "from", label)
        return cls(index, stage, pattern, dict(spec), to=compile_template(spec.get("to"), pattern, label))

    def forward_names(self, key: str, m: re.Match[str]) -> list[str]:
        return [self.apply(self.to, key, m)]

    def forward(self, key, m, current, check=True):
        return [(self.apply(self.to, key, m), current[key])]

    def invert(self, key: str) -> list[Inversion]:
        return self._inverted(key, self.to, self.forward_names)


@dataclass(frozen=True, kw_only=True)
class Split(NameRule):
    """``{kind: split, from, to: [t1, t2, ...], dim, sizes}``: one tensor into several keys (equal chunks
    unless ``sizes``); backwards, the pieces are concatenated again."""

    to_list: tuple[Template, ...]
    dim: int = 0
    sizes: list[int] | None = None
    kind: ClassVar[str] = "split"

    @classmethod
    def parse(cls, index: int, stage: str, spec: dict[str, Any], label: str) -> Split:
        pattern = compile_regex(spec, "from", label)
        targets = spec.get("to")
        if not isinstance(targets, list) or len(targets) < 2:
            raise ConversionError(f"rule {label}: 'to' must list at least two templates")
        to_list = tuple(compile_template(t, pattern, label) for t in targets)
        sizes = spec.get("sizes")
        if sizes is not None and (not isinstance(sizes, list) or len(sizes) != len(targets)):
            raise ConversionError(f"rule {label}: 'sizes' must have one entry per target")
        if sizes is not None:
            int_list(sizes, "sizes", label, 0, MAX_ELEMENTS)
        return cls(
            index,
            stage,
            pattern,
            dict(spec),
            to_list=to_list,
            dim=int_field(spec, "dim", 0, label, -MAX_DIM, MAX_DIM),
            sizes=sizes,
        )

    def forward_names(self, key: str, m: re.Match[str]) -> list[str]:
        return [self.apply(tmpl, key, m) for tmpl in self.to_list]

    def forward(self, key, m, current, check=True):
        tensor = current[key]
        n = len(self.to_list)
        try:
            pieces = torch.split(tensor, self.sizes, self.dim) if self.sizes else torch.chunk(tensor, n, self.dim)
        except (RuntimeError, IndexError) as exc:
            raise ConversionError(f"rule {self.label}: cannot split {key!r}: {exc}") from None
        if len(pieces) != n or (self.sizes is None and tensor.shape[self.dim] % n):
            raise ConversionError(
                f"rule {self.label}: {key!r} dim {self.dim} of size {tensor.shape[self.dim]} does not split into {n}"
            )
        return list(zip(self.forward_names(key, m), pieces))

    def invert(self, key: str) -> list[Inversion]:
        """The pieces are found from the first one's name."""
        return self._inverted(key, self.to_list[0], self.forward_names)

    def unmerge(self, tensors, original):
        return [torch.cat(tensors, self.dim)]


@dataclass(frozen=True, kw_only=True)
class Concat(NameRule):
    """``{kind: concat, from, with: [...], to, dim}``: the matched key and its ``with`` parts into one tensor;
    backwards, split again (by the original parts' sizes when the original is at hand, else equally)."""

    with_list: tuple[Template, ...]
    to: Template
    dim: int = 0
    kind: ClassVar[str] = "concat"

    @classmethod
    def parse(cls, index: int, stage: str, spec: dict[str, Any], label: str) -> Concat:
        pattern = compile_regex(spec, "from", label)
        others = spec.get("with")
        if not isinstance(others, list) or not others:
            raise ConversionError(f"rule {label}: 'with' must list the other parts' templates")
        return cls(
            index,
            stage,
            pattern,
            dict(spec),
            with_list=tuple(compile_template(t, pattern, label) for t in others),
            to=compile_template(spec.get("to"), pattern, label),
            dim=int_field(spec, "dim", 0, label, -MAX_DIM, MAX_DIM),
        )

    def parts(self, key: str, m: re.Match[str]) -> list[str]:
        return [key] + [self.apply(t, key, m) for t in self.with_list]

    def forward_names(self, key: str, m: re.Match[str]) -> list[str]:
        return [self.apply(self.to, key, m)]

    def forward(self, key, m, current, check=True):
        parts = self.parts(key, m)
        try:
            merged = torch.cat([current[k] for k in parts], self.dim)
        except (RuntimeError, IndexError) as exc:
            raise ConversionError(f"rule {self.label}: cannot concat {parts}: {exc}") from None
        return [(self.forward_names(key, m)[0], merged)]

    def invert(self, key: str) -> list[Inversion]:
        return self._inverted(key, self.to, self.forward_names)

    def unmerge(self, tensors, original):
        (merged,) = tensors
        if all(shape is not None for shape in original):
            sizes = [shape[self.dim] for shape in original if shape is not None]
        elif merged.shape[self.dim] % len(original) == 0:
            sizes = [merged.shape[self.dim] // len(original)] * len(original)
        else:
            raise NotInvertible(f"rule {self.label}: the parts' sizes are unknown (give the original as --target)")
        return list(torch.split(merged, sizes, self.dim))


@dataclass(frozen=True)
class Drop(NameRule):
    """``{kind: drop, from, if_zero, hint}``: drop the key (with ``if_zero``, only while it is all zeros).
    Not invertible: the reverse takes the key from the original (``--target``)."""

    if_zero: bool = False
    hint: str = ""
    kind: ClassVar[str] = "drop"

    @classmethod
    def parse(cls, index: int, stage: str, spec: dict[str, Any], label: str) -> Drop:
        pattern = compile_regex(spec, "from", label)
        if not isinstance(spec.get("if_zero", False), bool):
            raise ConversionError(f"rule {label}: 'if_zero' must be true or false, got {spec.get('if_zero')!r}")
        return cls(
            index, stage, pattern, dict(spec), if_zero=spec.get("if_zero", False), hint=str(spec.get("hint", ""))
        )

    def forward_names(self, key: str, m: re.Match[str]) -> list[str]:
        return []

    def forward(self, key, m, current, check=True):
        if check:
            self.check(key, current[key])
        return []

    def check(self, key: str, tensor: torch.Tensor) -> None:
        """With ``if_zero``, stop at a tensor that is not all zeros (the rule's ``hint`` added)."""
        if self.if_zero and bool(tensor.count_nonzero()):
            raise ConversionError(
                f"rule {self.label}: {key!r} is not zero (max abs "
                f"{tensor.abs().max().item():.4g}); dropping it would change the model"
                + (f". {self.hint}" if self.hint else "")
            )


def same_values(a: torch.Tensor, b: torch.Tensor) -> bool:
    """torch.equal, short-cut when both are views of the same memory (aliases restored as shared)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.data_ptr() == b.data_ptr() and a.stride() == b.stride():
        return True
    return torch.equal(a, b)


@dataclass(frozen=True, kw_only=True)
class DropAlias(NameRule):
    """``{kind: drop_alias, from, of}``: drop a key that holds the same values as the kept key ``of`` (a shared
    module listed twice); backwards, the alias is recreated as the very same tensor as its kept key."""

    of: Template
    kind: ClassVar[str] = "drop_alias"

    @classmethod
    def parse(cls, index: int, stage: str, spec: dict[str, Any], label: str) -> DropAlias:
        pattern = compile_regex(spec, "from", label)
        return cls(index, stage, pattern, dict(spec), of=compile_template(spec.get("of"), pattern, label))

    def kept(self, key: str, m: Any) -> str:
        """The kept key ``key`` is an alias of."""
        return self.apply(self.of, key, m)

    def forward_names(self, key: str, m: re.Match[str]) -> list[str]:
        return []

    def forward(self, key, m, current, check=True):
        kept = self.kept(key, m)
        if kept not in current:
            raise ConversionError(f"rule {self.label}: alias {key!r} names kept key {kept!r}, which is absent")
        if check and not same_values(current[kept], current[key]):
            raise ConversionError(
                f"rule {self.label}: alias {key!r} differs from kept key {kept!r}; refusing to drop it"
            )
        return []

    def aliases_of(self, kept: str) -> list[str]:
        """The alias names whose kept key is ``kept``, each checked forwards (greedy first)."""
        return [inv.sources[0] for inv in self._inverted(kept, self.of, lambda src, m: [self.kept(src, m)])]
