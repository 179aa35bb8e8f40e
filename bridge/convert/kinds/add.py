"""Add rules: keys created at the end of their stage (a BatchNorm's ``num_batches_tracked``), removed backwards."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

import torch

from bridge.convert.kinds.base import Rule
from bridge.convert.templates import (
    DTYPES,
    MAX_DIM,
    MAX_ELEMENTS,
    Template,
    compile_regex,
    compile_template,
    int_list,
)
from bridge.errors import ConversionError

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
