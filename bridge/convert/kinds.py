"""The rule kinds, one class each: how a rule reads its YAML, applies itself to a state dict, and runs backwards.

Three roles, as the engine schedules them inside a stage:

* **value** rules (:class:`ClassRows`, :class:`Reshape`, :class:`Transpose`) change a tensor, not its name:
  ``forward(key, tensor)`` and ``reverse(key, tensor, original)``;
* **name** rules (:class:`Rename`, :class:`Split`, :class:`Concat`, :class:`Drop`, :class:`DropAlias`) say
  what a key becomes: ``forward(key, match, current)`` gives the new (name, tensor) pairs (none: dropped);
  backwards ``invert(key)`` names the source key(s) an output key can come from and ``unmerge`` rebuilds
  their tensors;
* **add** rules (:class:`Add`) create keys the source lacks at the end of their stage; backwards they are
  removed again.

What cannot run backwards says so (:class:`~bridge.convert.inverse.NotInvertible`): a dropped key, class
rows the forward left out, a reshape's original shape; ``bridge.convert.reverse`` fills those from the
original checkpoint (``--target``) or reports them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar, Mapping

import torch

from bridge.convert.inverse import InverseTemplate, NotInvertible, invert_template, spell
from bridge.convert.templates import (
    DTYPES,
    MAX_DIM,
    MAX_ELEMENTS,
    Template,
    compile_regex,
    compile_template,
    int_field,
    int_list,
)
from bridge.errors import ConversionError

#: Where a class_rows tensor keeps its background / no-object row: row 0, the last row, or nowhere.
BACKGROUNDS = ("none", "first", "last")
TORCH_DTYPES = {
    "int64": torch.int64,
    "int32": torch.int32,
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,
    "bool": torch.bool,
    "uint8": torch.uint8,
}


@dataclass(frozen=True)
class Inversion:
    """One way an output key (or the outputs of one split) comes from stage-input key(s)."""

    rule: NameRule
    sources: tuple[str, ...]
    outputs: tuple[str, ...]
    #: Literal characters of the template that gave the key: the more of it a rule spells out, the more
    #: specific the rule (``bbox_head.cls_branches.6.`` over ``bbox_head.cls_branches.{n}.``).
    specificity: int


@dataclass(frozen=True)
class Rule:
    """One compiled rule; ``spec`` keeps the original data for reports and provenance."""

    index: int
    stage: str
    pattern: re.Pattern[str] | None
    spec: dict[str, Any]

    kind: ClassVar[str] = ""
    role: ClassVar[str] = ""

    @property
    def label(self) -> str:
        """Short human name of the rule: ``#index kind 'regex'`` (or its ``name:``)."""
        name = self.spec.get("name")
        ident = name or (self.pattern.pattern if self.pattern is not None else self.spec.get("key", ""))
        return f"#{self.index} {self.kind} {ident!r}"

    @property
    def optional(self) -> bool:
        """True when the rule may match nothing without a warning (``optional: true``, e.g. module names only)."""
        return bool(self.spec.get("optional", False))

    def apply(self, template: Template, key: str, m: Any) -> str:
        """Replace the matched part of ``key`` with ``template`` rendered from ``m``."""
        return key[: m.start()] + template.render(m, self.label) + key[m.end() :]

    def match(self, key: str) -> re.Match[str] | None:
        """Return the match of this rule's regex on ``key`` (``re.search`` semantics)."""
        return self.pattern.search(key) if self.pattern is not None else None

    @property
    def regex(self) -> re.Pattern[str]:
        """The rule's ``from`` regex (every kind but a fixed-key ``add`` has one)."""
        if self.pattern is None:
            raise ConversionError(f"rule {self.label}: has no regex")
        return self.pattern

    @classmethod
    def parse(cls, index: int, stage: str, spec: dict[str, Any], label: str) -> Rule:
        """Compile ``spec`` (a mapping whose ``kind`` is this class's); ConversionError naming the rule."""
        return cls(index, stage, compile_regex(spec, "from", label), dict(spec))


# --------------------------------------------------------------------------- name rules


