"""What every rule kind shares: the rule, the name-rule and value-rule roles, and an inversion step."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar, Mapping

import torch

from bridge.convert.inverse import InverseTemplate, NotInvertible, invert_template, spell
from bridge.convert.templates import (
    Template,
    compile_regex,
)
from bridge.errors import ConversionError


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