@dataclass(frozen=True)
class NameRule(Rule):
    """A rule that says what a key becomes (renamed, split, merged, dropped)."""

    role: ClassVar[str] = "name"

    def parts(self, key: str, m: re.Match[str]) -> list[str]:
        """The stage-input keys one claim consumes: ``key`` itself (a concat also takes its other parts)."""
        return [key]

    def forward(
        self, key: str, m: re.Match[str], current: Mapping[str, torch.Tensor], check: bool = True
    ) -> list[tuple[str, torch.Tensor]]:
        """The (new name, tensor) pairs ``key`` becomes; none when the rule drops it."""
        raise NotImplementedError

    def forward_names(self, key: str, m: re.Match[str]) -> list[str]:
        """The names ``key`` becomes (no tensors needed)."""
        raise NotImplementedError

    def invert(self, key: str) -> list[Inversion]:
        """Every way the output ``key`` can come from this rule, each checked by running the rule forwards."""
        return []

    def unmerge(self, tensors: list[torch.Tensor], original: list[torch.Size | None]) -> list[torch.Tensor]:
        """The source tensors of one inversion, from its output tensors (``original``: the sources' shapes,
        when the original checkpoint is at hand)."""
        return tensors

    def _inverted(self, key: str, template: Template, outputs_of) -> list[Inversion]:
        """Candidates for the rule's output ``key`` through ``template``: spell the regex backwards, keep the
        sources the rule maps forwards onto ``outputs_of(source)``."""
        inverse = self._inverse(template)
        found = inverse.match(key)
        if found is None:
            return []
        m, groups = found
        literal = sum(len(text) for kind, text, _offset in template.parts if kind == "lit")
        out = []
        try:
            texts = spell(self.regex, groups)
        except NotInvertible as exc:
            raise NotInvertible(f"rule {self.label}: cannot spell the source of {key!r}: {exc}") from None
        for text in texts:
            source = key[: m.start()] + text + key[m.end() :]
            forward = self.match(source)
            if forward is None or self.parts(source, forward)[0] != source:
                continue
            try:
                outputs = outputs_of(source, forward)
            except ConversionError:
                continue
            if key in outputs:
                out.append(Inversion(self, tuple(self.parts(source, forward)), tuple(outputs), literal))
        return out

    @cached_property
    def _inverses(self) -> dict[str, InverseTemplate]:
        return {}

    def _inverse(self, template: Template) -> InverseTemplate:
        if template.source not in self._inverses:
            self._inverses[template.source] = invert_template(template, self.regex)
        return self._inverses[template.source]


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


# --------------------------------------------------------------------------- value rules


@dataclass(frozen=True)
class ValueRule(Rule):
    """A rule that changes a tensor's values or shape, not its name."""

    role: ClassVar[str] = "value"

    def forward(self, key: str, tensor: torch.Tensor) -> torch.Tensor:
        """The transformed tensor (ConversionError naming the rule and key when it does not fit)."""
        raise NotImplementedError

    def reverse(self, key: str, tensor: torch.Tensor, original: torch.Tensor | None) -> torch.Tensor:
        """The tensor before :meth:`forward`; ``original`` is the original's tensor at ``key`` when known."""
        raise NotImplementedError


@dataclass(frozen=True)
class ClassRows(ValueRule):
    """``{kind: class_rows, from, index, dim, background | keep_trailing}``: gather class rows by an index list
    (counting class rows only); the background row(s) stay where they are.  Backwards, the rows go back to
    their places; rows the index left out come from the original, so without one only a reordering inverts."""

    index_list: tuple[int, ...] = ()
    dim: int = 0
    keep_trailing: int = 0
    background: str = "none"
    kind: ClassVar[str] = "class_rows"

    @classmethod
    def parse(cls, index: int, stage: str, spec: dict[str, Any], label: str) -> ClassRows:
        pattern = compile_regex(spec, "from", label)
        rows = spec.get("index")
        if isinstance(rows, str):
            from bridge.coco.coco91 import INDEX_LISTS

            if rows not in INDEX_LISTS:
                raise ConversionError(f"rule {label}: unknown index list {rows!r} (known: {', '.join(INDEX_LISTS)})")
            rows = list(INDEX_LISTS[rows])
        if not isinstance(rows, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) and 0 <= i < MAX_ELEMENTS for i in rows
        ):
            raise ConversionError(f"rule {label}: 'index' must be a list of ints >= 0 or a known list name")
        background = spec.get("background", "none")
        if background not in BACKGROUNDS:
            raise ConversionError(f"rule {label}: 'background' must be one of {', '.join(BACKGROUNDS)}")
        keep_trailing = int_field(spec, "keep_trailing", 0, label, 0, MAX_ELEMENTS)
        if keep_trailing and background != "none":
            raise ConversionError(f"rule {label}: give 'background' or 'keep_trailing', not both")
        return cls(
            index,
            stage,
            pattern,
            dict(spec),
            index_list=tuple(rows),
            dim=int_field(spec, "dim", 0, label, -MAX_DIM, MAX_DIM),
            keep_trailing=keep_trailing,
            background=background,
        )

    @property
    def _lead_trail(self) -> tuple[int, int]:
        return (1 if self.background == "first" else 0), (1 if self.background == "last" else self.keep_trailing)

    def forward(self, key: str, tensor: torch.Tensor) -> torch.Tensor:
        """Indices count class rows only: with ``background: first`` class row ``i`` is tensor row ``i + 1``
        and the background row stays row 0; with ``background: last`` it stays the last row;
        ``keep_trailing: N`` keeps the last N rows after the gathered ones."""
        if tensor.dim() <= self.dim:
            raise ConversionError(f"rule {self.label}: {key!r} has {tensor.dim()} dims, no dim {self.dim}")
        n = tensor.shape[self.dim]
        lead, trail = self._lead_trail
        index = [i + lead for i in self.index_list]
        if index and (max(index) >= n - trail or min(index) < lead):
            raise ConversionError(
                f"rule {self.label}: {key!r} has {n} rows along dim {self.dim}; index needs "
                f"{max(index) + 1 + trail} (background: {self.background})"
            )
        index = list(range(lead)) + index + list(range(n - trail, n))
        return tensor.index_select(self.dim, torch.tensor(index, dtype=torch.long, device=tensor.device))

    def reverse(self, key: str, tensor: torch.Tensor, original: torch.Tensor | None) -> torch.Tensor:
        lead, trail = self._lead_trail
        rows = len(self.index_list)
        if tensor.dim() <= self.dim or tensor.shape[self.dim] != lead + rows + trail:
            raise NotInvertible(
                f"rule {self.label}: {key!r} has {list(tensor.shape)}, not {lead + rows + trail} "
                f"rows along dim {self.dim}"
            )
        permutation = sorted(self.index_list) == list(range(rows))
        if original is None and not permutation:
            raise NotInvertible(
                f"rule {self.label}: {key!r} lost the class rows its index leaves out; "
                "give the original checkpoint as --target to restore them"
            )
        n = lead + rows + trail if original is None else original.shape[self.dim]
        if original is not None and (max(self.index_list, default=-1) + lead >= n - trail):
            raise NotInvertible(f"rule {self.label}: the original {key!r} has {n} rows, too few for the index")
        out = original.to(tensor.dtype).clone() if original is not None else torch.empty_like(tensor)
        places = list(range(lead)) + [i + lead for i in self.index_list] + list(range(n - trail, n))
        out = out.movedim(self.dim, 0)
        out[torch.tensor(places, dtype=torch.long)] = tensor.movedim(self.dim, 0)
        return out.movedim(0, self.dim).contiguous()


@dataclass(frozen=True)
class Reshape(ValueRule):
    """``{kind: reshape, from, shape}``; backwards the original's shape is needed (``--target``)."""

    shape: tuple[int, ...] = ()
    kind: ClassVar[str] = "reshape"

    @classmethod
    def parse(cls, index: int, stage: str, spec: dict[str, Any], label: str) -> Reshape:
        pattern = compile_regex(spec, "from", label)
        shape = int_list(spec.get("shape"), "shape", label, -1, MAX_ELEMENTS)
        return cls(index, stage, pattern, dict(spec), shape=tuple(shape))

    def forward(self, key: str, tensor: torch.Tensor) -> torch.Tensor:
        try:
            return tensor.reshape(self.shape)
        except RuntimeError as exc:
            raise ConversionError(f"rule {self.label}: cannot reshape {key!r} {list(tensor.shape)}: {exc}") from None

    def reverse(self, key: str, tensor: torch.Tensor, original: torch.Tensor | None) -> torch.Tensor:
        if original is None:
            raise NotInvertible(
                f"rule {self.label}: the shape of {key!r} before the reshape is unknown; give the original as --target"
            )
        return tensor.reshape(original.shape)


@dataclass(frozen=True)
class Transpose(ValueRule):
    """``{kind: transpose, from, dims}``: swap two dims (its own reverse)."""

    dims: tuple[int, int] = (0, 1)
    kind: ClassVar[str] = "transpose"

    @classmethod
    def parse(cls, index: int, stage: str, spec: dict[str, Any], label: str) -> Transpose:
        pattern = compile_regex(spec, "from", label)
        dims = int_list(spec.get("dims", [0, 1]), "dims", label, -MAX_DIM, MAX_DIM)
        if len(dims) != 2:
            raise ConversionError(f"rule {label}: 'dims' must be two ints")
        return cls(index, stage, pattern, dict(spec), dims=(dims[0], dims[1]))

    def forward(self, key: str, tensor: torch.Tensor) -> torch.Tensor:
        a, b = self.dims
        if max(a, b) >= tensor.dim():
            raise ConversionError(f"rule {self.label}: {key!r} has {tensor.dim()} dims, cannot swap {a},{b}")
        return tensor.transpose(a, b)

    def reverse(self, key: str, tensor: torch.Tensor, original: torch.Tensor | None) -> torch.Tensor:
        return self.forward(key, tensor).contiguous()


# --------------------------------------------------------------------------- add


@dataclass(frozen=True, kw_only=True)
class Add(Rule):
    """``{kind: add, key | key + to, value, dtype, shape, on}``: create keys the source lacks (for each name
    of the ``on`` pool the regex matches, or one fixed key); backwards, a created key is removed again."""

    to: Template
    value: int | float = 0
    dtype: str = "float32"
    shape: tuple[int, ...] = ()
    on: str = "converted"
    kind: ClassVar[str] = "add"
    role: ClassVar[str] = "add"

    @classmethod
    def parse(cls, index: int, stage: str, spec: dict[str, Any], label: str) -> Add:
        if "key" in spec and "to" in spec:
            pattern: re.Pattern[str] | None = compile_regex(spec, "key", label)
            to = compile_template(spec["to"], pattern, label)
        elif "key" in spec:
            pattern, to = None, compile_template(str(spec["key"]).replace("{", "{{").replace("}", "}}"), None, label)
        else:
            raise ConversionError(f"rule {label}: needs 'key' (fixed name, or regex with 'to')")
        dtype = str(spec.get("dtype", "float32"))
        if dtype not in DTYPES:
            raise ConversionError(f"rule {label}: unknown dtype {dtype!r}")
        on = str(spec.get("on", "converted"))
        if on not in ("converted", "target", "source"):
            raise ConversionError(f"rule {label}: 'on' must be converted, target or source")
        value = spec.get("value", 0)
        if not isinstance(value, (int, float)) or (isinstance(value, int) and not -(2**63) <= value < 2**64):
            raise ConversionError(f"rule {label}: 'value' must be a number, got {value!r}")
        shape = int_list(spec.get("shape", []), "shape", label, 0, MAX_ELEMENTS)
        if len(shape) > MAX_DIM or math.prod(shape) > MAX_ELEMENTS:
            raise ConversionError(f"rule {label}: 'shape' {shape} is too large")
        return cls(index, stage, pattern, dict(spec), to=to, value=value, dtype=dtype, shape=tuple(shape), on=on)

    def names(self, pools: Mapping[str, list[str]]) -> list[str]:
        """The keys the rule names: its fixed key, or its template applied to the keys of its ``on`` pool."""
        if self.pattern is None:
            return [self.to.render(None, self.label)]
        return [self.apply(self.to, k, m) for k in pools[self.on] if (m := self.match(k))]

    def make(self, name: str) -> torch.Tensor:
        """The tensor the rule creates for ``name``."""
        try:
            return torch.full(self.shape, self.value, dtype=TORCH_DTYPES[self.dtype])
        except (RuntimeError, OverflowError, TypeError) as exc:
            raise ConversionError(f"rule {self.label}: cannot make {name!r}: {exc}") from None

    def made(self, tensor: torch.Tensor) -> bool:
        """True when ``tensor`` is exactly what the rule creates (so removing it loses nothing)."""
        return (
            tuple(tensor.shape) == self.shape
            and tensor.dtype == TORCH_DTYPES[self.dtype]
            and bool((tensor == self.value).all())
        )


KINDS: dict[str, type[Rule]] = {
    cls.kind: cls for cls in (Rename, Drop, DropAlias, Split, Concat, ClassRows, Reshape, Transpose, Add)
}
